"""The privacy officer's review: release and portal reports, approvals, withdrawal.

* :mod:`opencity.review.collect` reads what a run directory holds about each release
  (catalog entries, products, privacy.json, k-anonymity report, GX results, manifests, the
  budget ledger, the approval and withdrawal records) into plain dicts;
* :mod:`opencity.review.report` turns them into the release report (one per partition) and the
  portal report (one per run directory), as JSON (validated against the schemas in
  ``opencity/review/schemas/``) and as offline HTML (inline CSS and SVG, no script, no
  third-party host);
* :mod:`opencity.review.approvals` is the approval gate's state: which policy version of
  which dataset a privacy officer approved or rejected, who, when and why;
* :mod:`opencity.review.airflow` builds the gate in a DAG (Airflow's ``ApprovalOperator``);
* :mod:`opencity.review.withdraw` takes a published partition back off the portal.
"""
