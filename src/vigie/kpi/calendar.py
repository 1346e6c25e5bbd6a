"""The periods KPIs are published in: hour ⊂ day ⊂ week ⊂ month, strictly nested.

Weeks are ISO weeks (from Monday). A month is made of whole ISO weeks: the weeks whose
Thursday falls in the calendar month (the rule ISO years follow), labelled by the month's
first day. So every day lies in one week and every week in one month, and a coarser cell
is the sum of its finer cells: one suppression pattern can then hold across all grains
(``vigie.kpi.protect``). A range (``--from``/``--to``) selects whole periods by label.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from vigie.errors import UsageError
from vigie.kpi.model import Grain

_PERIOD_SQL = {
    "hour": "date_trunc('hour', {t})",
    "day": "date_trunc('day', {t})",
    "week": "date_trunc('week', {t})",
    "month": "date_trunc('month', date_trunc('week', {t}) + INTERVAL 3 DAY)",
}
# How many periods a query without --from/--to shows, ending at the last closed one.
DEFAULT_PERIODS: dict[str, int] = {"hour": 24, "day": 7, "week": 8, "month": 6}


def period_sql(grain: Grain, column: str) -> str:
    """SQL for the label of the ``grain`` period holding ``column`` (a timestamp)."""
    return _PERIOD_SQL[grain].format(t=column)


def midnight(t: datetime) -> datetime:
    return t.replace(hour=0, minute=0, second=0, microsecond=0)


def week_of(t: datetime) -> datetime:
    day = midnight(t)
    return day - timedelta(days=day.weekday())


def month_of_week(week: datetime) -> datetime:
    """The label (first day) of the month a week belongs to: its Thursday's month."""
    return (week + timedelta(days=3)).replace(day=1)


def first_week(month: datetime) -> datetime:
    """The Monday that starts the first week of ``month`` (its first Thursday minus 3)."""
    first = midnight(month).replace(day=1)
    thursday = first + timedelta(days=(3 - first.weekday()) % 7)
    return thursday - timedelta(days=3)


def next_month(month: datetime) -> datetime:
    return (month.replace(day=1) + timedelta(days=32)).replace(day=1)


def label_of(grain: Grain, t: datetime) -> datetime:
    """The label of the ``grain`` period holding instant ``t``."""
    if grain == "hour":
        return t.replace(minute=0, second=0, microsecond=0)
    if grain == "day":
        return midnight(t)
    week = week_of(t)
    return week if grain == "week" else month_of_week(week)


def start_of(grain: Grain, label: datetime) -> datetime:
    """The first instant of the period labelled ``label``."""
    return first_week(label) if grain == "month" else label


def end_of(grain: Grain, label: datetime) -> datetime:
    """The instant the period labelled ``label`` ends (exclusive)."""
    if grain == "hour":
        return label + timedelta(hours=1)
    if grain == "day":
        return label + timedelta(days=1)
    if grain == "week":
        return label + timedelta(days=7)
    return first_week(next_month(label))


def step(grain: Grain, label: datetime, n: int) -> datetime:
    """The label ``n`` periods after (or before, n < 0) ``label``."""
    if grain == "hour":
        return label + timedelta(hours=n)
    if grain in ("day", "week"):
        return label + timedelta(days=n * (7 if grain == "week" else 1))
    month = label.replace(day=1)
    index = month.year * 12 + month.month - 1 + n
    return month.replace(year=index // 12, month=index % 12 + 1)


def check_aligned(grain: Grain, t: datetime, option: str) -> None:
    """``t`` must be a period label of ``grain``: ranges select whole periods, so that
    moving a bound never isolates a few events (the differencing the issue names)."""
    if (midnight(t) == t and t.day == 1) if grain == "month" else label_of(grain, t) == t:
        return
    shown = {"hour": "a whole hour (HH:00)", "day": "a date at midnight",
             "week": "a Monday at midnight", "month": "the 1st of a month"}[grain]  # fmt: skip
    before = label_of(grain, t) if grain != "month" else midnight(t).replace(day=1)
    raise UsageError(
        f"{option} {t:%Y-%m-%d %H:%M} is not the start of {'an' if grain == 'hour' else 'a'} "
        f"{grain}: with --grain {grain} "
        f"it must be {shown}.",
        hint=f"Use {option} {midnight(before) if grain != 'hour' else before:%Y-%m-%d %H:%M} "
        f"or {step(grain, midnight(before) if grain != 'hour' else before, 1):%Y-%m-%d %H:%M}"
        "; ranges select whole periods so that no answer can be narrowed to a few events.",
    )


def publishable_end(grain: Grain, horizon: datetime) -> datetime:
    """The label just after the last period of ``grain`` that is over at ``horizon`` (the
    start of the store's last sync). Hours are published with their day."""
    if grain == "hour":
        return midnight(horizon)
    label = label_of(grain, horizon)
    return label if end_of(grain, label) > horizon else step(grain, label, 1)
