"""The web process's side of the data socket: a small pool of persistent connections."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from vigie.errors import Unavailable
from vigie.serve import protocol
from vigie.server.answers import Answers


class DataLink:
    def __init__(self, socket: Path, answers: Answers | None = None, size: int = 16) -> None:
        self.socket, self.size, self.answers = socket, size, answers
        self._idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
        self._slots = asyncio.Semaphore(size)

    async def ask(self, op: str, args: dict[str, Any] | None = None, timeout: float = 120.0) -> Any:
        return protocol.answer_of(await self.ask_line(op, args, timeout))

    async def kpi(self, name: str, args: dict[str, Any], query: bytes) -> bytes:
        """A KPI answer line: kept from an earlier identical request while it holds (see
        ``Answers``), else asked."""
        if self.answers is None:
            return await self.ask_line("kpi", {"name": name, **args})
        key = (name, query)
        line = self.answers.get(key)
        if line is None:
            state = self.answers.state()
            line = await self.ask_line("kpi", {"name": name, **args})
            if protocol.raw_result(line) is not None:  # an answer, not an error
                self.answers.put(key, state, line)
            elif protocol.refused_for_service(line):  # closed: nothing kept is given after it
                self.answers.drop()
        return line

    async def ask_line(
        self, op: str, args: dict[str, Any] | None = None, timeout: float = 120.0
    ) -> bytes:
        """The answer line as sent (see ``protocol.raw_result``)."""
        async with self._slots:
            conn = self._idle.pop() if self._idle else None
            try:
                if conn is None:
                    conn = await asyncio.open_unix_connection(str(self.socket), limit=256 << 20)
                reader, writer = conn
                writer.write(protocol.encode({"op": op, "args": args or {}}))
                await writer.drain()
                async with asyncio.timeout(timeout):  # no task per request, as wait_for makes
                    line = await reader.readline()
                if not line:
                    raise ConnectionError("closed")
            except (OSError, ConnectionError, TimeoutError):
                if conn is not None:
                    conn[1].close()
                raise Unavailable(
                    "The data service is not answering.", hint="Check that `vigie serve` runs."
                ) from None
            self._idle.append(conn)
        return line
