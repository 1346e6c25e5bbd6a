"""`vigie sync --engine spark`: one run over every table of the policy, on Spark.

Before anything runs on Spark, the driver does what the DuckDB path does, with the same
code: load the policy, check the pseudonym engine against Python's ``hmac``, introspect
production in one snapshot, and check it against the policy and the store (default deny,
type drift, keys, cursors: ``vigie.sync.plan``). Then, per table:
- a *full* load (first run, or the table's stored columns changed): production read in
  parallel over the primary key, masked and scanned on the executors, written as a new
  version;
- a *delta*: the rows whose cursor moved (``cursor >= watermark``, as the DuckDB path),
  masked and scanned, merged by key into the current version; deletes found by comparing
  row counts per key bucket with production, and reading production's keys for the
  buckets that differ only; the deleted keys are recorded as in a DuckDB store.
A table the content scan stops keeps its current version; the others go on. The run ends
by replacing the manifest (``vigie.spark.lake``): readers see all of the run or none.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa

from vigie.db.dsn import Dsn
from vigie.errors import ScanHit, SyncError, VigieError
from vigie.keys import Keys
from vigie.policy.compile import BUCKET_COLUMN, CompiledTable
from vigie.policy.hmac_engine import self_test
from vigie.policy.load import load_policy
from vigie.sources import open_source
from vigie.sources.base import Source, bucketed
from vigie.spark import jdbc, kms, lake
from vigie.spark.session import error_line, spark_session
from vigie.spark.target import SparkTarget
from vigie.spark.tasks import (
    DAY_COLUMN,
    FIRST_SEEN,
    LINEAGE,
    RUN_COLUMN,
    arrow_type,
    masked_batches,
    masked_keys,
    reraise,
)
from vigie.stores.duckdb_store import Store, q
from vigie.stores.meta import META, column_records, forget_table, record_column
from vigie.sync.converge import mark_converged
from vigie.sync.plan import make_plan
from vigie.sync.run import SyncReport, _begin_run, _end_run, _record_table, check_source
from vigie.sync.state import (
    Progress,
    TableResult,
    delta_filter,
    held_target,
    load_state,
    split,
)
from vigie.sync.writer import column_record, store_type

BUCKET_WIDTH = 4096


@dataclass
class _Pending:
    """What a table's run changes in the metadata once the manifest is replaced."""

    compiled: CompiledTable
    target: Any
    deleted: pa.Table | None


def spark_sync(
    dsn: Dsn,
    policy_path: Path,
    root: Path,
    keys: Keys,
    target: SparkTarget,
    *,
    progress: Progress | None = None,
    batch_rows: int = 500_000,
) -> SyncReport:
    started = time.perf_counter()
    jdbc.jdbc_url(dsn)  # only servers: refused before anything starts
    policy = load_policy(policy_path)
    self_test(keys.pseudonym_key)
    spark = spark_session(target)
    configure_encryption(spark, keys)
    source = open_source(dsn)
    try:
        with lake.open_meta(root, keys, create=True) as meta:
            report = _run(spark, source, dsn, policy, root, meta, keys, progress, batch_rows)
    finally:
        source.close()
    report.seconds = time.perf_counter() - started
    report.hmac_engine = f"{report.hmac_engine} on Spark ({target.name})"
    return report


def configure_encryption(spark: Any, keys: Keys) -> None:
    """Parquet modular encryption for every file this session writes or reads."""
    spark.conf.set("parquet.crypto.factory.class",
                   "org.apache.parquet.crypto.keytools.PropertiesDrivenCryptoFactory")  # fmt: skip
    spark.conf.set("parquet.encryption.kms.client.class", kms.KMS_CLASS)
    spark.conf.set("parquet.encryption.key.access.token", kms.access_token(keys))


