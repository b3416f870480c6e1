"""Configuration: valid testdata accepted, every invalid config rejected with its YAML path, env substitution,
several --config files merged."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from collector.cli import main
from collector.component import ComponentID, Kind
from collector.config import load, merge, parse_duration, substitute_env
from collector.errors import ConfigError
from tests.helpers import ROOT

TESTDATA = Path(__file__).parent / "testdata"
VALID = sorted((TESTDATA / "valid").glob("*.yaml"))
INVALID = yaml.safe_load((TESTDATA / "invalid_configs.yaml").read_text())

ENV = {**os.environ, "PYTHONPATH": str(ROOT)}  # this checkout's code, not an install elsewhere


@pytest.mark.parametrize("path", VALID, ids=lambda p: p.name)
def test_valid_configs(path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", "--config", str(path)]) == 0
    assert "configuration is valid" in capsys.readouterr().out


def test_validate_cli_exit_codes(tmp_path: Path) -> None:
    """The real command: exit 0 for a valid file, 1 with the errors on stderr for an invalid one."""
    ok = subprocess.run([sys.executable, "-m", "collector", "validate", "--config", str(VALID[0])],
                        capture_output=True, text=True, cwd=ROOT, env=ENV)
    assert ok.returncode == 0, ok.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(INVALID[0]["config"]))
    r = subprocess.run([sys.executable, "-m", "collector", "validate", "--config", str(bad)],
                       capture_output=True, text=True, cwd=ROOT, env=ENV)
    assert r.returncode == 1
    assert INVALID[0]["expect"][0] in r.stderr


def test_default_pipelines_yaml_is_valid(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", "--config", str(ROOT / "pipelines.yaml")]) == 0


@pytest.mark.parametrize("case", INVALID, ids=lambda c: c["name"])
def test_invalid_configs(case: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(case["config"]))
    assert main(["validate", "--config", str(path)]) == 1
    err = capsys.readouterr().err
    for expected in case["expect"]:
        assert expected in err, f"missing {expected!r} in:\n{err}"


def test_all_errors_at_once(tmp_path: Path) -> None:
    """Problems in several sections are all reported in one go."""
    cfg = {"receivers": {"otlp": {"protocols": {"grpc": {"bogus": 1}}}},
           "exporters": {"file": {}, "nope": {}},
           "service": {"pipelines": {"traces": {"receivers": ["otlp"], "exporters": ["file", "missing"]}}}}
    p = tmp_path / "c.yaml"
    p.write_text(yaml.safe_dump(cfg))
    with pytest.raises(ConfigError) as ei:
        load([str(p)])
    errs = ei.value.errors
    assert any(e.startswith("receivers::otlp::protocols::grpc::bogus: unknown key") for e in errs)
    assert any(e.startswith("exporters::file::path: field required") for e in errs)
    assert any(e.startswith('exporters::nope: unknown type "nope"') for e in errs)
    assert any('references exporter "missing" which is not configured' in e for e in errs)


# --- env substitution -----------------------------------------------------------------------------------
def test_env_forms(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLMC_HOST", "gateway")
    monkeypatch.setenv("LLMC_PORT", "4317")
    monkeypatch.setenv("LLMC_EMPTY", "")
    monkeypatch.delenv("LLMC_UNSET", raising=False)
    warnings: list[str] = []
    doc = {
        "a": "${env:LLMC_HOST}:${LLMC_PORT}",
        "port": "${env:LLMC_PORT}",
        "dflt": "${env:LLMC_UNSET:-fallback}",
        "empty_dflt": "${env:LLMC_EMPTY:-used}",
        "dollar": "price $$5 and $${env:LLMC_HOST}",
        "list": ["${LLMC_HOST}", 3],
        "nested": {"x": "${env:LLMC_UNSET}"},
    }
    out = substitute_env(doc, "", warnings)
    assert out["a"] == "gateway:4317"
    assert out["port"] == 4317  # a whole-string reference takes the value's YAML type
    assert out["dflt"] == "fallback"
    assert out["empty_dflt"] == "used"
    assert out["dollar"] == "price $5 and ${env:LLMC_HOST}"
    assert out["list"] == ["gateway", 3]
    assert out["nested"]["x"] == ""
    assert warnings == ["nested::x: environment variable LLMC_UNSET is not set; using an empty value"]


def test_env_typed_values_keep_their_spelling(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A whole-value reference takes its YAML type only when the text is that value's plain spelling: a
    secret made of digits ("0123", YAML 1.1 octal) is never changed, and numbers fit string fields."""
    for k, v in {"LLMC_T1": "0123", "LLMC_T2": "1:30", "LLMC_T3": "12345", "LLMC_T4": "true", "LLMC_T5": "yes",
                 "LLMC_T6": "2.5"}.items():
        monkeypatch.setenv(k, v)
    out = substitute_env({f"k{i}": f"${{env:LLMC_T{i}}}" for i in range(1, 7)}, "", [])
    assert out == {"k1": "0123", "k2": "1:30", "k3": 12345, "k4": True, "k5": "yes", "k6": 2.5}
    p = tmp_path / "c.yaml"
    p.write_text("""
receivers: {otlp: {protocols: {grpc: {}}}}
exporters: {otlp: {endpoint: "a:1", headers: {x-api-key: "${env:LLMC_T3}", x-other: "${env:LLMC_T1}"}}}
service: {pipelines: {traces: {receivers: [otlp], exporters: [otlp]}}}
""")
    cfg = load([str(p)])
    assert cfg.get(Kind.EXPORTER, ComponentID("otlp")).config.headers == {"x-api-key": "12345", "x-other": "0123"}


