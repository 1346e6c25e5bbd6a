"""The command line: exact, actionable errors and no traceback for a user's mistake."""

from __future__ import annotations

import subprocess
import sys


def vigie(*args: str, cwd=None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", "from vigie.cli.app import main; main()", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=300,
    )


def test_unknown_engine_is_a_clear_error():
    res = vigie("fleet", "generate", "--to", "oracle://x/y")
    assert res.returncode == 2
    assert "Error: Unknown database engine 'oracle' in DSN 'oracle://x/y'." in res.stderr
    assert "Traceback" not in res.stderr + res.stdout


def test_unreachable_server_is_a_clear_error():
    res = vigie("fleet", "generate", "--to", "postgresql://postgres@127.0.0.1:1/none")
    assert res.returncode == 3
    assert "Cannot connect to PostgreSQL at postgresql://postgres@127.0.0.1:1/none" in res.stderr
    assert "Is the server running" in res.stderr
    assert "Traceback" not in res.stderr


def test_missing_sqlite_file_for_tick(tmp_path):
    res = vigie("fleet", "tick", "--to", f"sqlite:///{tmp_path}/nope.db")
    assert res.returncode == 3
    assert "nope.db does not exist" in res.stderr


def test_nonsense_numbers(tmp_path):
    res = vigie("fleet", "generate", "--to", f"sqlite:///{tmp_path}/p.db", "--users", "0")
    assert res.returncode == 2
    assert "Error: --users must be between 1 and 50,000,000, got 0." in res.stderr
    assert not (tmp_path / "p.db").exists()


def test_generate_then_refuse_then_replace(tmp_path):
    target = f"sqlite:///{tmp_path}/p.db"
    ok = vigie("fleet", "generate", "--to", target, "--users", "40", "--days", "1")
    assert ok.returncode == 0, ok.stderr
    assert "Production fleet" in ok.stdout and "password_hash" in ok.stdout
    again = vigie("fleet", "generate", "--to", target, "--users", "40")
    assert again.returncode == 1
    assert "already holds 8 table(s)" in again.stderr and "--replace" in again.stderr
    replaced = vigie("fleet", "generate", "--to", target, "--users", "30", "--replace")
    assert replaced.returncode == 0, replaced.stderr