def _run(spark: Any, source: Source, dsn: Dsn, policy: Any, root: Path, meta: Store,
         keys: Keys, progress: Progress | None, batch_rows: int) -> SyncReport:  # fmt: skip
    source.snapshot()
    snapshot = getattr(source, "snapshot_id", None) if dsn.engine == "postgresql" else None
    check_source(meta, source.identity(), dsn)
    plan = make_plan(policy, source, meta, keys.pseudonym_key)
    run_id = _begin_run(meta, dsn, policy, _now())
    report = SyncReport(run_id, str(dsn), root, _now(), unlisted=plan.unlisted)
    previous = lake.manifest(root)
    versions = {n: v for n, v in previous.items() if n in policy.tables}
    pending: list[_Pending] = []
    reshaped: set[str] = set()  # tables the policy now copies otherwise: no old version stays
    for compiled in plan.tables:
        table = _TableRun(spark, source, dsn, snapshot, compiled, keys, meta, root, run_id,
                          batch_rows, progress)  # fmt: skip
        try:
            version = table.run(previous.get(compiled.policy.name))
            if table.reshaped:
                reshaped.add(compiled.policy.name)
            if version is not None:
                versions[compiled.policy.name] = version
            pending.append(_Pending(compiled, table.target, table.deleted))
        except ScanHit as exc:
            table.result.status, table.result.message = "stopped", str(exc)
        report.tables.append(table.result)
    lake.write_manifest(root, run_id, versions)  # the run is visible from here on
    mark_converged(meta, run_id)  # its policy is in force from now (the exposure report)
    with meta.transaction() as con:
        for p in pending:
            _commit_table(con, p, run_id)
        for name in set(previous) - set(versions):
            forget_table(con, name)
    for r in report.tables:
        _record_table(meta, run_id, r)
    _end_run(meta, run_id, report)
    meta.con.execute("CHECKPOINT")
    # Readers of the previous manifest keep its versions until the next run, except those
    # of tables the policy no longer copies, or copies less of: those go now.
    readable = {n: v for n, v in previous.items() if n in versions and n not in reshaped}
    lake.remove_stale(root, versions, readable)
    return report


def _commit_table(con: Any, p: _Pending, run_id: int) -> None:
    name = p.compiled.policy.name
    con.execute(f"DELETE FROM {META}.columns WHERE table_name = ?", [name])
    for column in p.compiled.policy.columns:
        record_column(con, column_record(p.compiled, column))
    con.execute(
        f"INSERT OR REPLACE INTO {META}.state (table_name, cursor_column, loaded, watermark_ts, "
        "watermark_int) VALUES (?, ?, true, ?, ?)",
        [name, p.compiled.policy.cursor, *split(p.target)],
    )
    if p.deleted is not None and p.deleted.num_rows:
        con.register("vigie_deleted", p.deleted)
        cols = ", ".join(q(c) for c in p.deleted.column_names)
        con.execute(f"INSERT INTO {META}.{q('deleted__' + name)} ({cols}, _vigie_deleted_at, "
                    f"_vigie_run) SELECT *, ?, ? FROM vigie_deleted", [_now(), run_id])  # fmt: skip
        con.unregister("vigie_deleted")


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


