"""What a sync changed in a fact: its rows gained and lost, as signed rows.

A fact whose SQL is a select-project-join (one ``SELECT`` over tables joined by inner
joins, with a ``WHERE``, no aggregate, window, ``DISTINCT``, ``WITH``, subquery or set
operation) changes by exactly

    F(new) - F(old) = sum over its tables i of F(new_1..new_i-1, delta_i, old_i+1..old_n)

where ``delta_i`` holds each row of table i the runs added (+1) or took away (-1). The
sync keeps the stored version of every row it replaced or deleted (``stores.meta``'s
change log), so old and delta are both plain SQL over the store. A row whose replacement
differs only in columns the fact does not read cancels out, so a device whose last
connection time moved costs nothing. Any other fact is rebuilt in full
(``incremental_shape`` says why).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING

from vigie.kpi.model import Fact
from vigie.stores.meta import REPLACED_BY, log_table, quote

if TYPE_CHECKING:
    from sqlglot import exp

SIGN = "_vigie_sign"


@dataclass(frozen=True)
class Shape:
    """A select-project-join fact: the tables it reads, by alias, and per alias the
    columns it reads (None: every column)."""

    tables: tuple[tuple[str, str], ...]  # (alias, table)
    columns: dict[str, frozenset[str] | None]

    @property
    def names(self) -> frozenset[str]:
        return frozenset(t for _, t in self.tables)


@cache
def incremental_shape(fact: Fact) -> Shape | str:
    """The fact's shape, or why it is not a select-project-join (a sentence)."""
    import sqlglot
    from sqlglot import exp

    query = sqlglot.parse_one(fact.sql, read="duckdb")
    if not isinstance(query, exp.Select):
        return "its SQL is not a single SELECT"
    clauses = {"with": "WITH", "with_": "WITH", "group": "GROUP BY", "having": "HAVING",
               "distinct": "DISTINCT", "limit": "LIMIT", "qualify": "QUALIFY"}  # fmt: skip
    for key, what in clauses.items():
        if query.args.get(key):
            return f"it uses {what}"
    for node in query.walk():
        if isinstance(node, exp.AggFunc | exp.Window):
            return "it aggregates"
        if isinstance(node, exp.Subquery | exp.Union | exp.Except | exp.Intersect) or (
            isinstance(node, exp.Select) and node is not query
        ):
            return "it has a subquery"
        if isinstance(node, exp.Func) and _volatile(node):
            return "it calls a function whose value changes by itself (now, random...)"
    from_ = query.args.get("from") or query.args.get("from_")
    items = [from_.this] if from_ is not None else []
    for join in query.args.get("joins") or []:
        if join.side or join.kind not in ("", "INNER") or join.args.get("using"):
            return "it has a join that is not an inner join ON a condition"
        items.append(join.this)
    tables: list[tuple[str, str]] = []
    for item in items:
        if not isinstance(item, exp.Table):
            return "it reads something that is not a table"
        tables.append(((item.alias_or_name).lower(), item.name.lower()))
    if not tables or len({a for a, _ in tables}) != len(tables):
        return "its tables have no distinct names"
    return Shape(tuple(tables), _columns_read(query, tables))


@cache
def partners(fact: Fact, column: str) -> tuple[tuple[str, str], ...]:
    """Tables and columns that hold every value of the select-project-join fact's output
    ``column``: it is a plain column equal, by an inner join's ``=``, to theirs (the
    fact's ``user_id``, ``d.user_id``, joined on ``u.id = d.user_id``: users.id). A value
    no longer there has no row in the fact."""
    import sqlglot
    from sqlglot import exp

    shape = incremental_shape(fact)
    if not isinstance(shape, Shape):
        return ()
    query = sqlglot.parse_one(fact.sql, read="duckdb")
    source = next((p.unalias() for p in query.expressions if p.alias_or_name == column), None)
    if not isinstance(source, exp.Column) or not source.table:
        return ()
    pairs = _equalities(query)
    tables = dict(shape.tables)
    mine = (source.table.lower(), source.name.lower())
    found = []
    for a, b in pairs:
        ends = [(a.table.lower(), a.name.lower()), (b.table.lower(), b.name.lower())]
        if mine in ends:
            alias, name = ends[1 - ends.index(mine)]
            if alias != mine[0] and alias in tables:
                found.append((tables[alias], name))
    return tuple(found)


