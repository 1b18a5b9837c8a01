"""``opencity kpi``: check the KPI registry, compute a month's KPIs, render the dashboard.

    opencity kpi check [--registry FILE]
        validate the registry and list the KPIs, their dimensions and privacy treatment
    opencity kpi run --run-dir DIR --month YYYY-MM [--raw-dir RAW] [--registry FILE]
        the whole monthly KPI pipeline without Airflow (ingest, DP compute with the budget
        ledger, dashboard, commit, publish to the run's local catalog, manifest)
    opencity kpi dashboard --run-dir DIR --month YYYY-MM [--out FILE.html]
        re-render the dashboard of a computed month (from outputs/opencity-kpis/)
"""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime
from pathlib import Path

from opencity.errors import ConfigError


def _month(text: str) -> datetime:
    try:
        return datetime.strptime(text, "%Y-%m").replace(tzinfo=UTC)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a month as YYYY-MM, got {text!r}") from None


def _next_month(start: datetime) -> datetime:
    return start.replace(year=start.year + start.month // 12, month=start.month % 12 + 1)


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "kpi", help="smart-city KPIs (ITU U4SSC) with differential privacy and a dashboard",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="kpi_command", metavar="ACTION", required=True)
    c = sub.add_parser("check", help="validate the KPI registry and list its KPIs")
    c.add_argument("--registry", type=Path, help="registry YAML (default: the packaged one)")
    c.set_defaults(func=_check)
    r = sub.add_parser("run", help="compute one month's KPIs and dashboard without Airflow")
    r.add_argument("--run-dir", required=True, type=Path, help="run directory (outputs, "
                   "catalog go here; the budget ledger is the portal's, $OPENCITY_STATE_URL)")
    r.add_argument("--month", required=True, type=_month, help="the month, YYYY-MM")
    r.add_argument("--raw-dir", type=Path, help="raw landing area (default RUN_DIR/raw)")
    r.add_argument("--registry", type=Path, help="registry YAML (default: the packaged one)")
    r.set_defaults(func=_run)
    d = sub.add_parser("dashboard", help="re-render a computed month's dashboard")
    d.add_argument("--run-dir", required=True, type=Path)
    d.add_argument("--month", required=True, type=_month)
    d.add_argument("--out", type=Path, help="output HTML (default: next to the KPI table)")
    d.add_argument("--registry", type=Path)
    d.set_defaults(func=_dashboard)


def _check(args: argparse.Namespace) -> int:
    from kpi.registry import load_registry
    from opencity.pipelines.kpi import KPI_SOURCES

    reg = load_registry(args.registry, sources=KPI_SOURCES)
    for k in reg.kpis:
        priv = k.privacy.treatment
        if priv == "dp":
            eps = reg.privacy_units[k.privacy.unit].epsilon * k.privacy.epsilon_share
            priv = f"dp ({k.privacy.unit}, epsilon {eps:g})"
        print(f"{k.code:<18} {k.fgssc_dimension}  {k.name:<45} {priv}  [{k.code_status}]")
    dims = sorted({k.fgssc_dimension for k in reg.kpis})
    print(f"\n{len(reg.kpis)} KPIs in {len(dims)} FG-SSC dimensions ({', '.join(dims)}); "
          f"epsilon per unit per month: "
          + ", ".join(f"{u} {e:g}" for u, e in reg.spend_by_unit().items()))
    return 0


def _run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from opencity.pipelines import kpi as p
    from opencity.settings import Settings

    settings = Settings.resolve({"run_dir": str(args.run_dir),
                                 "raw_dir": str(args.raw_dir) if args.raw_dir else None})
    from privacy.approval import ApprovalStore
    from privacy.policy import load_policy

    # No approval gate in this command: the policy version must be approved already.
    ApprovalStore(settings.state_url).require_approved(load_policy(), p.DATASET)
    start = args.month
    end = _next_month(start)
    registry = str(args.registry) if args.registry else None
    steps = tqdm(total=6, desc=f"KPIs {start:%Y-%m}", file=sys.stderr, unit="step")
    ingested = p.ingest(settings, start, end)
    steps.update()
    staged = p.compute(settings, ingested, start, end, registry_path=registry)
    steps.update()
    p.dashboard(settings, staged, start, registry_path=registry)
    steps.update()
    committed = p.commit_partition(settings, staged, start)
    steps.update()
    run_id = f"cli__{start:%Y-%m}"
    published = p.publish(settings, committed, staged, start, end, run_id, ingested)
    steps.update()
    p.manifest(settings, "opencity_kpi", run_id, start, end, ingested, staged, committed,
               published)
    steps.update()
    steps.close()
    print(f"{staged['rows']} KPI rows, {staged['kpi_codes']} KPIs, methods {staged['methods']}")
    print(f"outputs   {committed['output_dir']}")
    print(f"dashboard {Path(committed['output_dir']) / 'dashboard.html'}")
    return 0


def _dashboard(args: argparse.Namespace) -> int:
    import pyarrow.parquet as pq

    from kpi.dashboard import render_dashboard
    from kpi.io import read_kpi_history
    from kpi.registry import load_registry
    from opencity.pipelines.kpi import DATASET, KPI_SOURCES
    from opencity.settings import Settings, partition_name

    settings = Settings.resolve({"run_dir": str(args.run_dir)})
    part = settings.layout.output(DATASET, args.month)
    table_path = part / "kpis.parquet"
    if not table_path.is_file():
        raise ConfigError(f"no KPI table for {args.month:%Y-%m} at {table_path}; run "
                          "'opencity kpi run' (or the opencity_kpi DAG) for that month first")
    history = read_kpi_history(part.parent, before_partition=partition_name(args.month))
    html = render_dashboard(pq.read_table(table_path), history, load_registry(args.registry, sources=KPI_SOURCES),
                            settings.city_name)
    from opencity.io import write_text_atomic

    out = args.out or part / "dashboard.html"
    # next to the KPI table (outputs/: restricted), or where the user asked (the umask decides)
    write_text_atomic(html, out, restricted=args.out is None)
    print(out)
    return 0