def test_env_in_config_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                            capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("LLMC_ENDPOINT", "collector.internal:4317")
    monkeypatch.delenv("LLMC_MISSING_TOKEN", raising=False)
    p = tmp_path / "c.yaml"
    p.write_text("""
receivers: {otlp: {protocols: {grpc: {endpoint: "${env:LLMC_GRPC:-127.0.0.1:5317}"}}}}
exporters:
  otlp:
    endpoint: ${env:LLMC_ENDPOINT}
    headers: {authorization: "Bearer ${env:LLMC_MISSING_TOKEN}"}
service: {pipelines: {traces: {receivers: [otlp], exporters: [otlp]}}}
""")
    cfg = load([str(p)])
    exp = cfg.get(Kind.EXPORTER, ComponentID("otlp")).config
    assert exp.endpoint == "collector.internal:4317"
    assert exp.headers == {"authorization": "Bearer "}
    assert cfg.get(Kind.RECEIVER, ComponentID("otlp")).config.protocols.grpc.endpoint == "127.0.0.1:5317"
    assert main(["validate", "--config", str(p)]) == 0
    err = capsys.readouterr().err
    assert "warning:" in err and "LLMC_MISSING_TOKEN" in err and "is not set" in err


# --- merging --------------------------------------------------------------------------------------------
def test_merge_rules() -> None:
    base = {"a": {"b": 1, "c": [1, 2]}, "d": 1}
    over = {"a": {"c": [3], "e": 2}}
    assert merge(base, over) == {"a": {"b": 1, "c": [3], "e": 2}, "d": 1}


def test_several_config_files(tmp_path: Path) -> None:
    base = tmp_path / "base.yaml"
    base.write_text("""
receivers: {otlp: {protocols: {grpc: {endpoint: "127.0.0.1:4317"}}}}
exporters:
  debug: {verbosity: basic}
  file: {path: /tmp/a.jsonl}
service: {pipelines: {traces: {receivers: [otlp], exporters: [debug, file]}}}
""")
    over = tmp_path / "prod.yaml"
    over.write_text("""
receivers: {otlp: {protocols: {http: {endpoint: "127.0.0.1:4318"}}}}
exporters: {debug: {verbosity: detailed}}
service: {pipelines: {traces: {exporters: [debug]}}}
""")
    cfg = load([str(base), str(over)])
    rec = cfg.get(Kind.RECEIVER, ComponentID("otlp")).config
    assert rec.protocols.grpc is not None and rec.protocols.http is not None  # maps merge
    assert cfg.get(Kind.EXPORTER, ComponentID("debug")).config.verbosity == "detailed"  # later wins
    assert cfg.service.pipelines["traces"].exporters == ["debug"]  # lists replace
    assert cfg.service.pipelines["traces"].receivers == ["otlp"]


def test_unreadable_and_bad_yaml(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", "--config", str(tmp_path / "missing.yaml")]) == 1
    assert "cannot read config" in capsys.readouterr().err
    bad = tmp_path / "bad.yaml"
    bad.write_text("receivers: [unclosed\n")
    assert main(["validate", "--config", str(bad)]) == 1
    assert "invalid YAML" in capsys.readouterr().err


@pytest.mark.parametrize(("text", "seconds"), [("5s", 5.0), ("200ms", 0.2), ("1m30s", 90.0), (3, 3.0),
                                               ("1h", 3600.0), ("1.5", 1.5)])
def test_durations(text: Any, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)