_VOLATILE = {"random", "rand", "uuid", "gen_random_uuid", "now", "current_timestamp",
             "current_date", "current_time", "get_current_timestamp", "today", "nextval",
             "currval", "localtimestamp", "transaction_timestamp"}  # fmt: skip


def _volatile(node: exp.Func) -> bool:
    from sqlglot import exp

    name = str(node.name if isinstance(node, exp.Anonymous) else node.sql_name()).lower()
    return name in _VOLATILE


def _columns_read(
    query: exp.Select, tables: list[tuple[str, str]]
) -> dict[str, frozenset[str] | None]:
    from sqlglot import exp

    read: dict[str, set[str] | None] = {alias: set() for alias, _ in tables}
    for node in query.walk():
        if isinstance(node, exp.Star) or (
            isinstance(node, exp.Column) and isinstance(node.this, exp.Star)
        ):
            owner = node.table.lower() if isinstance(node, exp.Column) else ""
            for alias in read:
                if not owner or owner == alias:
                    read[alias] = None
        elif isinstance(node, exp.Column):
            owner = node.table.lower()
            if not owner:  # unqualified: it may come from any of the tables
                for alias in read:
                    if read[alias] is not None:
                        read[alias].add(node.name.lower())  # type: ignore[union-attr]
            elif owner in read and read[owner] is not None:
                read[owner].add(node.name.lower())  # type: ignore[union-attr]
    return {a: (frozenset(c) if c is not None else None) for a, c in read.items()}


# Where the rows of the first table that can meet a term's other tables lie: given SQL
# for the join key values they must have (``Indexed``), a condition on the first table
# (its time range), "false" when none has a row, or None when it cannot tell.
Narrow = Callable[[str], str | None]


@dataclass(frozen=True)
class Indexed:
    """A select-project-join fact whose first table (the large one: events) joins the
    others on one of its columns and gives the fact its time: per value of that column,
    the days it has rows on are kept (``kpi.refresh``), so that a term joining the whole
    first table to a few changed rows of another reads only those days."""

    table: str
    alias: str
    key: str  # the first table's join column
    time: str  # its column that is the fact's time


@cache
def indexed(fact: Fact) -> Indexed | None:
    """The fact's first table, its join column and time column, if it has one of each."""
    import sqlglot
    from sqlglot import exp

    shape = incremental_shape(fact)
    if not isinstance(shape, Shape) or len(shape.tables) < 2:
        return None
    alias, table = shape.tables[0]
    query = sqlglot.parse_one(fact.sql, read="duckdb")
    time = next((p.unalias() for p in query.expressions if p.alias_or_name == fact.time), None)
    if not isinstance(time, exp.Column) or time.table.lower() != alias:
        return None
    keys = {col.name for a, b in _equalities(query) for col, other in ((a, b), (b, a))
            if col.table.lower() == alias and other.table.lower() != alias}  # fmt: skip
    return Indexed(table, alias, keys.pop(), time.name) if len(keys) == 1 else None


def _equalities(query: exp.Expr) -> list[tuple[exp.Column, exp.Column]]:
    """The ``a.x = b.y`` conjuncts of the query's inner joins and WHERE."""
    from sqlglot import exp

    conditions = [j.args.get("on") for j in query.args.get("joins") or []]
    conditions.append((query.args.get("where") or exp.Where(this=None)).this)
    return [pair for condition in conditions for pair in _equalities_of(condition)]


def delta_sql(fact: Fact, shape: Shape, since: int, changed: set[str],
              columns: dict[str, list[str]],
              narrow: Narrow | None = None) -> str | None:  # fmt: skip
    """SQL for the fact's rows gained (``SIGN`` > 0) and lost (< 0) since run ``since``,
    given the tables that have changes (``changed``) and every table's stored columns.
    None when nothing it reads changed. ``narrow``: see ``Narrow`` (``indexed`` facts)."""
    import sqlglot
    from sqlglot import exp

    terms = []
    first = indexed(fact) if narrow else None
    for i, (alias, table) in enumerate(shape.tables):
        if table not in changed:
            continue
        query = sqlglot.parse_one(fact.sql, read="duckdb")
        assert isinstance(query, exp.Select)
        for j, node in enumerate(_table_nodes(query)):
            other, name = shape.tables[j]
            if j == i:
                sub = delta_rows(name, since, _read(shape, other, columns[name]))
            elif j > i and name in changed:
                sub = _old(name, since, _read(shape, other, columns[name]))
            else:
                continue
            alias_of = exp.TableAlias(this=exp.to_identifier(other))
            node.replace(exp.Subquery(this=sqlglot.parse_one(sub, read="duckdb"), alias=alias_of))
        if first is not None and i > 0 and narrow is not None:
            where = narrow(_keys_sql(query, first))
            if where == "false":
                continue  # no row of the first table meets this term's changed rows
            if where:
                query = query.where(where, dialect="duckdb")
        query = query.select(exp.column(SIGN, table=alias).as_(SIGN))
        terms.append(query.sql(dialect="duckdb"))
    return " UNION ALL ".join(f"({t})" for t in terms) if terms else None


