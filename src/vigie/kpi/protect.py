"""One suppression pattern per fact, so that no sequence of answers pins a small cell.

The query space (``query.validate``) is the period total and one dimension at a time, for
whole periods that are over (``calendar``): hour (its total only) ⊂ day ⊂ week ⊂ month. The
pattern, the set of suppressed cells, is computed here for every publishable cell of a fact
at once, from the data and the store's sync horizon only; every answer, from the tables or
from a rollup, is read through it. Whatever an analyst asks, the cells they can see are
cells of this one protected table.

Why nothing shown pins a suppressed cell (docs/kpi.md has the long form). A cell resting on
fewer than k users (primary) is suppressed, and for each additive quantity of the fact
(rows, attempts, failures...) the planner records a *move*: a shift of that quantity between
rows that changes the primary cell and otherwise only suppressed or unpublished cells, and
that keeps every row's quantity nonnegative. Everything shown is then equally consistent
with the data and with the data after the move, so the linear program an attacker can write
from all answers has more than one solution for that cell. Moves used:

- value move in a day: quantity moved from value w to v of dimension d, all else fixed;
  changes (day,d,v), (day,d,w) and those two cells of the day's week and month;
- rectangle: value moves on two days of a week, opposite signs; week and month cancel;
- hour move in a day (hours publish only their total);
- time move between two small days of a week (all their cells suppressed);
- pure move: one more row, which changes every cell holding it.

Publication is monotone: a period is decided when it ends, and a decision suppresses only
cells of periods not yet published, so a cell once shown is never hidden later (a move
that would touch a shown cell is never chosen).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial

from vigie.errors import VigieError
from vigie.kpi import calendar
from vigie.kpi.model import Count, Fact, Metrics, Ratio, ShareWithin, Simple

Key = tuple[str, datetime, str | None, str | None]  # grain, period, dimension, value
PRIMARY = "fewer than k users"
SECONDARY = "complementary"


class ProtectionError(VigieError):
    """No move protects a small cell (a defect of the planner): nothing is answered."""

    exit_code = 1


@dataclass(frozen=True)
class Shape:
    """What a fact's KPIs count: the populations whose distinct users make k, and the
    boolean columns that say where each additive quantity has rows (None: every row)."""

    populations: tuple[str | None, ...]
    supports: tuple[str | None, ...]


@dataclass(frozen=True)
class Stats:
    users: tuple[int, ...]  # distinct users, per population
    mass: tuple[bool, ...]  # rows present, per support


@dataclass(frozen=True)
class Row:
    """One distinct row of a small day: hour, dimension values (as text), supports."""

    hour: datetime
    values: tuple[str | None, ...]
    mass: tuple[bool, ...]


@dataclass(frozen=True)
class Pattern:
    fact: str
    k: int
    until: datetime  # periods ending at or before this are published
    suppressed: dict[Key, str] = field(default_factory=dict)


def shape_of(metrics: Metrics, fact: Fact) -> Shape:
    populations: list[str | None] = []
    supports: list[str | None] = [None]
    for kpi in metrics.kpis.values():
        if kpi.fact.name != fact.name:
            continue
        populations.append(kpi.population)
        supports.append(kpi.population)
        for simple in simples(kpi.measure):
            if isinstance(simple, Count):
                supports.append(simple.column)
            supports.append(simple.where)
    return Shape(_unique(populations or [None]), _unique(supports))


def simples(measure: object) -> list[Simple]:
    if isinstance(measure, Ratio):
        return [measure.numerator, measure.denominator]
    if isinstance(measure, ShareWithin):
        return [measure.measure]
    return [measure]  # type: ignore[list-item]


def _unique(items: Iterable[str | None]) -> tuple[str | None, ...]:
    return tuple(dict.fromkeys(items))


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _filter(column: str | None) -> str:
    return f" FILTER (WHERE {_q(column)})" if column else ""


def columns_needed(fact: Fact, shape: Shape) -> list[str]:
    """The fact's columns a pattern reads (time, person, dimensions, populations...)."""
    named = [fact.time, fact.user, *fact.dimensions, *shape.populations, *shape.supports]
    return list(dict.fromkeys(c for c in named if c))


