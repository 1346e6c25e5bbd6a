"""The import graph: the core never imports an edge, and the sync modules depend one way
(table → deletes → writer / batch → state), so each can be read and changed alone."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src" / "vigie"


def imports(path: Path) -> set[str]:
    """The vigie modules a file imports (type-checking-only imports included)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("vigie"):
            out.add(node.module)
        elif isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("vigie")}
    return out


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


GRAPH = {module_name(p): imports(p) for p in SRC.rglob("*.py")}


def test_the_core_never_imports_the_cli():
    offenders = [m for m, deps in GRAPH.items()
                 if not m.startswith("vigie.cli") and any(d.startswith("vigie.cli") for d in deps)]  # fmt: skip
    assert offenders == []


def test_no_import_cycle_anywhere():
    def reach(start: str) -> set[str]:
        seen, todo = set(), [start]
        while todo:
            for dep in GRAPH.get(todo.pop(), ()):
                if dep not in seen:
                    seen.add(dep)
                    todo.append(dep)
        return seen

    cycles = [m for m in GRAPH if m in reach(m)]
    assert cycles == []


def test_sync_modules_depend_one_way():
    assert "vigie.sync.table" not in GRAPH["vigie.sync.deletes"]
    for low in ("vigie.sync.writer", "vigie.sync.batch", "vigie.sync.state"):
        assert not GRAPH[low] & {"vigie.sync.table", "vigie.sync.deletes", "vigie.sync.run"}


HEAVY = ("polars", "pyarrow", "duckdb", "matplotlib", "numpy", "fastapi", "sqlglot",
         "cryptography", "psycopg", "pymysql")  # fmt: skip


def test_help_and_version_import_nothing_heavy():
    """`vigie --help` and `vigie version` start fast: the command modules import the
    engines, dataframes and charts inside their commands, not when the CLI loads."""
    import subprocess
    import sys

    for args in (["--help"], ["version"], ["sync", "--help"], ["kpi", "show", "--help"]):
        code = ("import sys; from vigie.cli.app import main; sys.argv = ['vigie', *sys.argv[1:]]\n"
                "try:\n    main()\nexcept SystemExit:\n    pass\n"
                f"print(sorted(m for m in {HEAVY!r} if m in sys.modules), file=sys.stderr)")  # fmt: skip
        run = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True)
        assert run.stderr.strip().splitlines()[-1] == "[]", (args, run.stderr)
