"""k-anonymity release of microdata (issue 3): ARX-compatible, vectorized, optimal.

Typed API (used by the DAGs, e.g. the 311 microdata release)::

    from privacy.kanon import KAnonymity, LDiversity, TCloseness, Hierarchy, anonymize

    h = Hierarchy.from_csv("age.csv", sep=";")          # ARX hierarchy CSV
    age = Hierarchy.intervals(0, 120, widths=(5, 10, 20))  # builders: intervals,
    week = Hierarchy.timestamps(start, end, ("day", "week", "month"))  # timestamps,
    district = Hierarchy.from_yaml("districts.yaml")      # category trees, flat,
    cell = Hierarchy.geo_grid(districts_table, cell_deg=0.01)  # lat/lon grid, masking
    cfg = KAnonymity(k=5, quasi_identifiers=("age", "sex"), max_suppression=0.04)
    result = anonymize(table, {"age": h, "sex": Hierarchy.flat(["F", "M"])}, model=cfg,
                       metric="nu-entropy", l_diversity=None, t_closeness=None)
    result.table           # pyarrow.Table: QIs generalized; suppressed records have all
                           # QIs '*' (ARX) or are dropped with suppression="remove"
    result.generalization  # {qi: level}, 0 = original value
    result.report          # dict, written as REPORT.json by the CLI

``anonymize`` raises ``opencity.errors.NotAchievableError`` when no generalization
satisfies the models within the suppression limit; bad input raises ``ConfigError`` or
``DataQualityError`` naming the column and value.

Semantics follow ARX (https://arx.deidentifier.org): full-domain generalization, global
optimum over the whole lattice, records of violating classes suppressed while their
number is <= floor(limit x rows), metrics as ARX's non-monotonic defaults:
nu-entropy = MetricMDNUNMEntropy (sum), loss = MetricMDNMLoss (geometric mean),
discernibility = MetricSDNMDiscernability, aecs = MetricSDAECS, precision =
MetricMDNMPrecision (arithmetic mean), all with gs-factor 0.5 and equal weights.

REPORT.json keys: achievable, k, suppression_limit, metric, quasi_identifiers,
hierarchy_heights, privacy_models, generalization, rows_in, rows_out, suppression,
suppressed_records, suppressed_share, information_loss (all five metrics), risk
(prosecutor/journalist/marketer, sample_uniques, threshold, input), classes (count,
min_size, max_size, mean_size, histogram), search (lattice statistics); with a privacy-unit
column (``KAnonymity(..., unit="pid")``: k and l count distinct persons, see
``privacy.kanon.persons``) also persons (classes, persons, min_persons,
classes_below_k_persons, classes_single_person, max_person_share,
classes_k_records_of_one_person, prosecutor_max, prosecutor_average) and risk.person.
"""

from privacy.kanon.anonymize import Result, anonymize, evaluate_node
from privacy.kanon.hierarchy import Hierarchy
from privacy.kanon.lattice import METRICS
from privacy.kanon.models import KAnonymity, LDiversity, TCloseness

__all__ = [
    "METRICS",
    "Hierarchy",
    "KAnonymity",
    "LDiversity",
    "Result",
    "TCloseness",
    "anonymize",
    "evaluate_node",
]
