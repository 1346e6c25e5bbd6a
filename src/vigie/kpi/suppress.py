"""Small-cell suppression, applied to every answer whatever computed it.

A cell resting on fewer than k distinct users is returned as suppressed, never as a number.
Complementary suppression: when a period shows its total and exactly one of its cells is
suppressed, the smallest other cell is suppressed too (or, with no other cell, the total),
so that no cell can be recovered by subtracting the shown cells from the total.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, replace
from datetime import datetime


@dataclass(frozen=True)
class Cell:
    period: datetime
    dims: tuple[object, ...]
    is_total: bool
    value: float | None
    users: int
    suppressed: bool = False
    reason: str = ""

    @property
    def shown(self) -> float | None:
        return None if self.suppressed else self.value


def suppress(cells: list[Cell], k: int) -> list[Cell]:
    out = [
        replace(c, suppressed=True, reason=f"fewer than {k} users") if c.users < k else c
        for c in cells
    ]
    by_period: dict[datetime, list[int]] = defaultdict(list)
    for i, c in enumerate(out):
        by_period[c.period].append(i)
    for indexes in by_period.values():
        totals = [i for i in indexes if out[i].is_total]
        parts = [i for i in indexes if not out[i].is_total]
        if not totals or out[totals[0]].suppressed:
            continue
        hidden = [i for i in parts if out[i].suppressed]
        if len(hidden) != 1:
            continue
        visible = [i for i in parts if not out[i].suppressed]
        victim = min(visible, key=lambda i: (out[i].users, i)) if visible else totals[0]
        out[victim] = replace(out[victim], suppressed=True, reason="complementary")
    return out
