"""A cell of an answer. Whether it is suppressed is decided by the fact's pattern
(``vigie.kpi.protect``), the same whatever the question, never by the answer alone."""

from __future__ import annotations

from datetime import datetime
from typing import NamedTuple


class Cell(NamedTuple):
    """Immutable, and a tuple: a two-year daily answer builds thousands of them."""

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
