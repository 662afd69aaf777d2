"""Slow clients against `vidsearch serve`: can a flood of unfinished requests hold the server?

Starts `vidsearch serve` twice on an empty index, in one run: as configured by default (read deadlines
and a connection cap, `server/connections.py`), and with both turned off (a header and body timeout of
a year and a cap past the descriptor limit: uvicorn as it was). Against each it opens N connections
that send a request line and never finish their headers, as fast as one client can, then asks
`/healthz` on a new connection, and reports: whether and how fast it was answered, how many of the
stalled connections the server still holds after the header timeout, and the server's memory.

    python bench/slow_clients.py [--connections 8000] [--server-fd-limit 4096] [--json]

The servers run with an open-file limit of `--server-fd-limit` (many systems' default is 1024); the
client needs N descriptors of its own (`ulimit -n`).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from api_fixtures import free_port  # noqa: E402

OFF = {"VIDSEARCH_HEADER_TIMEOUT": str(365 * 86400), "VIDSEARCH_BODY_TIMEOUT": str(365 * 86400), "VIDSEARCH_MAX_CONNECTIONS": str(10**9)}


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS"):
            return int(line.split()[1]) / 1024
    return float("nan")


def healthz(port: int) -> tuple[str, float]:
    t0 = time.monotonic()
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=10) as r:
            return str(r.status), time.monotonic() - t0
    except Exception as exc:  # noqa: BLE001 - the failure is the measurement
        return type(exc).__name__, time.monotonic() - t0


def still_open(socks: list[socket.socket]) -> int:
    """Connections the server has not closed (a closed one reads as end of file or a reset)."""
    alive = 0
    for s in socks:
        s.setblocking(False)
        try:
            alive += s.recv(1) != b""
        except BlockingIOError:
            alive += 1
        except OSError:
            pass
    return alive


def run(label: str, db: Path, n: int, env_extra: dict[str, str], header_timeout: float, fd_limit: int) -> dict:
    port = free_port()
    env = {**os.environ, **env_extra}

    def limit_descriptors() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (fd_limit, fd_limit))

    server = subprocess.Popen([sys.executable, "-m", "vidsearch.cli", "serve", "--db", str(db), "--model", "tiny", "--pretrained", "none",
                               "--host", "127.0.0.1", "--port", str(port)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              preexec_fn=limit_descriptors)  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while healthz(port)[0] != "200":
            if time.monotonic() > deadline or server.poll() is not None:
                raise SystemExit(f"{label}: the server did not start")
            time.sleep(0.2)
        base_mb = rss_mb(server.pid)
        socks, t0, refused, streak = [], time.monotonic(), 0, 0
        for _ in range(n):
            try:
                s = socket.create_connection(("127.0.0.1", port), timeout=1)
                s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
                socks.append(s)
                streak = 0
            except OSError:
                refused += 1
                streak += 1
                if streak >= 10:  # the server takes no more: stop trying
                    break
        opened = time.monotonic() - t0
        time.sleep(1.0)
        status, took = healthz(port)
        held_mb = rss_mb(server.pid)
        time.sleep(max(0.0, 2 * header_timeout + 1 - (time.monotonic() - t0 - opened)))  # the last one's deadline
        open_later = still_open(socks)
        status_later, took_later = healthz(port)
        for s in socks:
            s.close()
        return {"server": label, "stalled_connections": len(socks), "refused_at_connect": refused, "open_s": round(opened, 1),
                "healthz_during": status, "healthz_during_s": round(took, 3), "still_open_after_timeout": open_later,
                "healthz_after_timeout": status_later, "healthz_after_s": round(took_later, 3),
                "server_rss_mb_idle": round(base_mb), "server_rss_mb_flooded": round(held_mb)}  # fmt: skip
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--connections", type=int, default=8_000)
    ap.add_argument("--server-fd-limit", type=int, default=4096)
    ap.add_argument("--header-timeout", type=float, default=20.0, help="the guarded server's (its default)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "empty-index"
        for label, extra in (("guarded (default)", {"VIDSEARCH_HEADER_TIMEOUT": str(args.header_timeout)}), ("unguarded (baseline)", OFF)):
            rows.append(run(label, db, args.connections, extra, args.header_timeout, args.server_fd_limit))
    if args.json:
        print(json.dumps({"connections": args.connections, "server_fd_limit": args.server_fd_limit, "rows": rows}))
        return
    print(f"{args.connections} unfinished requests from one client; the server's descriptor limit {args.server_fd_limit}")
    keys = list(rows[0])
    width = max(map(len, keys))
    for key in keys:
        print(f"{key:<{width}}  " + "  ".join(f"{str(r[key]):>22}" for r in rows))


if __name__ == "__main__":
    main()
