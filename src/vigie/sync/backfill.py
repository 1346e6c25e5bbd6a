"""Backfill: columns the policy copies that the store table does not hold yet.

A loosened policy (``drop`` → ``keep``, a new column) or a changed rule whose old values
were removed first (``vigie.sync.converge``) leaves the stored table without some of the
columns the policy now copies. Before the table's passes, those columns are read from
production for every row (in the run's snapshot), masked and scanned as any batch, staged
in a temporary table and joined to the stored rows by key into a new table that replaces
the old one in one transaction: no row is left without them, so KPIs never mix rows with
and without a column. Which columns are missing is read from the store's schema at each run
(``converge.plan_changes``), so a crash before the swap simply backfills again.
"""

from __future__ import annotations

from vigie.keys import Keys
from vigie.sources.base import KeyRange, Source
from vigie.stores.duckdb_store import q
from vigie.stores.meta import LINEAGE_COLUMNS, record_column, reset_changes
from vigie.sync.batch import mask_and_scan
from vigie.sync.writer import (
    TableWriter,
    column_record,
    select_columns,
    store_type,
)


def backfill(writer: TableWriter, source: Source, keys: Keys, batch_rows: int,
             missing: list[str]) -> list[str]:  # fmt: skip
    """Fill ``missing``, columns the stored table lacks (``converge`` finds them), from
    production; returns their names."""
    store, c = writer.store, writer.c
    if not missing:
        return []
    if set(missing) & set(c.key):
        raise AssertionError("a key column's rule changed: converge rebuilds such tables")
    fill = [*c.key, *missing]
    out = [col for col in c.columns if col.name in fill]
    typed = ", ".join(f"{q(n)} {store_type(c, n)}" for n in fill)
    con = store.con
    con.execute(f"CREATE OR REPLACE TEMP TABLE vigie_fill ({typed})")
    try:
        read = list(dict.fromkeys([*fill, *c.source.primary_key]))
        for batch in source.read(c.source, read, None, KeyRange(), batch_rows):
            masked = mask_and_scan(c, keys, batch, out)
            con.register("vigie_batch", masked.arrow)
            try:
                con.execute(
                    f"INSERT INTO vigie_fill SELECT {select_columns(c, fill)} FROM vigie_batch"
                )
            finally:
                con.unregister("vigie_batch")
        _swap(writer, missing)
    finally:
        con.execute("DROP TABLE IF EXISTS vigie_fill")
    return missing


def _swap(writer: TableWriter, missing: list[str]) -> None:
    """The stored table joined with the staged columns, in the policy's column order."""
    c, table = writer.c, q(writer.name)
    new = q(writer.name + "__vigie_fill")
    picked = [f"f.{q(n)}" if n in missing else f"t.{q(n)}" for n in (x.name for x in c.columns)]
    picked += [f"t.{n}" for n in LINEAGE_COLUMNS]
    on = " AND ".join(f"t.{q(k)} = f.{q(k)}" for k in c.key)
    with writer.store.transaction() as con:
        con.execute(
            f"CREATE TABLE {new} AS SELECT {', '.join(picked)} FROM {table} t "
            f"LEFT JOIN vigie_fill f ON ({on})"
        )
        con.execute(f"DROP TABLE {table}")
        con.execute(f"ALTER TABLE {new} RENAME TO {table}")
        reset_changes(con)
        for name in missing:
            record_column(con, column_record(c, name))
