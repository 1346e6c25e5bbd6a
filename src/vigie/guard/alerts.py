"""Alerts through apprise (webhook, e-mail, chat...), sent from a thread of their own so
that failing closed never waits for a slow channel."""

from __future__ import annotations

import logging
import queue
import threading

log = logging.getLogger("vigie.guard")


class Alerter:
    def __init__(self, urls: tuple[str, ...]) -> None:
        self.urls = urls
        self._queue: queue.Queue[tuple[str, str] | None] = queue.Queue()
        self.sent = 0
        self._thread: threading.Thread | None = None
        if urls:
            self._thread = threading.Thread(target=self._run, name="vigie-alerts", daemon=True)
            self._thread.start()

    def send(self, title: str, body: str) -> None:
        if self._thread is not None:
            self._queue.put((title, body))

    def close(self) -> None:
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(10)

    def _run(self) -> None:
        import apprise

        logging.getLogger("apprise").setLevel(logging.CRITICAL)
        notifier = apprise.Apprise()
        for url in self.urls:
            if not notifier.add(url):
                log.warning(
                    "an alert URL is not one apprise knows (it is not shown: it may hold a token)"
                )
        while (item := self._queue.get()) is not None:
            title, body = item
            if notifier.notify(title=title, body=body):
                self.sent += 1
            else:
                log.warning("an alert could not be delivered: %s", title)
