"""Where probes run from: a network namespace of the guard's own, so that they cross a real
interface (a veth pair) and see what a stranger on the network sees.

The namespace has one address on a /30 and a default route through the host's end of the
veth: it reaches the host's own non-loopback addresses (as a machine on the LAN would) and
nothing of the host's loopback. A dedicated thread enters it (``setns`` is per thread), and
probes are run on that thread. Without root or ``ip``, probes run from this host, and each
report says so. Targets on loopback are always probed from this host (no network reaches
them; a local process still can).
"""

from __future__ import annotations

import ctypes
import ipaddress
import os
import shutil
import subprocess
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")
CLONE_NEWNET = 0x40000000
PREFIX = "vigie-guard-"
HOST_ORIGIN = "this host"
NS_ORIGIN = "a network namespace (across a veth interface)"


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


class Origin:
    """Runs probe functions from the namespace (when it could be made) or from this host."""

    def __init__(self, want_namespace: bool = True) -> None:
        self.name = f"{PREFIX}{os.getpid()}"
        self.made = want_namespace and self._make()
        self._pool: ThreadPoolExecutor | None = None
        if self.made:
            self._pool = ThreadPoolExecutor(1, "vigie-netns", initializer=self._enter)
        self.why_not = "" if self.made else self._why_not(want_namespace)

    def run(self, host: str, fn: Callable[[], T]) -> tuple[T, str]:
        """``fn()`` from the namespace for a non-loopback ``host``, else from this host."""
        if self._pool is None or is_loopback(host):
            return fn(), HOST_ORIGIN
        return self._pool.submit(fn).result(), NS_ORIGIN

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        if self.made:
            _ip("netns", "del", self.name, check=False)
            self.made = False

    # -- making it -------------------------------------------------------------------

    def _addresses(self) -> tuple[str, str]:
        pid = os.getpid()
        a, b = 200 + (pid >> 10) % 50, (pid >> 2) & 0xFF
        base = (pid & 0x3) * 64
        return f"10.{a}.{b}.{base + 1}", f"10.{a}.{b}.{base + 2}"

    def _make(self) -> bool:
        if os.geteuid() != 0 or shutil.which("ip") is None:
            return False
        remove_stale_namespaces()
        host_ip, ns_ip = self._addresses()
        outside, inside = f"vgh{os.getpid()}"[:15], f"vgn{os.getpid()}"[:15]
        try:
            _ip("netns", "add", self.name)
            _ip("link", "add", outside, "type", "veth", "peer", "name", inside)
            _ip("link", "set", inside, "netns", self.name)
            _ip("addr", "add", f"{host_ip}/30", "dev", outside)
            _ip("link", "set", outside, "up")
            for cmd in (
                ["addr", "add", f"{ns_ip}/30", "dev", inside],
                ["link", "set", inside, "up"],
                ["link", "set", "lo", "up"],
                ["route", "add", "default", "via", host_ip],
            ):
                _ip("-n", self.name, *cmd)
        except (OSError, subprocess.CalledProcessError):
            _ip("link", "del", outside, check=False)
            _ip("netns", "del", self.name, check=False)
            return False
        return True

    def _enter(self) -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        fd = os.open(f"/run/netns/{self.name}", os.O_RDONLY)
        try:
            if libc.setns(fd, CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), "setns into the guard's namespace failed")
        finally:
            os.close(fd)

    @staticmethod
    def _why_not(wanted: bool) -> str:
        if not wanted:
            return "namespaces turned off"
        if os.geteuid() != 0:
            return "not root: a network namespace needs CAP_NET_ADMIN"
        return "could not make a network namespace (no `ip`, or it failed)"


def _ip(*args: str, check: bool = True) -> None:
    ip = shutil.which("ip") or "/usr/sbin/ip"
    subprocess.run([ip, *args], check=check, capture_output=True, timeout=10)  # noqa: S603


def remove_stale_namespaces() -> None:
    """Namespaces left by guards that were killed (their process is gone)."""
    folder = Path("/run/netns")
    if not folder.is_dir():
        return
    for path in folder.iterdir():
        pid = path.name[len(PREFIX) :]
        if path.name.startswith(PREFIX) and pid.isdigit() and not Path(f"/proc/{pid}").exists():
            _ip("netns", "del", path.name, check=False)