class _TableRun:
    """One table's part of a run."""

    def __init__(self, spark: Any, source: Source, dsn: Dsn, snapshot: str | None,
                 compiled: CompiledTable, keys: Keys, meta: Store, root: Path, run_id: int,
                 batch_rows: int, progress: Progress | None) -> None:  # fmt: skip
        self.spark, self.source, self.dsn, self.snapshot = spark, source, dsn, snapshot
        self.c, self.keys, self.meta, self.root = compiled, keys, meta, root
        self.run_id, self.batch_rows = run_id, batch_rows
        self.run_time = _now()
        self.progress = progress or (lambda *_: None)
        self.name = compiled.policy.name
        self.result = TableResult(self.name)
        self.target: Any = None
        self.deleted: pa.Table | None = None
        self.day_of = _day_column(compiled)
        self.reshaped = False  # the stored columns changed with the policy: written whole

    def run(self, current: lake.Version | None) -> lake.Version | None:
        started = time.perf_counter()
        self._ensure_history()
        state = load_state(self.meta, self.name)
        cursor = self.c.policy.cursor
        target = self.source.max_value(self.c.source, cursor) if cursor else None
        self.target = _floor(held_target(target))
        version: lake.Version | None
        try:
            self.reshaped = current is not None and self._columns_changed()
            if current is None or not state.loaded or self.reshaped:
                self.result.passes.append("full")
                version = self._full()
            else:
                self.result.passes.append("delta")
                version = self._delta(current, delta_filter(cursor, state.watermark))
        except VigieError:
            raise
        except Exception as exc:
            reraise(exc)  # a vigie error from an executor, as itself
            raise self._failed(exc) from None
        self.result.seconds = time.perf_counter() - started
        return version

    def _failed(self, exc: Exception) -> SyncError:
        """Spark's error, without values (a driver's message may quote a row) or keys."""
        return SyncError(
            f"{self.name}: the Spark job failed: {error_line(exc, self.keys)}",
            hint="The table keeps its current version. Check the Spark logs (values are not "
            "repeated here) and run the sync again.",
        )

    # -- schema ------------------------------------------------------------------------------

    def _ensure_history(self) -> None:
        keys = ", ".join(f"{q(k)} {store_type(self.c, k)}" for k in self.c.key)
        with self.meta.transaction() as con:
            con.execute(
                f"CREATE TABLE IF NOT EXISTS {META}.{q('deleted__' + self.name)} ({keys}, "
                "_vigie_first_seen TIMESTAMP, _vigie_deleted_at TIMESTAMP, _vigie_run INTEGER)"
            )

    def _columns_changed(self) -> bool:
        """Whether the stored columns differ from what the policy now makes of them: the
        table is then written again whole (nothing of the old columns stays)."""
        recorded = column_records(self.meta).get(self.name, {})
        wanted = {c: column_record(self.c, c) for c in self.c.policy.columns}
        return recorded != wanted

    def schema(self) -> pa.Schema:
        fields = [pa.field(c.name, arrow_type(store_type(self.c, c.name))) for c in self.c.columns]
        fields += [pa.field(BUCKET_COLUMN, pa.int64()), pa.field(RUN_COLUMN, pa.int32()),
                   pa.field(FIRST_SEEN, pa.timestamp("us"))]  # fmt: skip
        if self.day_of:
            fields.append(pa.field(DAY_COLUMN, pa.date32()))
        return pa.schema(fields)

    def key_schema(self) -> pa.Schema:
        return pa.schema([pa.field(k, arrow_type(store_type(self.c, k))) for k in self.c.key])

    # -- passes ------------------------------------------------------------------------------

    def _masked(self, frame: Any) -> Any:
        from functools import partial

        from pyspark.sql.pandas.types import from_arrow_schema

        schema = self.schema()
        task = partial(masked_batches, self.c, self.keys.pseudonym_key, self.run_id, self.run_time,
                       schema,
                       self.day_of, self.batch_rows)  # fmt: skip
        return frame.mapInArrow(task, from_arrow_schema(schema))

    def _read(self, where: Any, *, partitions: int = 1, extra: str | None = None,
              columns: list[str] | None = None) -> Any:  # fmt: skip
        span = self.source.key_span(self.c.source) if partitions > 1 else None
        cols = columns or list(self.c.read_columns)
        return jdbc.read(self.spark, self.dsn, self.snapshot, self.c.source, cols, where,
                         span=span, partitions=partitions, extra=extra)  # fmt: skip

    def _full(self) -> lake.Version:
        rows = self.source.estimate_rows(self.c.source) or 0
        parallel = int(self.spark.sparkContext.defaultParallelism) if _classic(self.spark) else 2
        partitions = max(parallel, rows // self.batch_rows + 1)
        masked = self._masked(self._read(None, partitions=partitions))
        version = self._write(masked, None, None)
        self.result.inserted = version.rows
        self.progress(self.name, version.rows, version.rows)
        return version

    def _base(self, current: lake.Version, days: set[str] | None = None) -> Any:
        """The current version as a DataFrame (for a table by day: with its day column, and
        only ``days`` when given)."""
        from pyspark.sql import functions as f

        folders = current.folders
        if days is not None and current.days is not None:
            folders = [current.days[d] for d in sorted(days) if d in current.days]
        if not folders:
            return self.spark.createDataFrame([], _spark_schema(self.schema()))
        base = self.spark.read.parquet(*(str(self.root / p) for p in folders))
        if self.day_of and current.days is not None:
            base = base.withColumn(DAY_COLUMN, f.to_date(f.col(self.day_of)))
        return base

    def _delta(self, current: lake.Version, where: Any) -> lake.Version | None:
        """Merge the rows whose cursor moved; remove what production deleted. The changed
        keys are few: they are compared and joined as small broadcast tables, and a table
        by day is written again for the days they touch only."""
        from pyspark import StorageLevel

        read = self._masked(self._read(where)).persist(StorageLevel.MEMORY_AND_DISK)
        try:
            base = self._base(current)
            fresh, old = self._changed(read, base)  # keys whose row is new or differs
            updated = _count_in(fresh, old, list(self.c.key))
            fresh_df = _frame(self.spark, fresh.select(list(self.c.key)))
            delta = self._keep_first_seen(
                read.join(_broadcast(fresh_df), list(self.c.key), "left_semi"), old
            )
            merged = base.join(_broadcast(fresh_df), list(self.c.key), "left_anti")
            deleted = self._deleted(merged.unionByName(delta))
            self.result.inserted = fresh.num_rows - updated
            self.result.updated = updated
            self.result.deleted = 0 if deleted is None else deleted.num_rows
            if not fresh.num_rows and not self.result.deleted:
                return None  # the current version stands
            version = self._rewrite(current, delta, fresh_df, fresh, old, deleted)
        finally:
            read.unpersist()
        self.progress(self.name, fresh.num_rows, fresh.num_rows)
        return version

    def _keep_first_seen(self, delta: Any, old: pa.Table) -> Any:
        """Updated rows keep when they were first copied (the exposure report's start)."""
        from pyspark.sql import functions as f

        if not old.num_rows:
            return delta
        keys = list(self.c.key)
        seen = _frame(
            self.spark, old.select([*keys, FIRST_SEEN]).rename_columns([*keys, "_vigie_old_seen"])
        )
        joined = delta.join(_broadcast(seen), keys, "left")
        first = f.coalesce(f.col("_vigie_old_seen"), f.col(FIRST_SEEN)).alias(FIRST_SEEN)
        return joined.select(*[first if c == FIRST_SEEN else f.col(c) for c in delta.columns])

    def _changed(self, read: Any, base: Any) -> tuple[pa.Table, pa.Table]:
        """Keys (and days) of the rows read that are new or differ from the stored ones, and
        of the stored rows they replace: rows read again unchanged (a cursor at the
        watermark) are no change. Compared by a SHA-256 of each row's stored columns."""
        from pyspark.sql import functions as f

        keys = list(self.c.key)
        data = [c for c in read.columns if c not in LINEAGE or c == BUCKET_COLUMN]
        digest = f.sha2(f.to_json(f.struct(*[f.col(c) for c in data])), 256).alias("_d")
        extra = [DAY_COLUMN] if DAY_COLUMN in read.columns else []
        now = read.select(*keys, digest, *extra).toArrow()
        if not now.num_rows:
            none = now.select(keys + extra)
            return none, none.append_column(FIRST_SEEN, pa.array([], pa.timestamp("us")))
        read_keys = _broadcast(read.select(*keys))
        old = base.join(read_keys, keys, "left_semi").select(*keys, digest, *extra, FIRST_SEEN)
        old = old.toArrow()
        same = now.join(old.select([*keys, "_d"]), [*keys, "_d"], join_type="left semi")
        fresh = now.join(same.select(keys), keys, join_type="left anti")
        return fresh.select(keys + extra), old.select([*keys, *extra, FIRST_SEEN])

    def _rewrite(self, current: lake.Version, delta: Any, fresh_df: Any, fresh: pa.Table,
                 old: pa.Table, deleted: pa.Table | None) -> lake.Version:  # fmt: skip
        """The new version: the table whole, or by day only the days touched."""
        keys = list(self.c.key)
        touched = None
        if current.days is not None:
            touched = self._days(fresh, old.join(fresh.select(keys), keys, join_type="left semi"),
                                 deleted)  # fmt: skip
        rows = self._base(current, touched).join(_broadcast(fresh_df), keys, "left_anti")
        if deleted is not None and deleted.num_rows:
            gone = _frame(self.spark, deleted.select(keys))
            rows = rows.join(_broadcast(gone), keys, "left_anti")
        count = current.rows + self.result.inserted - self.result.deleted
        return self._write(rows.unionByName(delta), current, touched, count)

    @staticmethod
    def _days(fresh: pa.Table, replaced: pa.Table, deleted: pa.Table | None) -> set[str]:
        """Days with a new row, a replaced row (its old day) or a deleted row."""
        days: set[str] = set()
        for table in (fresh, replaced, deleted):
            if table is not None and DAY_COLUMN in table.column_names:
                days |= {str(d) for d in table.column(DAY_COLUMN).unique().to_pylist()}
        return days

    def _deleted(self, merged: Any) -> pa.Table | None:
        """Stored rows production no longer has: counts per key bucket compared, then keys
        read for the buckets that differ."""
        stored = {int(r[0]): int(r[1]) for r in
                  merged.groupBy(BUCKET_COLUMN).count().collect()}  # fmt: skip
        produced = self.source.bucket_counts(self.c.source, BUCKET_WIDTH)
        differ = sorted(b for b in stored if stored[b] != produced.get(b, 0))
        if not differ:
            return None
        extra = _bucket_ranges(self.dsn, self.c, differ)
        prod_keys = self._read(None, extra=extra, columns=list(self.c.source.primary_key))
        masked = prod_keys.mapInArrow(
            _keys_task(self.c, self.keys.pseudonym_key, self.key_schema()),
            _spark_schema(self.key_schema()),
        )
        keys = list(self.c.key)
        kept = [*keys, FIRST_SEEN, *([DAY_COLUMN] if DAY_COLUMN in merged.columns else [])]
        gone = (
            merged.filter(merged[BUCKET_COLUMN].isin(differ))
            .join(masked, keys, "left_anti")
            .select(*kept)
        )
        rows = gone.toArrow()
        self.deleted = _as_stored(rows.select([*keys, FIRST_SEEN]), self.c)
        return rows

    def _write(self, frame: Any, current: lake.Version | None, touched: set[str] | None,
               rows: int | None = None) -> lake.Version:  # fmt: skip
        """Write ``frame`` as this run's version; a table by day keeps the days of
        ``current`` that the run did not touch (``touched``; None: every day is new).
        ``rows``: the version's row count when known (else counted)."""
        rel = f"data/{self.name}/run={self.run_id}"
        writer = (
            frame.write.mode("overwrite")
            .option("parquet.encryption.uniform.key", kms.COLUMN_KEY)
            .option("compression", "zstd")
        )
        if self.day_of:
            writer = writer.partitionBy(DAY_COLUMN)
        writer.parquet(str(self.root / rel))
        days = None
        if self.day_of:
            prefix = f"{DAY_COLUMN}="
            folder = self.root / rel
            written = {p.name[len(prefix) :]: f"{rel}/{p.name}" for p in folder.iterdir()
                       if p.is_dir() and p.name.startswith(prefix)}  # fmt: skip
            old = current.days if current is not None and current.days is not None else {}
            days = {d: p for d, p in old.items() if touched is None or d not in touched}
            days |= written
        version = lake.Version(rel, self.run_id, 0, days)
        if rows is None:
            paths = [str(self.root / p) for p in version.folders]
            rows = int(self.spark.read.parquet(*paths).count()) if paths else 0
        return lake.Version(rel, self.run_id, rows, days)


def _broadcast(frame: Any) -> Any:
    from pyspark.sql.functions import broadcast

    return broadcast(frame)


def _count_in(fresh: pa.Table, old: pa.Table, keys: list[str]) -> int:
    """How many keys of ``fresh`` are in ``old``."""
    if not fresh.num_rows or not old.num_rows:
        return 0
    return int(fresh.select(keys).join(old.select(keys), keys, join_type="inner").num_rows)


def _keys_task(compiled: CompiledTable, key: str, schema: pa.Schema) -> Any:
    from functools import partial

    return partial(masked_keys, compiled, key, schema)


def _frame(spark: Any, table: pa.Table) -> Any:
    """``table`` as a DataFrame, typed by its own schema: Spark Connect infers no schema
    from an empty table (a classic session does)."""
    return spark.createDataFrame(table, schema=_spark_schema(table.schema))


def _spark_schema(schema: pa.Schema) -> Any:
    from pyspark.sql.pandas.types import from_arrow_schema

    return from_arrow_schema(schema)


def _as_stored(rows: pa.Table, compiled: CompiledTable) -> pa.Table:
    """Deleted keys and first-seen times typed as the delete history keeps them
    (pseudonyms as UUIDs)."""
    arrays = []
    for name in rows.column_names:
        col = rows.column(name).combine_chunks()
        if name in compiled.pseudonym_columns:
            col = pa.ExtensionArray.from_storage(pa.uuid(), col.cast(pa.binary(16)))
        arrays.append(col)
    return pa.Table.from_arrays(arrays, names=rows.column_names)


def _bucket_ranges(dsn: Dsn, compiled: CompiledTable, buckets: list[int]) -> str | None:
    """SQL for the first key column in the given buckets (merged into ranges)."""
    from vigie.db.quote import ident

    if not bucketed(compiled.source):
        return None
    first = ident(dsn.engine, compiled.source.primary_key[0])
    ranges: list[list[int]] = []
    for b in buckets:
        if ranges and ranges[-1][1] == b:
            ranges[-1][1] = b + 1
        else:
            ranges.append([b, b + 1])
    parts = [f"({first} >= {a * BUCKET_WIDTH} AND {first} < {b * BUCKET_WIDTH})" for a, b in ranges]
    return "(" + " OR ".join(parts) + ")"


def _floor(value: Any) -> Any:
    """Integer watermarks are kept as the first key of their bucket (no raw keys)."""
    if isinstance(value, int):
        return (value // BUCKET_WIDTH) * BUCKET_WIDTH
    return value


def _day_column(compiled: CompiledTable) -> str | None:
    """Event-like tables (an integer cursor: append-mostly) are cut by the day of their
    first stored timestamp column."""
    cursor = compiled.policy.cursor
    if not cursor or compiled.source.column(cursor).kind != "integer":
        return None
    for c in compiled.columns:
        if store_type(compiled, c.name) == "TIMESTAMP":
            return c.name
    return None


def _classic(spark: Any) -> bool:
    return hasattr(spark, "sparkContext") and not type(spark).__module__.startswith(
        "pyspark.sql.connect"
    )
