"""Great Expectations (GX Core 1.x) suites that gate every publication.

Wire a DAG in one line per table (inside the task body, before commit/publish)::

    from expectations.gate import validate_or_raise

    validate_or_raise(DATASET, path_or_table, context={...},
                      reports_dir=settings.layout.reports(DATASET, start))

It raises :class:`opencity.errors.DataQualityError` (failing expectations, column, masked
examples) when the suite fails, so the task fails and nothing downstream publishes; it always
writes ``<suite>.json`` (masked GX results), ``<suite>.summary.json`` and offline GX Data Docs
``data_docs/<suite>.html`` + ``data_docs/index.html`` into ``reports_dir``; it returns the
summary dict (put it in the manifest).

Context for each kind of table (keys of ``context``; see expectations.gate for all):

* clean source partition (suites in ``SUITES``: service_requests, cdr, meter_readings, ...)::

      {"interval": (start, end), "districts": districts_table, "towers": towers_table,
       "bbox": "districts", "previous_partition": clean_dir, "quarantine_dir": qdir}

  Rows failing row-level expectations (coordinates outside the city) move to
  ``qdir/quarantine-gx.parquet`` (reason = expectation); add ``summary["rows_quarantined"]``
  to your quarantined count and subtract it from the clean count.
* k-anonymous microdata (privacy.kanon)::

      {"privacy": {"kind": "microdata", "quasi_identifiers": [...], "k": 5}}

* DP aggregates (privacy.dp / privacy.mobility; one call per product file)::

      {"privacy": {"kind": "dp", "count_columns": ["value"],
                   "threshold": selection_threshold_or_None,
                   "statement": out_dir / "privacy.json",
                   "ledger": ledger, "ledger_dataset": "opencity-cdr-mobility-daily",
                   "partition": "dt=2026-10-05", "release_id": "daily"},
       "min_rows": 0}

  or :func:`expectations.gate.validate_dp_release` for a whole privacy.mobility release dir.
* small-count suppressed aggregates (KPI tables)::

      {"privacy": {"kind": "suppressed", "count_columns": ["requests"],
                   "threshold": settings.suppression_k}}

Modules: ``core`` (SuiteContext, PrivacyChecks, shared builders), ``privacy`` (custom
privacy expectations), one module per dataset (``service_requests``, ``cdr``, ``meters``,
``transit``, ``waste``, ``reference``), ``products`` (generic product suite), ``gate``
(the API above) and ``cli`` (``opencity validate``). Importing this package does not import
GX (it takes seconds); the submodules do.
"""
