"""API load: 50 concurrent keep-alive clients for 30 s on one KPI route, audit on.

Runs, in one go, on a demo-sized fleet (SQLite, synced into a fresh store):
1. `vigie serve` (web process + data process), GET /api/kpis/connection_error_rate?by=firmware;
2. a bare uvicorn endpoint returning a constant, same load (the ceiling of this machine);
3. `vigie serve --sync-from ... --every 30s` while production ticks, same load.
Prints requests/s, p50 and p99 for each; writes bench/out/api.json.

    .venv/bin/python bench/api.py [--seconds 30] [--clients 50] [--users 10000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
OUT = ROOT / "bench" / "out"
ROUTE = "/api/kpis/connection_error_rate?by=firmware"

BARE = """
from fastapi import FastAPI
import uvicorn, sys
app = FastAPI()
@app.get("/api/kpis/connection_error_rate")
async def constant():
    return {"kpi": "connection_error_rate", "cells": []}
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning", access_log=False)
"""


async def _client(host: str, port: int, path: str, headers: str, until: float, lat: list[float],
                  errors: list[int]) -> None:  # fmt: skip
    reader, writer = await asyncio.open_connection(host, port)
    request = f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\n{headers}\r\n".encode()
    while time.perf_counter() < until:
        start = time.perf_counter()
        writer.write(request)
        head = await reader.readuntil(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        length = 0
        chunked = False
        for line in head.split(b"\r\n"):
            name, _, value = line.partition(b":")
            if name.lower() == b"content-length":
                length = int(value)
            if name.lower() == b"transfer-encoding" and b"chunked" in value:
                chunked = True
        if chunked:
            while True:
                size = int((await reader.readline()).strip(), 16)
                await reader.readexactly(size + 2)
                if size == 0:
                    break
        else:
            await reader.readexactly(length)
        lat.append(time.perf_counter() - start)
        if status != 200:
            errors.append(status)
    writer.close()


def load(port: int, key: str | None, seconds: float, clients: int) -> dict[str, float]:
    headers = f"Authorization: Bearer {key}\r\n" if key else ""
    lat: list[float] = []
    errors: list[int] = []

    async def main() -> None:
        until = time.perf_counter() + seconds
        await asyncio.gather(*[_client("127.0.0.1", port, ROUTE, headers, until, lat, errors)
                               for _ in range(clients)])  # fmt: skip

    started = time.perf_counter()
    asyncio.run(main())
    took = time.perf_counter() - started
    q = statistics.quantiles(lat, n=100)
    return {"requests": len(lat), "rps": len(lat) / took, "p50_ms": q[49] * 1000,
            "p99_ms": q[98] * 1000, "errors": len(errors),
            "error_statuses": dict(Counter(errors))}  # fmt: skip


def main() -> None:
    from helpers import synced_fleet
    from serving import free_port, make_keys, start_serve, stop_serve
    from vigie.fleet.tick import tick_fleet

    p = argparse.ArgumentParser()
    p.add_argument("--seconds", type=float, default=30)
    p.add_argument("--clients", type=int, default=50)
    p.add_argument("--users", type=int, default=10_000)
    args = p.parse_args()
    root = OUT / "api"
    subprocess.run(["rm", "-rf", str(root)], check=True)
    root.mkdir(parents=True)
    print(f"fleet of {args.users:,} users, synced ...", flush=True)
    dsn, store, _ = synced_fleet(root, users=args.users, days=3, seed=42)
    keys = make_keys(store)
    results: dict[str, dict[str, float]] = {}

    served = start_serve(store, root / "keys")
    load(int(served.url.rsplit(":", 1)[1]), keys["analyst"], 3, args.clients)  # warm up
    results["vigie"] = load(int(served.url.rsplit(":", 1)[1]), keys["analyst"], args.seconds,
                            args.clients)  # fmt: skip
    stop_serve(served)
    print("vigie serve:", results["vigie"], flush=True)

    port = free_port()
    bare = subprocess.Popen([sys.executable, "-c", BARE, str(port)])
    time.sleep(3)
    load(port, None, 3, args.clients)
    results["bare"] = load(port, None, args.seconds, args.clients)
    bare.terminate()
    bare.wait()
    print("bare uvicorn:", results["bare"], flush=True)

    from conftest import EXAMPLE_POLICY

    served = start_serve(store, root / "keys", "--sync-from", str(dsn), "--policy",
                         str(EXAMPLE_POLICY), "--every", "30s")  # fmt: skip
    stop = threading.Event()

    def ticks() -> None:
        seed = 1000
        while not stop.wait(10):
            tick_fleet(dsn, minutes=10, seed=seed)
            seed += 1

    ticker = threading.Thread(target=ticks)
    ticker.start()
    port = int(served.url.rsplit(":", 1)[1])
    load(port, keys["analyst"], 3, args.clients)
    results["vigie_with_sync_every_30s"] = load(port, keys["analyst"], max(args.seconds, 65),
                                                args.clients)  # fmt: skip
    stop.set()
    ticker.join()
    import httpx

    status = httpx.get(served.url + "/api/status",
                       headers={"authorization": f"Bearer {keys['analyst']}"}).json()  # fmt: skip
    results["vigie_with_sync_every_30s"]["syncs_during_load"] = status["sync"]["runs"]
    stop_serve(served)
    print("vigie serve + sync every 30 s:", results["vigie_with_sync_every_30s"], flush=True)
    results["vigie"]["share_of_bare"] = results["vigie"]["rps"] / results["bare"]["rps"]
    (OUT / "api.json").write_text(json.dumps(results, indent=2))
    for name, r in results.items():
        line = f"{name:28} {r['rps']:8.0f} req/s  p50 {r['p50_ms']:6.1f} ms"
        print(f"{line}  p99 {r['p99_ms']:6.1f} ms  errors {r['errors']}")
    print(f"vigie / bare: {results['vigie']['share_of_bare']:.2f}")


if __name__ == "__main__":
    main()
