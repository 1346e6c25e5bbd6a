"""The web process: ``python -m vigie.server`` (started by ``vigie serve``, never by hand).

It is given paths, never keys: the data socket, the access file, the audit log. It refuses
to start if its environment holds vigie key material.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import signal
import sys
import threading
import time
from pathlib import Path

import uvicorn

from vigie.serve.launch import KEY_VARIABLES
from vigie.server.app import WebSettings, create_app

PR_SET_PDEATHSIG = 1


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="vigie-web")
    p.add_argument("--socket", type=Path, required=True)
    p.add_argument("--access", type=Path, required=True)
    p.add_argument("--audit-log", type=Path, required=True)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8321)
    p.add_argument("--tls-cert", type=Path)
    p.add_argument("--tls-key", type=Path)
    args = p.parse_args(argv)
    if leaked := [v for v in KEY_VARIABLES if v in os.environ]:
        sys.exit(f"vigie web process: refusing to start with {', '.join(leaked)} set.")
    _die_with_parent()
    tls = args.tls_cert is not None
    app = create_app(WebSettings(args.socket, args.access, args.audit_log, tls=tls))
    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        ssl_certfile=args.tls_cert,
        ssl_keyfile=args.tls_key,
        log_level="warning",
        access_log=False,
        server_header=False,
        proxy_headers=False,
    )


def _die_with_parent() -> None:
    """Exit when `vigie serve` is gone (even killed with SIGKILL): an orphaned web process
    would keep the port, answering 503, with nobody watching it. The kernel sends SIGTERM
    (``PR_SET_PDEATHSIG``); where that is not available, a thread polls the parent."""
    parent = os.getppid()
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl")
    except (OSError, AttributeError):

        def watch() -> None:
            while os.getppid() == parent:
                time.sleep(1.0)
            os._exit(0)

        threading.Thread(target=watch, name="vigie-parent-watch", daemon=True).start()
    if os.getppid() != parent:  # gone before the signal was armed
        os._exit(0)


if __name__ == "__main__":
    main()
