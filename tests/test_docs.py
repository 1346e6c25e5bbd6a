"""Docs checked by tests: every command has help, every policy word is documented."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from vigie.policy.load import COLUMN_KEYS, DETECTORS, GENERALIZE_HOWS, TABLE_KEYS, TOP_KEYS
from vigie.policy.model import ACTIONS, DATA_CLASSES

DOCS = Path(__file__).resolve().parent.parent / "docs"
COMMANDS = [
    ["fleet", "generate"], ["fleet", "tick"], ["fleet", "show"], ["fleet", "checksum"],
    ["policy", "check"], ["policy", "suggest"], ["keys", "init"], ["sync"], ["demo"],
    ["kpi", "list"], ["kpi", "show"], ["kpi", "chart"], ["kpi", "refresh"], ["store", "verify"],
    ["serve"], ["access", "create"], ["access", "list"], ["access", "revoke"], ["audit", "verify"],
    ["guard", "check"], ["guard", "run"], ["guard", "status"], ["guard", "approve"],
    ["incident", "report"], ["incident", "notify-list"], ["incident", "rotate"],
    ["incident", "drill"],
]  # fmt: skip


def test_every_command_has_help():
    """In one process (typer's runner): one interpreter start per command took 50 s."""
    from typer.testing import CliRunner

    from vigie.cli.app import app

    runner = CliRunner()
    for cmd in COMMANDS:
        res = runner.invoke(app, [*cmd, "--help"], env={"COLUMNS": "120"})
        assert res.exit_code == 0 and "Usage:" in res.output, (cmd, res.output)
        assert len(res.output.splitlines()) > 3, cmd


def test_the_cli_itself_answers_help():
    res = subprocess.run(
        [sys.executable, "-c", "from vigie.cli.app import main; main()", "--help"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert res.returncode == 0 and "incident" in res.stdout and "guard" in res.stdout


def test_every_policy_word_is_documented():
    text = (DOCS / "policy.md").read_text()
    code = " ".join(re.findall(r"```.*?```|`[^`]+`", text, flags=re.S))  # code spans and blocks
    words = [*DATA_CLASSES, *ACTIONS, *DETECTORS, *GENERALIZE_HOWS, *TOP_KEYS, *TABLE_KEYS]
    words += [k for k in COLUMN_KEYS if k != "note"]
    missing = [w for w in words if not re.search(rf"\b{w}\b", code)]
    assert not missing, f"undocumented in docs/policy.md: {missing}"


def test_readme_commands_are_the_makefile_targets():
    root = DOCS.parent
    readme = (root / "README.md").read_text().splitlines()
    assert readme[3].startswith("make demo") and readme[4].startswith("make test")
    assert "make test" in (root / ".ci" / "run").read_text()


def test_every_shipped_kpi_is_documented():
    from vigie.kpi.load import load_metrics

    text = (DOCS / "kpi.md").read_text()
    assert all(f"`{name}`" in text for name in load_metrics().kpis)


def test_every_probe_kind_and_guard_setting_is_documented():
    from vigie.guard.config import ALIASES, KINDS

    text = (DOCS / "guard.md").read_text()
    words = [*KINDS, *ALIASES, "every", "local", "probes", "alerts_file", "targets", "users"]
    missing = [w for w in words if f"`{w}`" not in text and f"{w}:" not in text]
    assert not missing, f"undocumented in docs/guard.md: {missing}"
