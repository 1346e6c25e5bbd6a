"""DuckDB extensions shipped as PyPI packages, loaded from disk (never downloaded).

Each ``duckdb-extension-*`` package is version-locked to ``duckdb`` (pinned together in
pyproject.toml). DuckDB checks an extension's file name against its internal name, so the
postgres, mysql and sqlite extensions are linked under their ``*_scanner`` names in a
private folder first.
"""

from __future__ import annotations

import atexit
import importlib
import shutil
import tempfile
from functools import cache
from pathlib import Path

import duckdb

from vigie.errors import StoreError

_PACKAGES = {
    "httpfs": ("duckdb_extension_httpfs", "httpfs", "httpfs"),
    "postgres": ("duckdb_extension_postgres", "postgres", "postgres_scanner"),
    "mysql": ("duckdb_extension_mysql", "mysql", "mysql_scanner"),
    "sqlite": ("duckdb_extension_sqlite", "sqlite", "sqlite_scanner"),
}


@cache
def _folder() -> Path:
    """A private folder of links, removed when the process ends (nothing is left in /tmp)."""
    folder = Path(tempfile.mkdtemp(prefix="vigie-ext-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    return folder


@cache
def extension_path(name: str) -> Path:
    package, stem, loaded_as = _PACKAGES[name]
    try:
        module = importlib.import_module(package)
    except ImportError:
        raise StoreError(
            f"The DuckDB extension package '{package.replace('_', '-')}' is not installed.",
            hint=f"pip install '{package.replace('_', '-')}=={duckdb.__version__}'",
        ) from None
    base = Path(module.__file__ or "").parent / "extensions" / f"v{duckdb.__version__}"
    source = base / f"{stem}.duckdb_extension"
    if not source.exists():
        raise StoreError(
            f"{package} has no build for duckdb {duckdb.__version__} ({source}).",
            hint="Install the extension package of the same version as duckdb.",
        )
    if loaded_as == stem:
        return source
    link = _folder() / f"{loaded_as}.duckdb_extension"
    if not link.exists():
        link.symlink_to(source)
    return link


def load_extension(con: duckdb.DuckDBPyConnection, name: str) -> None:
    """Load from disk; DuckDB checks the file's signature (unsigned extensions stay
    refused: vigie never sets ``allow_unsigned_extensions``)."""
    con.execute(f"LOAD '{extension_path(name)}'")