def _keys_sql(query: exp.Select, first: Indexed) -> str:
    """SQL for the values of the first table's join column that rows of the term's other
    tables can meet: those tables joined without it (a superset: conditions on the first
    table are left out)."""
    import sqlglot
    from sqlglot import exp

    def mine(node: exp.Expr) -> bool:  # an unqualified column may be the first table's
        return any(c.table.lower() in ("", first.alias) for c in node.find_all(exp.Column))

    def kept(condition: exp.Expr | None) -> list[exp.Expr]:
        if condition is None:
            return []
        parts = condition.flatten() if isinstance(condition, exp.And) else [condition]
        return [p for p in parts if not mine(p)]

    joins = query.args.get("joins") or []
    partner = next(b if a.table.lower() == first.alias else a for a, b in _equalities(query)
                   if first.alias in (a.table.lower(), b.table.lower())
                   and first.key in (a.name, b.name))  # fmt: skip
    keys = sqlglot.select(partner.copy().as_("k")).from_(joins[0].this.copy()).distinct()
    where = kept(joins[0].args.get("on"))
    for join in joins[1:]:
        on = kept(join.args.get("on"))
        keys = keys.join(join.this.copy(), on=exp.and_(*on) if on else exp.true())
    if where:
        keys = keys.where(exp.and_(*where))
    return keys.sql(dialect="duckdb")


def _table_nodes(query: exp.Select) -> list[exp.Table]:
    from_ = query.args.get("from") or query.args.get("from_")
    assert from_ is not None  # a select-project-join reads a table
    return [from_.this, *(j.this for j in query.args.get("joins") or [])]


def _read(shape: Shape, alias: str, stored: list[str]) -> list[str]:
    """The stored columns the fact reads through ``alias`` (all when it reads ``*``)."""
    wanted = shape.columns[alias]
    return [c for c in stored if wanted is None or c.lower() in wanted]


def _old(table: str, since: int, read: list[str]) -> str:
    """The table as it was after run ``since``, on the columns ``read``: rows not touched
    since, and the stored versions of those replaced or deleted since."""
    t, log = quote(table), log_table(table)
    cols = ", ".join(quote(c) for c in read)
    return (
        f"SELECT {cols} FROM {t} WHERE _vigie_run <= {since} UNION ALL "
        f"SELECT {cols} FROM {log} WHERE _vigie_run <= {since} AND {REPLACED_BY} > {since}"
    )


def named_columns(fact: Fact) -> frozenset[str] | None:
    """Every column name the fact's SQL mentions, lower case, whatever its table (None: it
    reads ``*``): a superset of what its refresh reads of any table's change log."""
    import sqlglot
    from sqlglot import exp

    names: set[str] = set()
    for node in sqlglot.parse_one(fact.sql, read="duckdb").walk():
        if isinstance(node, exp.Star):
            return None
        if isinstance(node, exp.Column):
            if isinstance(node.this, exp.Star):
                return None
            names.add(node.name.lower())
    return frozenset(names)


def delta_rows(table: str, since: int, read: list[str]) -> str:
    """The rows runs after ``since`` added (+n) and took away (-n), on the columns the
    fact reads: a row replaced by one equal on those columns cancels out."""
    t, log = quote(table), log_table(table)
    cols = ", ".join(quote(c) for c in read)
    return (
        f"SELECT {cols}, SUM(s)::BIGINT AS {SIGN} FROM (SELECT {cols}, 1 AS s FROM {t} "
        f"WHERE _vigie_run > {since} UNION ALL SELECT {cols}, -1 AS s FROM {log} WHERE "
        f"_vigie_run <= {since} AND {REPLACED_BY} > {since}) GROUP BY ALL HAVING SUM(s) <> 0"
    )


COUNT = "_vigie_n"  # a kept WITH query's rows per key: a group whose count falls to 0 goes


