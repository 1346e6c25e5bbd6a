"""Read-only SQL for engineers: one SELECT/WITH over the replica's tables, nothing else.

Two locks, one behind the other. The parser (sqlglot) refuses anything but one query over
the replica's tables: no table function (``read_csv``, ``glob``...), no file or URL, no
``ATTACH``, ``COPY``, ``INSTALL``/``LOAD``, ``PRAGMA``, ``SET``, no vigie metadata schema and
no system function. The connection it runs on is the snapshot's, with external access off
and the configuration locked, so a statement the parser missed still cannot read a file,
reach the network, load an extension or change a setting. Each refusal says why.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass
from typing import Any

import duckdb
import sqlglot
from sqlglot import exp

from vigie.errors import Refused

# functions that reach outside the replica, whatever the parser calls them
_FORBIDDEN_FUNCTION = re.compile(
    r"^(read_|glob|getenv|sniff_|parquet_|iceberg_|delta_|query_table|query$|sql_auto|"
    r"current_setting|duckdb_|pragma_|which_secret|load_aws|enable_|disable_|install|load$|"
    r"copy|export|import|httpfs|http_|postgres_|mysql_|sqlite_|icu_|json_execute|"
    r"checkpoint|force_checkpoint|system|shell|sleep|repeat$|range$|generate_series$)",
    re.IGNORECASE,
)
_ALLOWED_ROOTS = (exp.Select, exp.Union, exp.Intersect, exp.Except, exp.Subquery)


@dataclass(frozen=True)
class SqlAnswer:
    columns: list[str]
    rows: list[list[Any]]
    truncated: bool


def check_statement(sql: str, tables: set[str]) -> str:
    """The one statement, if it is a query over ``tables``; ``Refused`` saying why if not."""
    if len(sql) > 20_000:
        raise Refused("The statement is over 20,000 characters.", hint="Send a shorter query.")
    try:
        parsed = [s for s in sqlglot.parse(sql, read="duckdb") if s is not None]
    except sqlglot.errors.ParseError as exc:
        first = str(exc).splitlines()[0][:200]
        raise Refused(f"The statement does not parse: {first}", hint="Send one SELECT.") from None
    if len(parsed) != 1:
        raise Refused(f"{len(parsed)} statements sent; one SELECT or WITH is allowed.")
    (tree,) = parsed
    if not isinstance(tree, _ALLOWED_ROOTS):
        raise Refused(
            f"Only SELECT or WITH ... SELECT is allowed, not {tree.key.upper()}.",
            hint="The replica is read-only through the API.",
        )
    _check_nodes(tree, tables)
    return sql


def _check_nodes(tree: exp.Expression, tables: set[str]) -> None:
    ctes = {c.alias_or_name.lower() for c in tree.find_all(exp.CTE)}
    for node in tree.walk():
        if isinstance(node, exp.Command | exp.Pragma | exp.Set | exp.Copy | exp.Create | exp.Drop
                      | exp.Insert | exp.Update | exp.Delete | exp.Alter | exp.Use):  # fmt: skip
            raise Refused(f"{node.key.upper()} is not allowed in a query.")
        if isinstance(node, exp.Func):
            _check_function(node)
        if isinstance(node, exp.Table):
            _check_table(node, tables, ctes)


def _check_function(node: exp.Func) -> None:
    name = node.name if isinstance(node, exp.Anonymous) else node.sql_name()
    if _FORBIDDEN_FUNCTION.match(name or ""):
        raise Refused(
            f"Function {name}() is not allowed: it reaches outside the replica's tables "
            "(files, network, settings, system state).",
            hint="Query the replica's tables with ordinary functions.",
        )


def _check_table(node: exp.Table, tables: set[str], ctes: set[str]) -> None:
    if not isinstance(node.this, exp.Identifier):
        raise Refused(
            f"'{node.sql(dialect='duckdb')[:80]}' is not a table of the replica: table "
            "functions, files and URLs are not allowed.",
            hint=f"Tables: {', '.join(sorted(tables))}.",
        )
    name = node.name.lower()
    schema = node.db.lower()
    if node.catalog and node.catalog.lower() != "store":
        raise Refused(f"Catalog '{node.catalog}' is not allowed; only the replica's tables.")
    if schema in ("", "main") and (name in tables or (not schema and name in ctes)):
        return
    raise Refused(
        f"'{node.sql(dialect='duckdb')[:80]}' is not a table of the replica.",
        hint=f"Tables: {', '.join(sorted(tables))}.",
    )


def run_statement(
    con: duckdb.DuckDBPyConnection, sql: str, *, max_rows: int, timeout: float
) -> SqlAnswer:
    """Run an already checked statement on a locked-down cursor, within ``timeout`` seconds
    and ``max_rows`` rows (one more is read to say the answer was cut)."""
    timer = threading.Timer(timeout, con.interrupt)
    timer.start()
    try:
        result = con.execute(sql)
        columns = [d[0] for d in result.description or []]
        rows = result.fetchmany(max_rows + 1)
    except duckdb.InterruptException:
        raise Refused(
            f"The statement ran over its time limit ({timeout:g} s) and was stopped.",
            hint="Narrow it (fewer days, a LIMIT) or ask an engineer for a rollup.",
        ) from None
    except duckdb.Error as exc:
        first = str(exc).splitlines()[0][:300]
        raise Refused(f"The engine refused the statement: {first}") from None
    finally:
        timer.cancel()
    return SqlAnswer(columns, [list(r) for r in rows[:max_rows]], len(rows) > max_rows)
