"""What DuckDB spills to disk stays beside the store, encrypted: never ./.tmp in clear."""

from __future__ import annotations

import os
from pathlib import Path

from vigie.keys import init_keyfile, load_keys
from vigie.stores.duckdb_store import Store


def test_spilled_rows_are_encrypted_beside_the_store(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # DuckDB's default spill folder would be ./.tmp
    init_keyfile(tmp_path / "keys")
    keys = load_keys(tmp_path / "keys")
    store = tmp_path / "store" / "vigie.duckdb"
    secret = "needle-4f1c9a"
    seen = []
    with Store(store, keys, create=True) as s:
        s.con.execute("SET memory_limit = '64MB'")
        s.con.execute("SET preserve_insertion_order = false")
        s.con.execute(
            f"CREATE TEMP TABLE big AS SELECT i, '{secret}' || i AS v FROM range(3000000) t(i)"
        )
        s.rows("SELECT v, COUNT(*) FROM big GROUP BY v ORDER BY v LIMIT 1")  # spills
        for root, _, files in os.walk(s.spill_path):
            seen += [os.path.join(root, f) for f in files]
        spilled = [Path(f).read_bytes() for f in seen]
    assert not (tmp_path / ".tmp").exists()
    assert seen, "the query did not spill: nothing was tested"
    assert all(secret.encode() not in blob for blob in spilled)
    assert not s.spill_path.exists() or not any(s.spill_path.iterdir())  # removed at close