@dataclass(frozen=True)
class KeyedCte:
    """A ``WITH`` query of a fact that aggregates one table by one of its columns: kept
    as a table (with its rows per key, ``COUNT``), and brought forward by the groups whose
    keys have rows changed (a device's first and last connection).

    When every aggregate is a ``MIN``, ``MAX`` or ``COUNT`` (``aggs``), a group is merged
    with its changed rows alone: a count adds them, an extreme takes the gained values
    unless a lost value reached it; a group whose rows are all gone is dropped. Only the
    groups where a lost row held an extreme are computed again from the table."""

    name: str
    table: str
    alias: str  # of the table in the query
    key: str
    sql: str  # the query, ``GROUP BY`` its key
    where: str | None  # its WHERE
    reads: frozenset[str]  # the table's columns it reads
    aggs: tuple[tuple[str, str, str], ...] | None  # (name, min|max|count, argument or *)

    @property
    def kept_sql(self) -> str:
        """The query with its rows per key, as kept."""
        import sqlglot
        from sqlglot import exp

        query = sqlglot.parse_one(self.sql, read="duckdb")
        assert isinstance(query, exp.Select)
        return query.select(f"COUNT(*) AS {COUNT}").sql(dialect="duckdb")


@cache
def keyed_ctes(fact: Fact) -> tuple[KeyedCte, ...]:
    """The fact's ``WITH`` queries of the form SELECT key, aggregates FROM table [WHERE
    ...] GROUP BY key, where key is a plain column of that one table."""
    import sqlglot
    from sqlglot import exp

    query = sqlglot.parse_one(fact.sql, read="duckdb")
    with_ = query.args.get("with") or query.args.get("with_")
    found = []
    for cte in with_.expressions if with_ is not None else []:
        body = cte.this
        if not isinstance(body, exp.Select) or body.args.get("with") or body.args.get("with_"):
            continue
        from_ = body.args.get("from") or body.args.get("from_")
        group = body.args.get("group")
        plain = (from_ is not None and not body.args.get("joins")
                 and isinstance(from_.this, exp.Table) and group is not None
                 and len(group.expressions) == 1 and isinstance(group.expressions[0], exp.Column)
                 and not body.args.get("having") and not body.args.get("limit")
                 and not body.args.get("distinct"))  # fmt: skip
        if not plain or any(_unkeyable(n) for n in body.walk()):
            continue
        assert group is not None and from_ is not None
        key = group.expressions[0].name
        if not any(p.alias_or_name == key and isinstance(p.unalias(), exp.Column)
                   for p in body.expressions):  # fmt: skip
            continue
        found.append(KeyedCte(
            cte.alias_or_name, from_.this.name, from_.this.alias_or_name, key,
            body.sql(dialect="duckdb"), *_where_and_reads(body),
            _mergeable(body, key)))  # fmt: skip
    return tuple(found)


def _mergeable(body: exp.Select, key: str) -> tuple[tuple[str, str, str], ...] | None:
    """The query's aggregates when each is MIN, MAX or COUNT of one argument (None
    otherwise: its changed groups are computed again from the table)."""
    from sqlglot import exp

    aggs = []
    for p in body.expressions:
        node = p.unalias()
        if isinstance(node, exp.Column) and p.alias_or_name == key:
            continue
        kind = {exp.Min: "min", exp.Max: "max", exp.Count: "count"}.get(type(node))
        arg = node.this if kind else None
        if kind is None or arg is None or isinstance(arg, exp.Distinct) or node.expressions:
            return None
        argument = "*" if isinstance(arg, exp.Star) else arg.sql("duckdb")
        aggs.append((p.alias_or_name, kind, argument))
    return tuple(aggs)


def _unkeyable(node: exp.Expr) -> bool:
    from sqlglot import exp

    volatile = isinstance(node, exp.Func) and _volatile(node)
    return volatile or isinstance(node, exp.Subquery | exp.Window)


def with_kept(fact: Fact, kept: dict[str, str]) -> str:
    """The fact's SQL reading each keyed ``WITH`` query from its kept table instead."""
    return replace_ctes(fact.sql, {name: f"SELECT * EXCLUDE ({COUNT}) FROM {table}"
                                   for name, table in kept.items()})  # fmt: skip


@dataclass(frozen=True)
class Link:
    """A source joined to a keyed fact's first table by an equality with one of its
    columns: a synced table, or a kept keyed ``WITH`` query (``KeyedCte``)."""

    name: str
    kept: bool
    column: str  # its column in the equality
    first_column: str  # the first table's column it equals


