"""A Spark-built store (a *lake*): an encrypted, partitioned Parquet dataset in a folder.

Layout of ``DIR``:
- ``_vigie.duckdb``: the metadata, as in a DuckDB store (runs, per-table state and
  watermarks, the policy texts and each run's column classes, deleted keys), encrypted
  with the store key: ``vigie.stores.meta`` and incident response read it unchanged;
- ``data/<table>/run=<id>/``: one version of a table, Parquet with modular encryption
  (every column and the footer; keys from the keyfile's store key, ``vigie.spark.kms``),
  by day (``vigie_day=YYYY-MM-DD/``) for event tables;
- ``manifest.json``: which version of each table is current. A run writes its versions
  beside the old ones and then replaces the manifest in one rename: a reader sees the
  whole run or none of it.

Everything is 0600 in 0700 folders. ``read_table`` reads a table on one machine (pyarrow,
with the same key wrapping as ``VigieKms.java``); ``local_store`` loads the lake into a
temporary encrypted DuckDB store for the KPI engine.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa

from vigie.errors import KeyfileError, StoreError
from vigie.keys import Keys
from vigie.spark import kms
from vigie.spark.tasks import DAY_COLUMN
from vigie.stores.duckdb_store import Store, q
from vigie.stores.meta import META, META_TABLES

MANIFEST = "manifest.json"
META_FILE = "_vigie.duckdb"
FORMAT = 1


@dataclass(frozen=True)
class Version:
    """One table as of one run: its folder (relative to the lake) and how it is cut. A table
    cut by day lists its day folders (``days``): a run writes again only the days it
    touched, the others stay where an earlier run wrote them."""

    path: str
    run: int
    rows: int
    days: dict[str, str] | None = None

    @property
    def by_day(self) -> bool:
        return self.days is not None

    @property
    def folders(self) -> list[str]:
        """The folders holding the version's files (relative to the lake)."""
        return sorted(self.days.values()) if self.days is not None else [self.path]


def is_lake(path: Path) -> bool:
    return path.is_dir() and (path / MANIFEST).exists()


def manifest(root: Path) -> dict[str, Version]:
    """The current version of each table (none before the first run)."""
    file = root / MANIFEST
    if not file.exists():
        return {}
    data = json.loads(file.read_text())
    if data.get("format") != FORMAT:
        raise StoreError(
            f"{file}: lake format {data.get('format')}, this vigie reads {FORMAT}.",
            hint="Use the vigie version that wrote it, or sync into a new folder.",
        )
    return {name: Version(**v) for name, v in data["tables"].items()}


