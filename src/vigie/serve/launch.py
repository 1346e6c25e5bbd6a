"""``vigie serve``: the web process started first (with no key anywhere near it), then the
data process in this one, which loads the keys."""

from __future__ import annotations

import ipaddress
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from vigie.errors import Unavailable, UsageError

# secrets the web process must never hold: the keys, and the alert URLs (they carry tokens)
KEY_VARIABLES = (
    "VIGIE_KEYFILE", "VIGIE_PSEUDONYM_KEY", "VIGIE_STORE_KEY", "VIGIE_ALERT_URLS",
    "VIGIE_ADMIN_KEY",
)  # fmt: skip


@dataclass(frozen=True)
class WebLaunch:
    socket: Path
    access: Path
    audit_log: Path
    host: str = "127.0.0.1"
    port: int = 8321
    tls_cert: Path | None = None
    tls_key: Path | None = None

    @property
    def url(self) -> str:
        scheme = "https" if self.tls_cert else "http"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{scheme}://{host}:{self.port}"


def check_bind(host: str, tls_cert: Path | None, tls_key: Path | None) -> None:
    """Loopback, or TLS: anything else refuses to start."""
    if (tls_cert is None) != (tls_key is None):
        raise UsageError("--tls-cert and --tls-key go together.", hint="Give both, or neither.")
    for path in (tls_cert, tls_key):
        if path is not None and not path.is_file():
            raise UsageError(f"TLS file {path} does not exist.")
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        raise UsageError(f"--host {host!r} is not an IP address.", hint="e.g. 127.0.0.1") from None
    if not loopback and tls_cert is None:
        raise UsageError(
            f"Refusing to serve on {host} without TLS: the API would be readable on the network.",
            hint="Give --tls-cert and --tls-key, or bind to 127.0.0.1.",
        )


def clean_env() -> dict[str, str]:
    """This environment without vigie's key variables (the web process holds no key)."""
    return {k: v for k, v in os.environ.items() if k not in KEY_VARIABLES}


def start_web(launch: WebLaunch) -> subprocess.Popen[bytes]:
    argv = [sys.executable, "-m", "vigie.server", "--socket", str(launch.socket),
            "--access", str(launch.access), "--audit-log", str(launch.audit_log),
            "--host", launch.host, "--port", str(launch.port)]  # fmt: skip
    if launch.tls_cert and launch.tls_key:
        argv += ["--tls-cert", str(launch.tls_cert), "--tls-key", str(launch.tls_key)]
    return subprocess.Popen(argv, env=clean_env(), close_fds=True, stdin=subprocess.DEVNULL)  # noqa: S603


def wait_ready(launch: WebLaunch, web: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if web.poll() is not None:
            raise Unavailable(f"The web process exited (status {web.returncode}).",
                              hint="Its message is above; is the port in use?")  # fmt: skip
        try:
            with urllib.request.urlopen(f"http://{launch.host}:{launch.port}/healthz", timeout=1):
                return
        except urllib.error.HTTPError:  # it answers (503 while the guard's first round runs)
            return
        except OSError:
            time.sleep(0.1)
    raise Unavailable(f"The web process did not answer on {launch.url} within {timeout:.0f} s.")
