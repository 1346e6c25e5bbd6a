"""Render the fleet schema as DDL for each production engine.

Tables are created with their primary keys; secondary indexes, unique constraints and
(outside SQLite) foreign keys are added after the bulk load, as a real bulk import does.
"""

from __future__ import annotations

from functools import partial

from vigie.db.dsn import Engine
from vigie.db.quote import ident
from vigie.fleet.schema import Column, ForeignKey, Table

_TYPES: dict[Engine, dict[str, str]] = {
    "postgresql": {
        "bigint": "BIGINT",
        "int": "INTEGER",
        "smallint": "SMALLINT",
        "ts": "TIMESTAMP(0)",
        "decimal": "NUMERIC(6,2)",
    },
    "mysql": {
        "bigint": "BIGINT",
        "int": "INT",
        "smallint": "SMALLINT",
        "ts": "DATETIME",
        "decimal": "DECIMAL(6,2)",
    },
    "sqlite": {
        "bigint": "INTEGER",
        "int": "INTEGER",
        "smallint": "INTEGER",
        "ts": "TIMESTAMP",
        "decimal": "NUMERIC",
        "text": "TEXT",
    },
}


def quote(engine: Engine, name: str) -> str:
    """Quote an identifier for ``engine``."""
    return ident(engine, name)


def column_type(engine: Engine, col: Column) -> str:
    if col.type == "text" and engine != "sqlite":
        return f"VARCHAR({col.length})"
    return _TYPES[engine][col.type]


def create_table(engine: Engine, table: Table) -> str:
    """CREATE TABLE; the primary key is inline except on PostgreSQL (added after the load,
    where building it by sort beats growing it row by row), foreign keys inline on SQLite."""
    q = partial(quote, engine)
    lines = [
        f"{q(c.name)} {column_type(engine, c)}{'' if c.nullable else ' NOT NULL'}"
        for c in table.columns
    ]
    if engine != "postgresql":
        lines.append(_pk_clause(engine, table))
    if engine == "sqlite":
        lines += [_fk_clause(engine, fk) for fk in table.foreign_keys]
    suffix = " ENGINE=InnoDB DEFAULT CHARSET=utf8mb4" if engine == "mysql" else ""
    return f"CREATE TABLE {q(table.name)} (\n  " + ",\n  ".join(lines) + f"\n){suffix}"


def _pk_clause(engine: Engine, table: Table) -> str:
    return f"PRIMARY KEY ({', '.join(quote(engine, c) for c in table.primary_key)})"


def _fk_clause(engine: Engine, fk: ForeignKey) -> str:
    cols = ", ".join(quote(engine, c) for c in fk.columns)
    refs = ", ".join(quote(engine, c) for c in fk.ref_columns)
    return f"FOREIGN KEY ({cols}) REFERENCES {quote(engine, fk.table)} ({refs}) ON DELETE CASCADE"


def post_load(engine: Engine, table: Table) -> list[str]:
    """Statements that add keys, indexes and foreign keys after loading, in a valid order."""
    return post_load_indexes(engine, table) + post_load_foreign_keys(engine, table)


def post_load_indexes(engine: Engine, table: Table) -> list[str]:
    """Primary key (PostgreSQL), unique constraints and secondary indexes."""
    q = partial(quote, engine)
    out = []
    if engine == "postgresql":
        out.append(f"ALTER TABLE {q(table.name)} ADD {_pk_clause(engine, table)}")
    for cols in table.unique:
        name = f"uq_{table.name}_{'_'.join(cols)}"
        out.append(f"CREATE UNIQUE INDEX {q(name)} ON {q(table.name)} ({', '.join(map(q, cols))})")
    for cols in table.indexes:
        name = f"ix_{table.name}_{'_'.join(cols)}"
        out.append(f"CREATE INDEX {q(name)} ON {q(table.name)} ({', '.join(map(q, cols))})")
    return out


def post_load_foreign_keys(engine: Engine, table: Table) -> list[str]:
    """Foreign keys (inline on SQLite, so none here); they need the parents' keys first."""
    if engine == "sqlite":
        return []
    q = partial(quote, engine)
    out = []
    for fk in table.foreign_keys:
        name = q(f"fk_{table.name}_{'_'.join(fk.columns)}")
        out.append(f"ALTER TABLE {q(table.name)} ADD CONSTRAINT {name} {_fk_clause(engine, fk)}")
    return out


def drop_table(engine: Engine, name: str) -> str:
    cascade = " CASCADE" if engine == "postgresql" else ""
    return f"DROP TABLE IF EXISTS {quote(engine, name)}{cascade}"
