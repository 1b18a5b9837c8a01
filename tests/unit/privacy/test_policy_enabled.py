"""``enabled: false`` turns a dataset of the release policy off (issue 21 item 6)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from opencity.errors import ConfigError
from privacy.policy import load_policy

POLICY = Path(__file__).resolve().parents[3] / "privacy" / "policy.yaml"
MICRODATA = "opencity-311-requests-microdata"


def _write(tmp_path, value):
    doc = yaml.safe_load(POLICY.read_text())
    if value is not None:
        doc["datasets"][MICRODATA]["enabled"] = value
    path = tmp_path / "policy.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def test_enabled_defaults_to_true_and_can_be_turned_off(tmp_path):
    assert load_policy(_write(tmp_path, None)).dataset(MICRODATA).enabled is True
    off = load_policy(_write(tmp_path, False))
    assert off.dataset(MICRODATA).enabled is False
    assert off.hash != load_policy(_write(tmp_path, None)).hash  # a new policy version


@pytest.mark.parametrize("bad", ["no", 0, "false"])
def test_enabled_must_be_a_boolean(tmp_path, bad):
    with pytest.raises(ConfigError, match=f"datasets.{MICRODATA}.enabled must be true or false"):
        load_policy(_write(tmp_path, bad))
