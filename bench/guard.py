"""Time from a fault to the first 503 of a data route, at the guard's default interval.

One `vigie serve` on a demo-sized fleet (SQLite production, --sync-from and --policy), an
analyst polling a KPI route every ~20 ms, and for each fault TRIALS times: apply it at a
random phase of the guard's 5-s loop, time the first 503 the poller sees, check that no
200 came after it, undo the fault, wait until served again. Faults: the store chmod 644; the
policy edited to keep e-mails (no approval); an audit entry altered; a ransom-note table
created in the store; an e-mail planted in a kept column; the API forwarded in clear onto
the LAN address. And `vigie serve` restarted off loopback without TLS (refused at start:
time to the refusal). Prints median and max per fault; writes bench/out/guard.json and a
chart, bench/out/guard.png. Target: max under 6 s.

    .venv/bin/python bench/guard.py [--trials 20] [--users 10000] [--only audit]
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
OUT = ROOT / "bench" / "out"


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--trials", type=int, default=20)
    p.add_argument("--users", type=int, default=10_000)
    p.add_argument("--days", type=int, default=3)
    p.add_argument("--only", default="", help="Run only the faults whose name has this text.")
    args = p.parse_args()

    import duckdb

    from conftest import EXAMPLE_POLICY
    from guardkit import Poller, host_address, wait_status
    from helpers import synced_fleet
    from serving import make_keys, start_serve, stop_serve
    from vigie.errors import StoreError
    from vigie.stores.duckdb_store import Store

    work = Path(os.environ.get("BENCH_DIR", "/tmp/vigie-bench-guard"))
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    work.chmod(0o700)
    print(f"fleet of {args.users:,} users, {args.days} days ...", flush=True)
    dsn, store, keys = synced_fleet(work, users=args.users, days=args.days, seed=1)
    policy = work / "policy.yaml"
    shutil.copy(EXAMPLE_POLICY, policy)
    api_keys = make_keys(store)
    served = start_serve(store, work / "keys", "--sync-from", str(dsn), "--policy", str(policy))
    port = int(served.url.rsplit(":", 1)[1])
    poller = Poller(served.url, api_keys["analyst"])

    def with_store(sql: str, params: list | None = None) -> list:
        for _ in range(200):
            try:
                with Store(store, keys) as s:
                    return s.con.execute(sql, params or []).fetchall()
            except (duckdb.IOException, StoreError):
                time.sleep(0.05)
        raise RuntimeError("store busy")

    original_policy = policy.read_text()
    lowered = original_policy.replace("email:         {class: pii, pseudonymize: email}",
                                      "email:         {class: quasi, keep}")  # fmt: skip
    ((dev, firmware),) = with_store("SELECT id, firmware FROM devices LIMIT 1")
    saved: dict[str, object] = {}

    def rewrite_audit(edit) -> None:
        with served.audit_log.open("r+b") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            data = fh.read()
            fh.seek(0)
            fh.write(edit(data))
            fh.truncate()

    def alter(data: bytes) -> bytes:
        lines = data.split(b"\n")
        saved["line"] = lines[1]
        saved["altered"] = re.sub(rb'"status":\d+', b'"status":299', lines[1])
        lines[1] = saved["altered"]  # type: ignore[assignment]
        return b"\n".join(lines)

    def expose() -> None:
        listen = f"TCP-LISTEN:{port},bind={host_address()},fork,reuseaddr"
        saved["socat"] = subprocess.Popen(
            ["socat", listen, f"TCP:127.0.0.1:{port}"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def unexpose() -> None:
        proc = saved.pop("socat")
        proc.terminate()  # type: ignore[attr-defined]
        proc.wait(5)  # type: ignore[attr-defined]

    faults = {
        "store chmod 644": (lambda: store.chmod(0o644), lambda: store.chmod(0o600)),
        "policy keeps e-mails, not approved": (lambda: policy.write_text(lowered),
                                               lambda: policy.write_text(original_policy)),
        "audit entry altered": (lambda: rewrite_audit(alter),
                                lambda: rewrite_audit(lambda d: d.replace(
                                    saved["altered"], saved["line"], 1))),  # type: ignore[arg-type]
        "ransom-note table": (
            lambda: with_store("CREATE TABLE read_me AS SELECT 'send 0.1 BTC' AS note"),
            lambda: with_store("DROP TABLE read_me")),
        "e-mail planted in a kept column": (
            lambda: with_store("UPDATE devices SET firmware = 'alice.martin@example.com' "
                               "WHERE id = ?", [dev]),
            lambda: with_store("UPDATE devices SET firmware = ? WHERE id = ?", [firmware, dev])),
        "API forwarded in clear on the LAN": (expose, unexpose),
    }  # fmt: skip
    results: dict[str, dict] = {}
    try:
        for name, (fault, fix) in faults.items():
            if args.only not in name:
                continue
            times, leaked = [], 0
            for trial in range(args.trials):
                wait_status(served.url, 200, timeout=60)
                time.sleep(random.uniform(0.5, 5.5))  # a random phase of the 5-s loop
                t0 = time.monotonic()
                fault()
                deadline = t0 + 30
                while poller.first(503, t0) is None and time.monotonic() < deadline:
                    time.sleep(0.01)
                first = poller.first(503, t0)
                fix_at = time.monotonic()
                if first is None:
                    raise RuntimeError(f"{name}: no 503 within 30 s")
                leaked += sum(1 for t, s in poller.seen if s == 200 and first < t < fix_at)
                times.append(first - t0)
                fix()
                print(f"  {name} #{trial + 1}: {first - t0:.2f} s", flush=True)
            results[name] = {"median_s": round(statistics.median(times), 2),
                             "max_s": round(max(times), 2), "times": [round(t, 3) for t in times],
                             "rows_served_after_detection": leaked}  # fmt: skip
            print(f"{name}: median {results[name]['median_s']} s, max {results[name]['max_s']} s,"
                  f" rows after detection {leaked}", flush=True)  # fmt: skip
    finally:
        poller.stop()
        stop_serve(served)
    if args.only in "serve restarted off loopback without TLS: refused at start":
        results["serve restarted off loopback without TLS: refused at start"] = _refused_start(
            store, work
        )
    OUT.mkdir(exist_ok=True)
    out = OUT / "guard.json"
    if args.only and out.exists():  # a partial run updates the full report
        results = {**json.loads(out.read_text()), **results}
    out.write_text(json.dumps(results, indent=2))
    _chart(results, OUT / "guard.png")
    print(json.dumps({k: {a: b for a, b in v.items() if a != "times"} for k, v in results.items()},
                     indent=2))  # fmt: skip


def _refused_start(store: Path, work: Path) -> dict:
    times = []
    for _ in range(5):
        t0 = time.monotonic()
        proc = subprocess.run(
            [sys.executable, "-c", "from vigie.cli.app import main; main()", "serve", "--store",
             str(store), "--host", "0.0.0.0"], capture_output=True, text=True,
            env={**os.environ, "VIGIE_KEYFILE": str(work / "keys")})  # fmt: skip
        assert proc.returncode == 2 and "without TLS" in proc.stdout + proc.stderr
        times.append(time.monotonic() - t0)
    return {"median_s": round(statistics.median(times), 2), "max_s": round(max(times), 2),
            "times": [round(t, 3) for t in times], "rows_served_after_detection": 0,
            "note": "refused before any key is read or any port opened"}  # fmt: skip


def _chart(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(results)
    fig, ax = plt.subplots(figsize=(9, 4.2))
    for i, name in enumerate(names):
        ts = results[name]["times"]
        ax.scatter(ts, [i + random.uniform(-0.15, 0.15) for _ in ts], s=14, alpha=0.7)
        ax.plot([results[name]["median_s"]] * 2, [i - 0.3, i + 0.3], color="#1d2330")
    ax.axvline(6.0, color="#b3261e", linestyle="--", label="target: 6 s")
    ax.set_yticks(range(len(names)), names)
    ax.set_xlabel("seconds from the fault to the first 503 of a data route")
    ax.set_title("vigie guard: time to fail closed (default 5-s interval)")
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
