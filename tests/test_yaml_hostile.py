"""Hostile or careless YAML in a policy or metrics file: a clear error with file, line and
column, never a traceback, a hang or a silently different meaning."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from conftest import EXAMPLE_POLICY
from vigie.errors import PolicyError
from vigie.kpi.load import load_metrics
from vigie.policy.load import load_policy

LAUGHS = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 9)}]\n" for i in range(8)
)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (LAUGHS, "more than 32 alias uses (*name)."),
        ("version: 1\ntables: &t {users: {columns: {id: *t}}}\n",
         "an alias refers to the value that contains it."),
        ("version: 1\ntables: !!python/object/apply:os.system ['touch /tmp/vigie-pwned']\n",
         "tag 'tag:yaml.org,2002:python/object/apply:os.system' is not allowed."),
        ("version: 1\ntables:\n  users:\n    columns:\n      id: !!binary aGVsbG8=\n",
         "tag 'tag:yaml.org,2002:binary' is not allowed."),
        ("version: 1\nbase: &b {class: public, keep}\ntables:\n  users:\n    columns:\n"
         "      id: {<<: *b}\n", "merge keys (<<) are not supported."),
        ("version: 1\ntables:\n  users:\n    columns:\n      id: {class: public, keep, note: 2026-02-30}\n",
         "cannot read this value (ValueError)."),
    ],
)  # fmt: skip
def test_hostile_yaml_is_refused_with_its_place(tmp_path, text, message):
    path = tmp_path / "policy.yaml"
    path.write_text(text)
    started = time.perf_counter()
    with pytest.raises(PolicyError) as info:
        load_policy(path)
    assert time.perf_counter() - started < 5, "no exponential expansion"
    assert message in info.value.message
    assert info.value.message.startswith(f"{path}:")


def test_a_file_over_the_size_limit_is_refused(tmp_path):
    path = tmp_path / "policy.yaml"
    path.write_text("version: 1\n" + "# padding\n" * 120_000)
    with pytest.raises(PolicyError, match="a policy or metrics file may hold at most 1,048,576"):
        load_policy(path)


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ("country:       {class: quasi, keep}", "country:       {class: quasi, keep: 1}",
         "users.country: 'keep' takes no value (write just 'keep')."),
        ("country:       {class: quasi, keep}", "country:       {class: quasi, keep: false}",
         "users.country: 'keep' takes no value (write just 'keep')."),
        ("version: 1", "version: true", "'version: 1' is required at the top of the policy."),
    ],
)  # fmt: skip
def test_boolean_looking_misuse_is_refused(tmp_path, old, new, message):
    path = tmp_path / "policy.yaml"
    path.write_text(EXAMPLE_POLICY.read_text().replace(old, new, 1))
    with pytest.raises(PolicyError) as info:
        load_policy(path)
    assert message in info.value.message


def test_metrics_files_get_the_same_protection(tmp_path):
    path = tmp_path / "metrics.yaml"
    path.write_text("version: true\nsettings: {min_users: true}\n")
    with pytest.raises(PolicyError) as info:
        load_metrics(path)
    assert "'version: 1' is required." in info.value.message
    assert "min_users must be a whole number of at least 5." in info.value.message
    path.write_text(LAUGHS)
    with pytest.raises(PolicyError, match="more than 32 alias uses"):
        load_metrics(path)


def test_the_cli_shows_no_traceback_for_hostile_yaml(tmp_path):
    path = tmp_path / "policy.yaml"
    path.write_text("version: 1\ntables: !!python/object/apply:os.system ['true']\n")
    res = subprocess.run(
        [sys.executable, "-c", "from vigie.cli.app import main; main()", "policy", "check", str(path)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert res.returncode == 4
    assert f"{path}:2:9: tag" in res.stderr and "Traceback" not in res.stderr
