"""The README stays true: its component reference matches the config models, its quick start has exactly two
set-up commands, and CI runs the same test command as the README."""

from __future__ import annotations

import re
import subprocess
import sys

from tests.helpers import ROOT


def test_reference_is_current() -> None:
    r = subprocess.run([sys.executable, str(ROOT / "scripts/gen_reference.py"), "--check"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_quick_start_and_ci_agree() -> None:
    readme = (ROOT / "README.md").read_text()
    quick = readme.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```bash\n(.*?)```", quick, re.DOTALL)
    assert block is not None
    commands = [line for line in block.group(1).splitlines() if line.strip() and not line.startswith("#")]
    assert len(commands) == 2, commands
    assert "llm-collector run --config pipelines.yaml" in commands[0]
    assert commands[1] == "bash scripts/test.sh"
    ci = (ROOT / ".ci/run").read_text()
    assert "bash scripts/test.sh" in ci


def test_every_component_is_in_the_reference() -> None:
    from collector.component import Registry

    readme = (ROOT / "README.md").read_text()
    # a fresh registry: only the shipped components, not the test-only ones other tests register
    for kind, factories in Registry().all().items():
        for name in factories:
            assert f"#### `{name}`" in readme, f"{kind.value} {name} missing from README"