@dataclass(frozen=True)
class Scalar:
    """A ``WITH`` query of aggregates without ``GROUP BY`` (one row: the data's end), cross
    joined, whose columns the fact only compares with expressions of its first table."""

    name: str
    sql: str  # its query
    bounds: tuple[tuple[str, str], ...]  # (its column, an expression compared with it)
    table: str | None = None  # the one table it reads (None: another source)
    alias: str = ""  # of that table in the query
    where: str | None = None  # its WHERE
    reads: frozenset[str] = frozenset()  # the table's columns it reads
    aggs: tuple[tuple[str, str, str], ...] | None = None  # MIN, MAX, COUNT: merged (KeyedCte)


@dataclass(frozen=True)
class KeyedFact:
    """A fact each of whose rows comes from one row of its first table (devices), carried
    as an output column (``output``, the first table's ``column``): the other sources are
    joined to that row (``links``) or are one-row ``WITH`` queries (``scalars``). The rows
    of a key can change only when a row it is made of changed, or when a one-row query
    moved across one of its compared expressions: so a refresh evaluates the fact again
    for those keys alone (``kpi.refresh``), not whole."""

    table: str
    alias: str
    column: str
    output: str
    links: tuple[Link, ...]
    scalars: tuple[Scalar, ...]


_COMPARISONS = ("LT", "LTE", "GT", "GTE", "EQ", "NEQ")


@cache
def keyed_fact(fact: Fact) -> KeyedFact | None:
    """The fact as a ``KeyedFact``, or None when it is not one (it is then compared whole)."""
    import sqlglot
    from sqlglot import exp

    query = sqlglot.parse_one(fact.sql, read="duckdb")
    if not isinstance(query, exp.Select) or any(
        query.args.get(k) for k in ("group", "having", "distinct", "limit", "qualify")
    ):
        return None
    with_ = query.args.get("with") or query.args.get("with_")
    bodies = {c.alias_or_name.lower(): c.this for c in (with_.expressions if with_ else [])}
    kept = {c.name.lower() for c in keyed_ctes(fact)}
    from_ = query.args.get("from") or query.args.get("from_")
    if from_ is None or not isinstance(from_.this, exp.Table) or from_.this.name.lower() in bodies:
        return None
    first = from_.this.alias_or_name.lower()
    if any(t.name.lower() in bodies for body in bodies.values() for t in body.find_all(exp.Table)):
        return None  # a WITH query reading another: kept and one-row queries stand alone
    joins = query.args.get("joins") or []
    parts = [*query.expressions, *(j.args.get("on") for j in joins), query.args.get("where")]
    if not _plain(list(filter(None, parts))):
        return None
    aliases, links, scalars = {first}, list[Link](), dict[str, str]()
    for join in joins:
        target = join.this
        if not isinstance(target, exp.Table) or join.args.get("using"):
            return None
        name, alias = target.name.lower(), target.alias_or_name.lower()
        side, kind = (join.side or "").upper(), (join.kind or "").upper()
        if alias in aliases:
            return None
        aliases.add(alias)
        if name in bodies and name not in kept:
            if kind != "CROSS" or side or join.args.get("on") or not _one_row(bodies[name]):
                return None
            scalars[alias] = name
            continue
        if side not in ("", "LEFT") or kind not in ("", "INNER", "OUTER"):
            return None
        pair = next(((a, b) if a.table.lower() == alias else (b, a)
                     for a, b in _equalities_of(join.args.get("on"))
                     if {a.table.lower(), b.table.lower()} == {alias, first}), None)  # fmt: skip
        if pair is None:
            return None
        if name in kept and any(link.name == name for link in links):
            return None  # a kept query joined twice: read for the keys, it serves one join
        links.append(Link(name, name in kept, pair[0].name, pair[1].name))
    columns = [c for p in parts if p is not None for c in p.find_all(exp.Column)]
    if any(c.table.lower() not in aliases for c in columns):
        return None
    bounds: dict[str, list[tuple[str, str]]] = {a: [] for a in scalars}
    for col in columns:
        if col.table.lower() not in scalars:
            continue
        parent = col.parent
        if type(parent).__name__ not in _COMPARISONS:
            return None
        other = parent.expression if parent.this is col else parent.this
        if any(c.table.lower() != first for c in other.find_all(exp.Column)):
            return None
        bounds[col.table.lower()].append((col.name, other.sql(dialect="duckdb")))
    key = _key_output(query, first, {lk.first_column for lk in links if lk.kept})
    if key is None:
        return None
    return KeyedFact(from_.this.name, first, key[1], key[0], tuple(links),
                     tuple(_scalar(scalars[a], bodies[scalars[a]], b)
                           for a, b in bounds.items()))  # fmt: skip