def cells_queries(fact: Fact, shape: Shape, source: str) -> list[str]:
    """Queries over ``source`` (a table of the fact's rows) giving every publishable cell
    with its distinct users per population and whether each quantity has rows there: the
    hours' totals, then per dimension (and for the totals) the day, week and month cells.
    Each reads the rows once into one row per (day, value, person), from which the three
    grains count people: distinct counting never holds more than one grouping at a time."""
    t, user = _q(fact.time), _q(fact.user)
    flags = [*(p and _q(p) for p in shape.populations), *(s and _q(s) for s in shape.supports)]
    names = [f"f{i}" for i in range(len(flags))]
    npop = len(shape.populations)
    ors = ", ".join(f"bool_or({f or 'true'}) AS {n}" for f, n in zip(flags, names, strict=True))
    again = ", ".join(f"bool_or({n}) AS {n}" for n in names)
    people = [f"COUNT(*) FILTER (WHERE {n})" for n in names[:npop]]
    counts = ", ".join(people + [f"bool_or({n})" for n in names[npop:]])
    out = [
        f"SELECT 'hour', p, NULL, NULL, {counts} FROM (SELECT date_trunc('hour', {t}) AS p, "
        f"{user}, {ors} FROM {source} GROUP BY ALL) GROUP BY p"
    ]
    for dim in [None, *fact.dimensions]:
        value = f"CAST({_q(dim)} AS VARCHAR)" if dim else "NULL"
        label = f"'{dim}'" if dim else "NULL"
        parts = [f"SELECT 'day', d, {label}, v, {counts} FROM people GROUP BY d, v"]
        for grain in ("week", "month"):
            period = calendar.period_sql(grain, "d")
            parts.append(
                f"SELECT '{grain}', p, {label}, v, {counts} FROM (SELECT {period} AS p, v, "
                f"{user}, {again} FROM people GROUP BY ALL) GROUP BY p, v"
            )
        out.append(
            f"WITH people AS MATERIALIZED (SELECT date_trunc('day', {t}) AS d, {value} AS v, "
            f"{user}, {ors} FROM {source} GROUP BY ALL) " + " UNION ALL ".join(parts)
        )
    return out


def rows_sql(fact: Fact, shape: Shape, source: str, days: int) -> str:
    """The distinct rows (hour, dimension values, supports) of ``days`` given days."""
    t = _q(fact.time)
    values = ", ".join(f"CAST({_q(d)} AS VARCHAR)" for d in fact.dimensions)
    mass = ", ".join(f"bool_or({_q(s) if s else 'true'})" for s in shape.supports)
    slots = ", ".join("?" for _ in range(days))
    return (
        f"SELECT date_trunc('hour', {t}) AS h, {values}, {mass} "
        f"FROM {source} WHERE date_trunc('day', {t}) IN ({slots}) GROUP BY ALL"
    )


Move = tuple[set[Key], int]  # the cells a move changes; the quantities it can shift (bits)


