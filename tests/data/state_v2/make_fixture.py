"""Make a state DB with the state code of main (run with PYTHONPATH=<main checkout>)."""
import sys
from datetime import date
from pathlib import Path

out = Path(sys.argv[1])
out.unlink(missing_ok=True)
url = str(out)
from opencity.registry import Registry
from opencity.review.approvals import ReviewStore
from opencity.review.testing import approve_policy, throwaway_key_path
from privacy.dp.ledger import Ledger
from privacy.dp.params import DPBudget

approve_policy(url)
led = Ledger(url)
ds = "opencity-cdr-mobility-daily"
led.spend(ds, "dt=2026-10-05", "default", date(2026, 10, 5), {"subscriber": DPBudget(0.5, 0.0)},
          {"x": 1}, {"a.parquet": b"PAR1"})
led.spend(ds, "dt=2026-10-06", "default", date(2026, 10, 6), {"subscriber": DPBudget(0.25, 0.0)})
reg = Registry(url)
reg.record(ds, "dt=2026-10-05", {"spend": {"subscriber": {"epsilon": 0.5, "delta": 0.0}}},
           {"a.parquet": "0" * 64}, {"epsilon": 0.5})
reg.record_decision(ds, "dt=2026-10-05", "approved", "tester", "ok", {"n": 1})
reg.withdraw(ds, "dt=2026-10-05", "tester", "a test withdrawal")
rs = ReviewStore(url)
rs.request(ds, "h" * 64, "dt=2026-10-06", dag_id="d", run_id="r", parameters={"k": 1})
rs.record_pass(ds, "dt=2026-10-05", "h" * 64, {"k": 1}, "approved policy")
rs.withdraw(ds, "dt=2026-10-05", "a test withdrawal", by="tester", target="local",
            resources=["a.parquet"])
throwaway_key_path(url).unlink(missing_ok=True)
print("ok", out)