def _scalar(name: str, body: exp.Select, bounds: list[tuple[str, str]]) -> Scalar:
    """A one-row ``WITH`` query; mergeable from changed rows when it reads one table and
    its aggregates are ``MIN``, ``MAX`` and ``COUNT``."""
    from sqlglot import exp

    from_ = body.args.get("from") or body.args.get("from_")
    plain = (from_ is not None and isinstance(from_.this, exp.Table)
             and not body.args.get("joins"))  # fmt: skip
    return Scalar(
        name, body.sql(dialect="duckdb"), tuple(bounds),
        from_.this.name if plain else None,  # type: ignore[union-attr]
        from_.this.alias_or_name if plain else "",  # type: ignore[union-attr]
        *_where_and_reads(body), _mergeable(body, "") if plain else None,
    )  # fmt: skip


def _where_and_reads(body: exp.Select) -> tuple[str | None, frozenset[str]]:
    """A one-table query's WHERE (SQL) and the columns it reads."""
    from sqlglot import exp

    where = body.args.get("where")
    return (where.this.sql(dialect="duckdb") if where else None,
            frozenset(c.name.lower() for c in body.find_all(exp.Column)))  # fmt: skip


def _plain(parts: list[exp.Expr]) -> bool:
    """No aggregate, window, subquery, star or volatile function; every column qualified."""
    from sqlglot import exp

    for part in parts:
        for node in part.walk():
            if isinstance(node, exp.AggFunc | exp.Window | exp.Subquery | exp.Select | exp.Star):
                return False
            if isinstance(node, exp.Func) and _volatile(node):
                return False
            if isinstance(node, exp.Column) and (not node.table or isinstance(node.this, exp.Star)):
                return False
    return True


def _one_row(body: exp.Expr) -> bool:
    """A SELECT of aggregates only, without GROUP BY: always exactly one row."""
    from sqlglot import exp

    clauses = ("group", "having", "limit", "distinct", "qualify", "with", "with_")
    if not isinstance(body, exp.Select) or any(body.args.get(k) for k in clauses):
        return False
    if any(isinstance(n, exp.Window | exp.Subquery) or (isinstance(n, exp.Func) and _volatile(n))
           for n in body.walk()):  # fmt: skip
        return False
    return all(isinstance(p.unalias(), exp.AggFunc) for p in body.expressions)


def _equalities_of(condition: exp.Expr | None) -> list[tuple[exp.Column, exp.Column]]:
    """The ``a.x = b.y`` conjuncts of one condition (both sides qualified columns)."""
    from sqlglot import exp

    if condition is None:
        return []
    conjuncts = condition.flatten() if isinstance(condition, exp.And) else [condition]
    return [(c.this, c.expression) for c in conjuncts
            if isinstance(c, exp.EQ) and all(isinstance(side, exp.Column) and side.table
                                             for side in (c.this, c.expression))]  # fmt: skip


def _key_output(query: exp.Select, first: str, joined: set[str]) -> tuple[str, str] | None:
    """(output name, first table column) of an output that is a column of the first
    table: preferably one a kept ``WITH`` query is joined on (a device's id), then one
    named ``id``, then the first."""
    from sqlglot import exp

    found = [(p.alias_or_name, p.unalias().name) for p in query.expressions
             if isinstance(p.unalias(), exp.Column)
             and p.unalias().table.lower() == first]  # fmt: skip
    ranked = sorted(found, key=lambda f: (f[1] not in joined, f[1].lower() != "id"))
    return ranked[0] if ranked else None


def replace_ctes(sql: str, bodies: dict[str, str]) -> str:
    """The SQL with the named ``WITH`` queries' bodies replaced."""
    import sqlglot

    query = sqlglot.parse_one(sql, read="duckdb")
    with_ = query.args.get("with") or query.args.get("with_")
    assert with_ is not None  # only called with the names of its WITH queries
    named = {name.lower(): body for name, body in bodies.items()}
    for cte in list(with_.expressions):
        if cte.alias_or_name.lower() in named:
            cte.set("this", sqlglot.parse_one(named[cte.alias_or_name.lower()], read="duckdb"))
    return query.sql(dialect="duckdb")