def write_manifest(root: Path, run_id: int, tables: dict[str, Version]) -> None:
    """Replace the manifest in one rename (after its contents are on disk)."""
    data = {"format": FORMAT, "run": run_id,
            "tables": {n: v.__dict__ for n, v in sorted(tables.items())}}  # fmt: skip
    tmp = root / f".{MANIFEST}.{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        json.dump(data, out, indent=1)
        out.flush()
        os.fsync(out.fileno())
    tmp.replace(root / MANIFEST)
    dir_fd = os.open(root, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def remove_stale(root: Path, keep: dict[str, Version], previous: dict[str, Version]) -> None:
    """Remove folders of table versions neither current nor previous (a reader that read the
    previous manifest may still be reading those), and tables no longer copied."""
    data = root / "data"
    if not data.exists():
        return
    wanted = {f for v in (*keep.values(), *previous.values()) for f in v.folders}
    for table in data.iterdir():
        for version in table.iterdir():
            rel = str(version.relative_to(root))
            if rel in wanted:
                continue
            inner = [w for w in wanted if w.startswith(rel + "/")]
            if not inner:
                shutil.rmtree(version, ignore_errors=True)
                continue
            for day in version.iterdir():  # days of this run that a later run wrote again
                if day.is_dir() and str(day.relative_to(root)) not in wanted:
                    shutil.rmtree(day, ignore_errors=True)
        if not any(table.iterdir()):
            table.rmdir()


def open_meta(root: Path, keys: Keys, *, create: bool = False, read_only: bool = False) -> Store:
    if not create and not is_lake(root) and not (root / META_FILE).exists():
        raise StoreError(f"No lake at {root}.", hint="Run `vigie sync --engine spark` first.")
    root.mkdir(mode=0o700, parents=True, exist_ok=True)
    return Store(root / META_FILE, keys, create=create, read_only=read_only)


# -- one-machine reads ----------------------------------------------------------------------


def _decryption(keys: Keys) -> Any:
    import pyarrow.dataset as ds
    import pyarrow.parquet.encryption as pe

    token = kms.access_token(keys)

    class Client(pe.KmsClient):  # type: ignore[misc]
        def __init__(self, config: Any) -> None:
            super().__init__()

        def wrap_key(self, key_bytes: bytes, master_key_identifier: str) -> str:
            return kms.wrap(token, key_bytes, master_key_identifier)

        def unwrap_key(self, wrapped_key: str, master_key_identifier: str) -> bytes:
            try:
                return kms.unwrap(token, wrapped_key, master_key_identifier)
            except Exception:
                raise KeyfileError(
                    f"The lake cannot be read with this store key (key id {keys.store_key_id}).",
                    hint="Use the keyfile the lake was built with.",
                ) from None

    factory = pe.CryptoFactory(lambda config: Client(config))
    config = ds.ParquetDecryptionConfig(
        factory, pe.KmsConnectionConfig(), pe.DecryptionConfiguration()
    )
    return ds.ParquetFileFormat(
        default_fragment_scan_options=ds.ParquetFragmentScanOptions(decryption_config=config)
    )


def read_table(root: Path, keys: Keys, version: Version, uuids: set[str]) -> pa.Table:
    """One table version, decrypted, pseudonyms as UUIDs (as a DuckDB store types them)."""
    import pyarrow.dataset as ds

    folder = root / version.path
    files = [str(f) for d in version.folders for f in sorted((root / d).rglob("*.parquet"))]
    try:
        data = ds.dataset(files, format=_decryption(keys)).to_table()
    except (OSError, pa.ArrowException) as exc:
        text = keys.scrub(str(exc)).splitlines()[0]
        raise StoreError(f"Cannot read {folder}: {text}", hint="Check the lake's folder.") from None
    if DAY_COLUMN in data.column_names:
        data = data.drop_columns([DAY_COLUMN])
    for i, name in enumerate(data.column_names):
        if name in uuids:
            fixed = data.column(i).cast(pa.binary(16))
            chunks = [pa.ExtensionArray.from_storage(pa.uuid(), c) for c in fixed.chunks]
            data = data.set_column(i, name, pa.chunked_array(chunks, pa.uuid()))
    return data


def uuid_columns(meta: Store) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for table, column in meta.rows(
        f"SELECT table_name, column_name FROM {META}.columns WHERE store_type = 'UUID'"
    ):
        out.setdefault(table, set()).add(column)
    return out


@contextmanager
def reading(path: Path, keys: Keys) -> Iterator[Store]:
    """A store to read: a DuckDB store opened read-only, or a lake loaded into a temporary
    one (``local_store``)."""
    if is_lake(path):
        with local_store(path, keys) as store:
            yield store
    else:
        with Store(path, keys, read_only=True) as store:
            yield store


@contextmanager
def local_store(root: Path, keys: Keys) -> Iterator[Store]:
    """The lake loaded into a temporary encrypted DuckDB store (its metadata and every
    current table), for the KPI engine on one machine; removed on exit."""
    versions = manifest(root)
    with open_meta(root, keys, read_only=True) as meta:
        uuids = uuid_columns(meta)
        histories = [t for (t,) in meta.rows(
            "SELECT table_name FROM duckdb_tables() WHERE database_name = 'store' "
            f"AND schema_name = '{META}' AND starts_with(table_name, 'deleted__')"
        )]  # fmt: skip
        meta_rows = {
            t: meta.con.execute(f"SELECT * FROM {META}.{q(t)}").to_arrow_table()
            for t in (*META_TABLES, *histories)
        }
    with tempfile.TemporaryDirectory(prefix="vigie-lake-") as tmp:
        path = Path(tmp) / "vigie.duckdb"
        store = Store(path, keys, create=True)
        try:
            with store.transaction() as con:
                con.execute(f"DELETE FROM {META}.meta")
                for name, rows in meta_rows.items():
                    con.register("vigie_rows", rows)
                    if name in META_TABLES:
                        con.execute(f"INSERT INTO {META}.{name} SELECT * FROM vigie_rows")
                    else:  # a delete history
                        con.execute(f"CREATE TABLE {META}.{q(name)} AS SELECT * FROM vigie_rows")
                    con.unregister("vigie_rows")
                for name, version in versions.items():
                    con.register(
                        "vigie_rows", read_table(root, keys, version, uuids.get(name, set()))
                    )
                    con.execute(f"CREATE TABLE {q(name)} AS SELECT * FROM vigie_rows")
                    con.unregister("vigie_rows")
            yield store
        finally:
            store.close()
