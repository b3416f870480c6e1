"""testdata/processors_b_config.yaml validates; every entry of processors_b_invalid.yaml fails with its path."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from collector.config import load, validate
from collector.errors import ConfigError

DATA = Path(__file__).parent / "testdata"
INVALID = yaml.safe_load((DATA / "processors_b_invalid.yaml").read_text())


def test_valid_config() -> None:
    cfg = load([str(DATA / "processors_b_config.yaml")])
    assert "traces/acme" in cfg.service.pipelines


@pytest.mark.parametrize("case", INVALID, ids=[c["error"][:60] for c in INVALID])
def test_invalid_config(case: dict[str, Any]) -> None:
    doc = copy.deepcopy(yaml.safe_load((DATA / "processors_b_config.yaml").read_text()))
    for section in ("processors", "connectors"):
        for name, body in (case.get(section) or {}).items():
            doc[section][name] = body
    with pytest.raises(ConfigError) as ei:
        validate(doc)
    assert case["error"] in str(ei.value), str(ei.value)
