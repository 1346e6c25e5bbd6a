"""KPI answers kept in the web process while the data process says they still hold.

The data process streams its serving state on a watch connection (``DataService.watch``):
the generation of the snapshot it answers from, or None while the guard keeps data closed.
An answer is kept with the state read *before* it was asked, and given again only while the
last state read is that same one, was read less than ``STALE`` s ago, and the watch is
connected. A new snapshot, a closing guard, a silent or lost data process: every kept
answer stops counting at once (within the data process's 50 ms poll), and requests go to
the data process again, which answers or refuses them itself. Authentication, roles and
the audit of every request are unchanged: only the trip to the data process is saved.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import OrderedDict
from pathlib import Path

from vigie.serve import protocol

STALE = 2.0  # s without a line from the watch: nothing kept counts
SIZE = 512


class Answers:
    def __init__(self, socket: Path, size: int = SIZE, stale: float = STALE) -> None:
        self.socket, self.size, self.stale = socket, size, stale
        self._state: str | None = None
        self._seen = 0.0
        self._kept: OrderedDict[tuple[str, bytes], tuple[str, bytes]] = OrderedDict()

    def state(self) -> str | None:
        """The serving state answers may be kept under now (None: keep nothing)."""
        if self._state is None or time.monotonic() - self._seen > self.stale:
            return None
        return self._state

    def get(self, key: tuple[str, bytes]) -> bytes | None:
        state = self.state()
        kept = self._kept.get(key) if state is not None else None
        return kept[1] if kept is not None and kept[0] == state else None

    def put(self, key: tuple[str, bytes], state: str | None, line: bytes) -> None:
        """Keep ``line``, asked while the state was ``state`` (nothing if that was None)."""
        if state is None:
            return
        self._kept[key] = (state, line)
        if len(self._kept) > self.size:
            self._kept.popitem(last=False)

    def drop(self) -> None:
        """Keep nothing until the watch's next line: the data process just refused a
        request (the guard closed, say) and a kept answer must not follow its refusal."""
        self._state = None
        self._kept.clear()

    def read(self, line: bytes) -> None:
        """Take one line of the watch."""
        body = json.loads(line)
        state = body.get("state") if isinstance(body, dict) else None
        if state != self._state:
            self._kept.clear()
        self._state = state if isinstance(state, str) else None
        self._seen = time.monotonic()

    async def follow(self) -> None:
        """Read the watch until cancelled; reconnect after a loss (keeping nothing)."""
        while True:
            writer = None
            try:
                reader, writer = await asyncio.open_unix_connection(str(self.socket))
                writer.write(protocol.WATCH + b"\n")
                await writer.drain()
                while True:
                    async with asyncio.timeout(self.stale):
                        line = await reader.readline()
                    if not line:
                        break
                    self.read(line)
            except (OSError, TimeoutError, ValueError):
                pass
            finally:
                self._state = None
                self._kept.clear()
                if writer is not None:
                    writer.close()
            await asyncio.sleep(0.5)
