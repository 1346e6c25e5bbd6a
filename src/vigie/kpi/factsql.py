"""A fact's SQL declares what to count; it never executes anything else.

Checked once, parsed with sqlglot (DuckDB dialect), before it runs anywhere:
- exactly one statement, a query (``SELECT``, ``WITH ... SELECT``, set operations): no
  ``COPY``, ``ATTACH``, ``SET``, ``PRAGMA``, ``INSTALL``/``LOAD``, DDL or DML;
- every table it reads is a plain name: a replica table of the store or one of its own
  ``WITH`` names; no schema or catalog (so no ``_vigie`` metadata, no rollups, no other
  attached database), no table function, no file path;
- no function that reads files, the network, the environment, settings or the catalog
  (``read_csv``, ``glob``, ``getenv``, ``current_setting``, ``duckdb_*``...), nor, as the
  facts also run on Spark SQL, one that calls Java (``reflect``, ``java_method``);
- ``user:`` names an output column that comes straight from a stored column pseudonymized
  in the ``user`` domain, so that k always counts people (``check_against_store``).
Whatever a parser might miss, the KPI queries also run on a read-only connection with
external access off and the configuration locked (``kpi.engine.lock_down``).
"""

from __future__ import annotations

import logging
import re
from functools import cache
from typing import TYPE_CHECKING

from vigie.kpi.model import Fact

if TYPE_CHECKING:  # sqlglot is imported when a fact is checked, not when the CLI starts
    from sqlglot import exp

# Functions that reach outside the store's tables: files, network, environment, settings,
# the catalog. Matched on the lower-cased name.
_FORBIDDEN = re.compile(
    r"^(read_\w+|\w+_scan|scan_\w+|glob|sniff_csv|parquet_\w+|iceberg_\w+|delta_\w+|"
    r"getenv|current_setting|set_\w+|duckdb_\w+|pragma_\w+|query|query_table|load_\w+|"
    r"install_\w+|postgres_\w+|mysql_\w+|sqlite_\w+|which_secret|checkpoint|"
    r"force_checkpoint|system|shell|write_\w+|copy_\w+|export_\w+|import_\w+|"
    # and on Spark SQL (KPIs over a lake, ``vigie.spark.kpi``): Java methods, file names
    r"reflect|try_reflect|java_method|input_file_\w+)$"
)
PERSON_DOMAIN = "user"
logging.getLogger("sqlglot").setLevel(logging.ERROR)  # its fallback notices are ours to give


def fact_problems(fact: Fact) -> list[str]:
    """What is wrong with a fact's SQL on its own (without a store), each as a sentence."""
    import sqlglot
    from sqlglot import exp
    from sqlglot.errors import ParseError

    try:
        statements = [s for s in sqlglot.parse(fact.sql, read="duckdb") if s is not None]
    except ParseError as exc:
        first = exc.errors[0] if exc.errors else {}
        line, col = first.get("line", "?"), first.get("col", "?")
        what = first.get("description", "syntax error")
        return [f"its SQL does not parse (line {line} of the SQL, column {col}): {what}."]
    if len(statements) != 1:
        return [f"its SQL must be one statement, found {len(statements)}."]
    (statement,) = statements
    if not isinstance(statement, exp.Query):
        return [f"its SQL must be a query (SELECT or WITH), not {statement.key.upper()}."]
    return _walk(statement)


def _walk(query: exp.Expr) -> list[str]:
    from sqlglot import exp

    problems = []
    for node in query.walk():
        if isinstance(node, exp.Table):
            problems += _table_problems(node)
        elif isinstance(node, exp.Func):
            name = _function_name(node)
            if _FORBIDDEN.match(name) or type(node).__name__.startswith("Read"):
                problems.append(f"function {name}() reaches outside the store's tables{_at(node)}.")
        elif isinstance(node, exp.Command | exp.Set | exp.Pragma | exp.Copy):
            problems.append(f"{node.key.upper()} is not allowed in a fact{_at(node)}.")
    return list(dict.fromkeys(problems))


def _table_problems(table: exp.Table) -> list[str]:
    from sqlglot import exp

    if not isinstance(table.this, exp.Identifier):
        return [f"'{table.this.sql()}' is not a table name: facts read the store's tables only"
                f"{_at(table)}."]  # fmt: skip
    if table.args.get("db") or table.args.get("catalog"):
        return [f"'{table.sql()}' names a schema or database: facts read the replica's own "
                f"tables, by their plain names{_at(table)}."]  # fmt: skip
    return []


def _function_name(node: exp.Func) -> str:
    from sqlglot import exp

    if isinstance(node, exp.Anonymous):
        return str(node.name).lower()
    return str(node.sql_name()).lower()


def _at(node: exp.Expr) -> str:
    """`` (line N of the SQL)`` where sqlglot kept the position of the node's name."""
    from sqlglot import exp

    for ident in [node, *node.find_all(exp.Identifier)]:
        line = ident.meta.get("line") if hasattr(ident, "meta") else None
        if line:
            return f" (line {line} of the SQL)"
    return ""


@cache  # facts are frozen: parse each once per process
def tables_read(fact: Fact) -> frozenset[str]:
    """The plain table names the fact reads that are not its own WITH names."""
    import sqlglot
    from sqlglot import exp

    query = sqlglot.parse_one(fact.sql, read="duckdb")
    own = {cte.alias_or_name.lower() for cte in query.find_all(exp.CTE)}
    return frozenset(t.name.lower() for t in query.find_all(exp.Table) if t.name.lower() not in own)


@cache
def user_source(fact: Fact) -> tuple[str, str] | None:
    """The (table, column) the fact's ``user`` output column is a plain copy of, when it
    is one: the outer query's projection named ``user``, a column of a table (by alias)
    read in that query's FROM or JOINs. None when it is computed or comes from a WITH."""
    import sqlglot
    from sqlglot import exp

    query = sqlglot.parse_one(fact.sql, read="duckdb")
    select = query if isinstance(query, exp.Select) else None
    if select is None:
        return None
    projection = next((p for p in select.expressions if p.alias_or_name == fact.user), None)
    column = projection.unalias() if projection is not None else None
    if not isinstance(column, exp.Column):
        return None
    own = {cte.alias_or_name.lower() for cte in query.find_all(exp.CTE)}
    sources = {}
    from_ = select.args.get("from") or select.args.get("from_")
    scopes = [from_.this] if from_ is not None else []
    scopes += [j.this for j in select.args.get("joins") or []]
    for table in scopes:
        if isinstance(table, exp.Table) and table.name.lower() not in own:
            sources[(table.alias_or_name or table.name).lower()] = table.name.lower()
    if column.table:
        table_name = sources.get(column.table.lower())
    else:
        table_name = next(iter(sources.values())) if len(sources) == 1 else None
    return (table_name, column.name) if table_name else None
