"""Whether metrics fit a store (their facts read its replica and count people), and the
names their rollups have in it."""

from __future__ import annotations

from vigie.kpi.factsql import PERSON_DOMAIN, tables_read, user_source
from vigie.kpi.load import MetricsError
from vigie.kpi.model import Fact, Metrics
from vigie.stores.duckdb_store import Store
from vigie.stores.meta import META


def check_against_store(store: Store, metrics: Metrics, facts: list[Fact] | None = None) -> None:
    """The facts read only the store's replica tables, and each one's ``user`` is a copy
    of a stored column pseudonymized in the person's domain (so k counts people)."""
    tables = {t for (t,) in store.rows(
        "SELECT table_name FROM duckdb_tables() WHERE database_name = 'store' "
        "AND schema_name = 'main'"
    )}  # fmt: skip
    check_against(store, tables, metrics, facts)


def check_against(meta: Store, tables: set[str], metrics: Metrics,
                  facts: list[Fact] | None = None) -> None:  # fmt: skip
    """``check_against_store`` for a store holding ``tables``, described in ``meta``'s
    column records (a lake's tables are Parquet, its records in a DuckDB file)."""
    problems = []
    for fact in facts if facts is not None else list(metrics.facts.values()):
        unknown = sorted(tables_read(fact) - tables)
        if unknown:
            problems.append(f"{fact.where}: fact '{fact.name}' reads {', '.join(unknown)}, "
                            "not a table of the store's replica.")  # fmt: skip
            continue
        source = user_source(fact)
        spec = source and meta.rows(
            f"SELECT spec FROM {META}.columns WHERE table_name = ? AND column_name = ?",
            list(source),
        )
        if not spec or spec[0][0] != f"pseudonymize: {PERSON_DOMAIN}":
            shown = f"{source[0]}.{source[1]}" if source else "a computed value"
            problems.append(
                f"{fact.where}: fact '{fact.name}': user '{fact.user}' comes from {shown}, not "
                f"a column pseudonymized in the '{PERSON_DOMAIN}' domain: k would not count "
                "people."
            )
    if problems:
        raise MetricsError(
            "The metrics do not fit this store:\n  " + "\n  ".join(problems),
            hint="Facts read the replica's tables by their plain names; user: must be the "
            "person's pseudonym (e.g. d.user_id).",
        )


def rollup_name(kpi: str, dims: tuple[str, ...]) -> str:
    return f"{kpi}__{'__'.join(dims) or 'all'}"