class Planner:
    """Decides the pattern period by period, in the order periods end."""

    def __init__(self, stats: dict[Key, Stats], dims: tuple[str, ...], until: datetime,
                 rows: dict[datetime, list[Row]] | None = None) -> None:  # fmt: skip
        self.stats = stats
        self.dims = dims
        self.until = until
        # a GROUP BY gives the rows in no fixed order, and moves that cost the same are
        # taken in row order: the same data must always give the same pattern
        self.rows = {day: sorted(rs, key=_row_order) for day, rs in (rows or {}).items()}
        self.suppressed: dict[Key, str] = {}
        self.published: set[Key] = set()
        self.covered: dict[Key, int] = defaultdict(int)
        self.mask = {key: _bits(s.mass) for key, s in stats.items()}
        self.weight = {key: max(s.users) + 1 for key, s in stats.items()}
        self.everything = (1 << len(next(iter(stats.values())).mass)) - 1 if stats else 0
        self.primary: set[Key] = set()
        self.ever: dict[tuple[str, str | None], int] = defaultdict(int)  # (dim, value) masks
        for (grain, _, dim, value), mask in self.mask.items():
            if grain == "month" and dim is not None:
                self.ever[(dim, value)] |= mask
        self.values: dict[tuple[str, datetime, str], list[Key]] = defaultdict(list)
        self.hours: dict[datetime, list[Key]] = defaultdict(list)
        self.days: dict[datetime, list[datetime]] = defaultdict(list)
        self.weeks: dict[datetime, list[datetime]] = defaultdict(list)
        for key in sorted(stats, key=_order):
            grain, period, dim, _ = key
            if grain == "hour":
                self.hours[calendar.midnight(period)].append(key)
            elif dim is not None:
                self.values[(grain, period, dim)].append(key)
            elif grain == "day":
                self.days[calendar.week_of(period)].append(period)
            elif grain == "week":
                self.weeks[calendar.month_of_week(period)].append(period)

    # -- the timeline ----------------------------------------------------------------

    def run(self, k: int) -> dict[Key, str]:
        """The pattern for k; run again with a larger k to get a pattern that only adds
        suppressions (so answers at two k's never show more than the smaller k's)."""
        self.primary = {key for key, s in self.stats.items() if any(0 < u < k for u in s.users)}
        self.published = set()
        for _, _, grain, label in sorted(self._closes()):
            getattr(self, f"_close_{grain}")(label)
        return dict(self.suppressed)

    def _closes(self) -> list[tuple[datetime, int, str, datetime]]:
        rank = {"day": 0, "week": 1, "month": 2}
        out = []
        for grain, period, dim, _ in self.stats:
            if grain in rank and dim is None:
                end = calendar.end_of(grain, period)  # type: ignore[arg-type]
                if end <= self.until:
                    out.append((end, rank[grain], grain, period))
        return out

    def _close_day(self, day: datetime) -> None:
        cells: list[Key] = [*self.hours[day], ("day", day, None, None)]
        cells += [c for d in self.dims for c in self.values[("day", day, d)]]
        self._suppress_primaries(cells)
        self._partner(self.hours[day])
        for dim in self.dims:
            self._partner(self.values[("day", day, dim)])
        self.published.update(cells)

    def _close_week(self, week: datetime) -> None:
        days = self.days[week]
        cells: list[Key] = [("week", week, None, None)]
        cells += [c for d in self.dims for c in self.values[("week", week, d)]]
        self._suppress_primaries(cells)
        for day in days:
            total: Key = ("day", day, None, None)
            if total in self.primary:
                self._protect(total, partial(self._small_day_moves, total, days))
        for day in days:  # after the small days: their moves may already cover a lone hour
            for hour in self.hours[day]:
                if hour in self.primary:
                    self._protect(hour, partial(self._hour_moves, day, hour))
            for dim in self.dims:
                for cell in self.values[("day", day, dim)]:
                    if cell in self.primary:
                        self._protect(cell, partial(self._day_value_moves, cell, days))
        for cell in cells[1:]:
            if cell in self.primary:
                self._protect(cell, partial(self._week_value_moves, cell, days))
        self.published.update(cells)

    def _close_month(self, month: datetime) -> None:
        total: Key = ("month", month, None, None)
        cells = [total, *(c for d in self.dims for c in self.values[("month", month, d)])]
        self._suppress_primaries(cells)
        for week in self.weeks[month]:
            small: Key = ("week", week, None, None)
            if small in self.primary:
                self._protect(small, partial(self._pure, small))
        for cell in cells[1:]:
            if cell in self.primary:
                self._protect(cell, partial(self._month_value_moves, cell))
        if total in self.primary:
            self._protect(total, partial(self._pure, total))
        self.published.update(cells)

    # -- moves -------------------------------------------------------------------------

    def _hour_moves(self, day: datetime, hour: Key) -> Iterator[Move]:
        for other in self.hours[day]:
            if other != hour and other in self.suppressed:
                yield {hour, other}, self._either(hour, other)
        yield from self._pure(hour)

    def _day_value_moves(self, cell: Key, days: list[datetime]) -> Iterator[Move]:
        _, day, dim, value = cell
        assert dim is not None
        partners = [o for o in self.values[("day", day, dim)] if o != cell and o in self.suppressed]
        for other in partners:  # rectangles first: they change no week or month cell
            for day2 in days:
                a2, b2 = ("day", day2, dim, value), ("day", day2, dim, other[3])
                if day2 != day and a2 in self.suppressed and b2 in self.suppressed:
                    yield {cell, other, a2, b2}, self._both(other, a2) | self._both(cell, b2)
        week = calendar.week_of(day)
        month = calendar.month_of_week(week)
        for other in partners:
            yield {cell, other, ("week", week, dim, value), ("week", week, dim, other[3]),
                   ("month", month, dim, value), ("month", month, dim, other[3])}, self._either(
                cell, other)  # fmt: skip

    def _week_value_moves(self, cell: Key, days: list[datetime]) -> Iterator[Move]:
        _, week, dim, value = cell
        assert dim is not None
        month = calendar.month_of_week(week)
        for _, a, b in self._suppressed_pairs(days, dim, value):
            other = b[3]
            for week2 in self.weeks[month]:  # a rectangle with an earlier week of the month
                pair = {("week", week2, dim, value), ("week", week2, dim, other)}
                if week2 >= week or not pair <= self.suppressed.keys():
                    continue
                for _, a2, b2 in self._suppressed_pairs(self.days[week2], dim, value, (other,)):
                    changed = {a, b, a2, b2, cell, ("week", week, dim, other)} | pair
                    yield changed, self._both(b, a2) | self._both(a, b2)
            yield {a, b, cell, ("week", week, dim, other), ("month", month, dim, value),
                   ("month", month, dim, other)}, self._either(a, b)  # fmt: skip
        for day in days:  # the value only on small days with no other value: one more row
            if ("day", day, dim, value) in self.suppressed and self._small(day):
                yield from self._pure(("day", day, dim, value))

    def _month_value_moves(self, cell: Key) -> Iterator[Move]:
        _, month, dim, value = cell
        assert dim is not None
        for week in self.weeks[month]:
            for _, a, b in self._suppressed_pairs(self.days[week], dim, value):
                yield {a, b, ("week", week, dim, value), ("week", week, dim, b[3]), cell,
                       ("month", month, dim, b[3])}, self._either(a, b)  # fmt: skip
        for week in self.weeks[month]:
            for day in self.days[week]:
                if ("day", day, dim, value) in self.suppressed and self._small(day):
                    yield from self._pure(("day", day, dim, value))

    def _suppressed_pairs(self, days: list[datetime], dim: str, value: str | None,
                          only: tuple[str | None] | None = None,
                          ) -> Iterator[tuple[datetime, Key, Key]]:  # fmt: skip
        """(day, (day,dim,value), (day,dim,w)) for each suppressed w beside value (or
        only w = ``only[0]``)."""
        for day in days:
            a = ("day", day, dim, value)
            if a not in self.suppressed:
                continue
            for b in self.values[("day", day, dim)]:
                if b != a and b in self.suppressed and (only is None or b[3] == only[0]):
                    yield day, a, b

    def _small_day_moves(self, total: Key, days: list[datetime]) -> Iterator[Move]:
        day = total[1]
        for other in days:
            if other != day and self._small(other):
                yield from self._time_moves(day, other)
        yield from self._pure(total)

    def _time_moves(self, day: datetime, other: datetime) -> Iterator[Move]:
        """A row of one small day moved to the other (to an hour of it), its dimension
        values kept: only cells of the two days change, and they are all suppressed."""
        for source, target in ((other, day), (day, other)):
            present = [{c[3] for c in self.values[("day", target, d)]} for d in self.dims]
            if not self.hours[target]:
                continue
            for row in self.rows.get(source, []):
                if all(v in present[i] for i, v in enumerate(row.values)):
                    changed = {("day", day, None, None), ("day", other, None, None),
                               self.hours[target][0], ("hour", row.hour, None, None)}  # fmt: skip
                    changed |= {("day", d_, e, v) for d_ in (day, other)
                                for e, v in zip(self.dims, row.values, strict=True)}  # fmt: skip
                    yield changed, _bits(row.mass)

    def _pure(self, cell: Key) -> Iterator[Move]:
        """One more row inside ``cell``: every cell holding it changes. The row is a real
        one (of a small day in the cell, or copied from another day of its week when its
        values are all present on that day), so that it is a row the fact can hold; per
        set of quantities it carries, the cheapest such row."""
        grain, period, dim, value = cell
        day = self._a_day(grain, period, dim, value)
        week = calendar.week_of(day)
        month = calendar.month_of_week(week)
        present = [{c[3] for c in self.values[("day", day, d)]} for d in self.dims]

        def fits(row: Row) -> bool:
            return (dim is None or row.values[self.dims.index(dim)] == value) and all(
                v in present[i] for i, v in enumerate(row.values))  # fmt: skip

        own = [
            r for r in self.rows.get(day, []) if fits(r) and (grain != "hour" or r.hour == period)
        ]
        copied = [r for other in self.days[week] if other != day
                  for r in self.rows.get(other, []) if fits(r)]  # fmt: skip
        best: dict[int, tuple[int, list[tuple[str, datetime, str, str, str]], set[Key]]] = {}
        for row in [*own, *copied]:
            if grain == "hour":
                hour = cell
            else:
                hour = ("hour", row.hour, None, None) if row in own else self.hours[day][0]
            changed: set[Key] = {hour, ("day", day, None, None), ("week", week, None, None),
                                 ("month", month, None, None)}  # fmt: skip
            for d, v in zip(self.dims, row.values, strict=True):
                changed |= {("day", day, d, v), ("week", week, d, v), ("month", month, d, v)}
            mask = _bits(row.mass) | self._plausible(row.values)
            cost = sum(self._cost_of(c) for c in changed)
            if mask not in best or cost < best[mask][0]:
                best[mask] = (cost, sorted(map(_order, changed)), changed)
        for mask, (_, _, changed) in sorted(best.items(), key=lambda m: m[1][:2]):
            yield changed, mask

    def _plausible(self, values: tuple[str | None, ...]) -> int:
        """Quantities a row with these values could carry: for each dimension, some row
        with the same value carries it, in any month. A quantity no row with one of these
        values ever carries (failures on a success code) may be a function of that value:
        a row carrying it would not be one the fact can hold, and the zero left is what
        the definition says, not a secret. (A quantity a period cannot hold by its time,
        eligibility for 30-day retention in the last 30 days, is zero by definition too.)"""
        mask = self.everything
        for d, v in zip(self.dims, values, strict=True):
            mask &= self.ever.get((d, v), 0)
        return mask

    def _a_day(self, grain: str, period: datetime, dim: str | None, value: str | None) -> datetime:
        """A day inside the cell, a small one (all its cells suppressed) if any."""
        if grain in ("hour", "day"):
            return calendar.midnight(period)
        weeks = [period] if grain == "week" else self.weeks[period]
        days = [d for w in weeks for d in self.days[w]
                if dim is None or ("day", d, dim, value) in self.stats]  # fmt: skip
        small = [d for d in days if self._small(d)]
        return (small or days)[0]

    # -- choosing and recording --------------------------------------------------------

    def _protect(self, cell: Key, moves: Callable[[], Iterator[Move]]) -> None:
        """Record the cheapest moves that, together, protect every quantity of ``cell``."""
        missing = self._needed(cell) & ~self.covered[cell]
        while missing:
            best: tuple[tuple[int, int], set[Key], int] | None = None
            for changed, feasible in moves():
                gain = feasible & missing
                if not gain or cell not in changed:
                    continue
                changed = {c for c in changed if c in self.stats}
                if any(c in self.published and c not in self.suppressed for c in changed):
                    continue  # it would change a cell already shown
                rank = (sum(self._cost_of(c) for c in changed), -bin(gain).count("1"))
                if best is None or rank < best[0]:
                    best = (rank, changed, feasible)
                    if rank[0] == 0 and gain == missing:
                        break
            if best is None:
                raise ProtectionError(
                    f"No complementary suppression protects cell {_show(cell)}; nothing is "
                    "answered from this pattern.",
                    hint="This is a defect of vigie's planner: report it with the KPI, grain "
                    "and period asked.",
                )
            _, changed, feasible = best
            for c in changed:
                self.suppressed.setdefault(c, SECONDARY)
                self.covered[c] |= feasible
            missing &= ~feasible

    def _suppress_primaries(self, cells: list[Key]) -> None:
        for cell in cells:
            if cell in self.primary:
                self.suppressed[cell] = PRIMARY

    def _partner(self, relation: list[Key]) -> None:
        """Each primary cell gets a suppressed partner in its relation (the cells that sum
        to a shown total), one that carries each quantity the primary lacks."""
        for cell in relation:
            if cell not in self.primary:
                continue
            missing = self._needed(cell)
            for other in relation:
                if other != cell and other in self.suppressed:
                    missing &= ~self._either(cell, other)
            while missing:
                options = [o for o in relation if o != cell and o not in self.suppressed
                           and self._either(cell, o) & missing]  # fmt: skip
                if not options:
                    break  # no other cell carries it: zero everywhere, a public fact
                gain = {o: bin(self._either(cell, o) & missing).count("1") for o in options}
                pick = min(options, key=lambda o: (-gain[o], self._cost_of(o), _order(o)))
                self.suppressed[pick] = SECONDARY
                missing &= ~self._either(cell, pick)

    def _needed(self, cell: Key) -> int:
        """Quantities an attacker could pin in ``cell``: those it holds, and those of the
        days its value is present on (a quantity absent from all of those is zero there
        by what is public: the value's absence on the other days)."""
        grain, period, dim, value = cell
        if dim is None or grain == "day":
            return self.mask[cell] | self.mask.get(_parent(cell), 0)
        weeks = [period] if grain == "week" else self.weeks[period]
        around = 0
        for week in weeks:
            for day in self.days[week]:
                if ("day", day, dim, value) in self.stats:
                    around |= self.mask[("day", day, None, None)]
        return self.mask[cell] | around

    def _either(self, a: Key, b: Key) -> int:
        """Quantities a move between a and b can shift (one of them has rows of it)."""
        return self.mask[a] | self.mask[b]

    def _both(self, a: Key, b: Key) -> int:
        return self.mask[a] & self.mask[b]

    def _small(self, day: datetime) -> bool:
        return ("day", day, None, None) in self.primary

    def _cost_of(self, cell: Key) -> int:
        if cell in self.suppressed or cell not in self.stats:
            return 0
        return self.weight[cell]


def _bits(flags: Iterable[bool]) -> int:
    return sum(1 << i for i, flag in enumerate(flags) if flag)


def _parent(cell: Key) -> Key:
    grain, period, dim, _ = cell
    if dim is not None:
        return (grain, period, None, None)
    if grain == "hour":
        return ("day", calendar.midnight(period), None, None)
    if grain == "day":
        return ("week", calendar.week_of(period), None, None)
    if grain == "week":
        return ("month", calendar.month_of_week(period), None, None)
    return cell


def _row_order(row: Row) -> tuple[datetime, tuple[tuple[bool, str], ...], tuple[bool, ...]]:
    return row.hour, tuple((v is not None, v or "") for v in row.values), row.mass


def _order(cell: Key) -> tuple[str, datetime, str, str, str]:
    grain, period, dim, value = cell
    return (grain, period, dim or "", "" if value is None else "1", value or "")


def _show(cell: Key) -> str:
    grain, period, dim, value = cell
    where = f" {dim}={value}" if dim else " total"
    return f"{grain} {period:%Y-%m-%d %H:%M}{where}"
