"""An exclusive ``flock`` held over a read-then-write of a small file, across processes."""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def exclusive(path: Path, flags: int = os.O_RDWR) -> Iterator[int]:
    """``path`` opened with ``flags`` (created 0600 in a 0700 folder, never through a
    symlink) under an exclusive ``flock`` until the block ends; yields its descriptor."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(path, flags | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield fd
    finally:
        os.close(fd)  # releases the lock
