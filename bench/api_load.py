"""API load: concurrent searches against a real server over a real (small) index, on loopback.

Twenty short clips are generated with ffmpeg (lavfi patterns, some with a tone), indexed with the
`tiny` model (random weights: speed does not depend on their values) through the indexing pipeline,
and served by `vidsearch serve` (uvicorn, one process) started on a free 127.0.0.1 port and stopped at
the end. An asyncio loop of httpx clients then POSTs /v1/search for --seconds, each client sending its
next request when the last one is answered (closed loop), and the figures are: throughput (answered
requests/s), latency p50/p90/p99 seen by the client, the server's own `took_ms`, and errors (anything
but a 200 with a well-formed body; the target is zero).

Query texts: the server caches query embeddings (an LRU of 1024 texts), so repeating a few phrases
would measure the cache. Each request takes one of ~50 phrases; with probability --miss-rate it is made
new (a numbered variant never sent before), which must be encoded. The 50 hot phrases stay cached
(they recur every ~50-100 requests, far inside the LRU), so the expected hit rate is about
(1 - miss-rate) after each phrase's first use; the observed rate (texts sent before) is reported.
The client runs on the same cores as the server: throughput is that of the pair, as on one box; the
client's own CPU per request is reported beside the server's, and `--client aiohttp` swaps httpx for
a lighter load generator. `--model ViT-B-32` indexes and serves that model instead (random weights:
what it costs in memory and CPU, not what it finds); with `--search-processes` the server's memory
is reported with each search process's own.

    python bench/api_load.py [--clients 16] [--seconds 60] [--miss-rate 0.5] [--client httpx|aiohttp]
                             [--baseline GIT_REF [--baseline-processes N]] [--search-processes N [--compare-threads]]
                             [--model tiny|ViT-B-32] [--workdir DIR] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("LANCE_LOG", "error")

import httpx  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from query_latency import PHRASES  # noqa: E402

SOURCES = ["testsrc", "testsrc2", "smptebars", "rgbtestsrc", "smptehdbars", "yuvtestsrc", "pal75bars",
           "pal100bars", "testsrc=decimals=2", "color=c=red", "color=c=blue", "color=c=green"]  # fmt: skip


def make_clips(root: Path, n: int, log) -> list[Path]:
    """n distinct 5-14 s clips, 320x240 25 fps H.264 (every third with an AAC tone)."""
    root.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        p = root / f"clip_{i:02d}.mp4"
        if not p.exists():
            src = SOURCES[i % len(SOURCES)]
            sep = ":" if "=" in src else "="
            seconds = 5 + (i * 7) % 10
            args = ["ffmpeg", "-nostdin", "-v", "error", "-y", "-f", "lavfi",
                    "-i", f"{src}{sep}size=320x240:rate=25:duration={seconds}"]  # fmt: skip
            if i % 3 == 0:
                args += ["-f", "lavfi", "-i", f"sine=frequency={220 + 40 * i}:duration={seconds}", "-c:a", "aac", "-shortest"]
            args += ["-vf", f"hue=h={(i * 37) % 360}", "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p",
                     f"{p}.tmp.mp4"]  # fmt: skip
            subprocess.run(args, check=True)
            os.replace(f"{p}.tmp.mp4", p)
        paths.append(p)
    log(f"  {n} clips in {root}")
    return paths


def build_index(media: Path, db: Path, log, model: str = "tiny") -> dict:
    """Index the clips with `model` (its packaged weights, or random ones: nothing is downloaded;
    idempotent: a rerun over the same files does no work)."""
    from vidsearch.config import load_settings
    from vidsearch.encoders.backbone import load_backbone
    from vidsearch.indexer.pipeline import IndexRun, open_store_for

    settings = load_settings(None, db=db, model=model, pretrained="none")
    backbone = load_backbone(model, pretrained="none", precision=settings.precision, device="cpu")
    t0 = time.perf_counter()
    summary = IndexRun(open_store_for(settings, backbone), backbone, settings).run([media])
    out = {"indexed_now": summary.indexed, "failed": summary.failed, "units": summary.units,
           "seconds": round(time.perf_counter() - t0, 1)}  # fmt: skip
    log(f"  index: {out}")
    if summary.failed:
        raise RuntimeError(f"indexing failed for {summary.failed} clip(s): {summary}")
    return out


def index_dir(work: Path, model: str) -> Path:
    """One index per model in a kept --workdir (a rerun with another --model must not reopen this one)."""
    return work / ("db" if model == "tiny" else f"db-{model}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def process_tree(pid: int) -> list[int]:
    """`pid` and its descendants (from /proc/PID/task/TID/children)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as fh:
                    todo.extend(int(c) for c in fh.read().split())
        except OSError:
            continue
    return out


class Server:
    """`vidsearch serve` in a subprocess on a free loopback port; stopped (SIGINT, then SIGKILL) on exit."""

    def __init__(self, db: Path, logfile: Path, ready_timeout: float = 180.0, env: dict | None = None,
                 python: str = sys.executable):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.db, self.logfile = db, logfile
        self.ready_timeout, self.env, self.python = ready_timeout, env, python
        self.proc: subprocess.Popen | None = None
        self.ready_seconds = float("nan")  # start to the first 200 of /readyz

    def __enter__(self) -> Server:
        cmd = [self.python, "-m", "vidsearch.cli", "serve", "--db", str(self.db), "--host", "127.0.0.1",
               "--port", str(self.port)]  # fmt: skip
        self._log = open(self.logfile, "wb")
        t0 = time.monotonic()
        # cwd outside the repository: `python -m` puts the cwd first on sys.path, where the checkout's
        # vidsearch/ folder would shadow the installed package (the baseline's server ran this tree's cli.py)
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, cwd=str(self.db.parent),
                                     env=None if self.env is None else {**os.environ, **self.env})  # fmt: skip
        deadline = t0 + self.ready_timeout
        with httpx.Client(base_url=self.url, timeout=60) as c:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"server exited with {self.proc.returncode}: {self.tail()}")
                try:
                    if c.get("/readyz").status_code == 200:  # opens the engine (model load)
                        self.ready_seconds = time.monotonic() - t0
                        return self
                except httpx.TransportError:
                    pass
                time.sleep(0.2)
        self.__exit__()
        raise RuntimeError(f"server not ready in {self.ready_timeout:g} s: {self.tail()}")

    def cpu_seconds(self) -> float:
        """User + system CPU so far of the server process and its child processes (search workers):
        the live ones', and those that ended and were waited for (the server's cutime / cstime)."""
        total = 0
        for pid in process_tree(self.proc.pid):
            try:
                with open(f"/proc/{pid}/stat") as fh:
                    fields = fh.read().rsplit(")", 1)[1].split()
            except OSError:  # exited meanwhile
                continue
            total += int(fields[11]) + int(fields[12])
            if pid == self.proc.pid:
                total += int(fields[13]) + int(fields[14])
        return total / os.sysconf("SC_CLK_TCK")

    def rss_mb(self) -> float:
        """Resident memory of the server process and its child processes now."""
        total = 0
        for pid in process_tree(self.proc.pid):
            try:
                with open(f"/proc/{pid}/status") as fh:
                    total += next(int(line.split()[1]) for line in fh if line.startswith("VmRSS"))
            except (OSError, StopIteration):
                continue
        return total / 1024

    def tail(self) -> str:
        try:
            return self.logfile.read_text(errors="replace")[-2000:]
        except OSError:
            return ""

    def __exit__(self, *exc) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


class Queries:
    """The next query text: one of the hot phrases, or (with probability miss_rate) a never-sent one."""

    def __init__(self, miss_rate: float, seed: int):
        self.rng = random.Random(seed)
        self.miss_rate = miss_rate
        self.fresh = 0
        self.seen: set[str] = set()

    def next(self) -> tuple[str, bool]:
        phrase = self.rng.choice(PHRASES)
        if self.rng.random() < self.miss_rate:
            self.fresh += 1
            phrase = f"{phrase}, take {self.fresh}"
        hit = phrase in self.seen
        self.seen.add(phrase)
        return phrase, hit


class HttpxSession:
    """POSTs with httpx's async client (what the Python client library uses)."""

    def __init__(self, url: str, clients: int):
        limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
        self.http = httpx.AsyncClient(base_url=url, timeout=60, limits=limits)
        self.errors = (httpx.HTTPError, ValueError)

    async def post(self, path: str, body: dict) -> tuple[int, dict | None]:
        r = await self.http.post(path, json=body)
        return r.status_code, (r.json() if r.status_code == 200 else None)

    async def close(self) -> None:
        await self.http.aclose()


class AiohttpSession:
    """POSTs with aiohttp's client: a lighter load generator (the client shares the server's cores, so
    every millisecond it spends per request is taken from the server under test)."""

    def __init__(self, url: str, clients: int):
        import aiohttp

        self.url = url
        self.http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=clients), timeout=aiohttp.ClientTimeout(total=60))
        self.errors = (aiohttp.ClientError, asyncio.TimeoutError, ValueError)

    async def post(self, path: str, body: dict) -> tuple[int, dict | None]:
        async with self.http.post(self.url + path, json=body) as r:
            return r.status, (await r.json() if r.status == 200 else None)

    async def close(self) -> None:
        await self.http.close()


CLIENTS = {"httpx": HttpxSession, "aiohttp": AiohttpSession}


async def load(url: str, clients: int, seconds: float, queries: Queries, top_k: int, client_lib: str = "httpx") -> dict:
    lat: list[float] = []
    took: list[float] = []
    new: list[bool] = []  # the request's text was never sent before (encoded, searched) or repeated
    hits = 0
    errors: dict[str, int] = {}
    session = CLIENTS[client_lib](url, clients)
    cpu0 = time.process_time()
    try:
        t_start = time.perf_counter()
        deadline = t_start + seconds

        async def client() -> None:
            nonlocal hits
            while time.perf_counter() < deadline:
                text, hit = queries.next()
                t0 = time.perf_counter()
                try:
                    status, body = await session.post("/v1/search", {"query": text, "top_k": top_k})
                    ok = status == 200 and isinstance(body.get("results"), list) and len(body["results"]) > 0
                    why = f"HTTP {status}" if status != 200 else "empty or malformed body"
                except session.errors as exc:
                    ok, body, why = False, None, type(exc).__name__
                dt = time.perf_counter() - t0
                if ok:
                    lat.append(dt * 1000)
                    took.append(float(body["took_ms"]))
                    new.append(not hit)
                    hits += hit
                else:
                    errors[why] = errors.get(why, 0) + 1

        await asyncio.gather(*(client() for _ in range(clients)))
        elapsed = time.perf_counter() - t_start
        client_cpu = time.process_time() - cpu0
    finally:
        await session.close()
    a = np.asarray(lat) if lat else np.zeros(1)
    t = np.asarray(took) if took else np.zeros(1)
    fresh = np.asarray(new, bool) if new else np.zeros(1, bool)

    def pcts(x: np.ndarray) -> dict:
        x = x if x.size else np.zeros(1)
        return {p: round(float(np.percentile(x, q)), 1) for p, q in (("p50", 50), ("p90", 90), ("p99", 99), ("max", 100))}

    return {
        "requests_ok": len(lat),
        "errors": sum(errors.values()),
        "error_kinds": errors,
        "elapsed_s": round(elapsed, 2),
        "throughput_rps": round(len(lat) / elapsed, 1),
        "latency_ms": pcts(a),
        "latency_new_text_ms": pcts(a[fresh]),  # a text never sent before: encoded and searched
        "latency_repeated_text_ms": pcts(a[~fresh]),
        "server_took_ms": {p: round(float(np.percentile(t, q)), 1) for p, q in (("p50", 50), ("p99", 99))},
        "query_cache_hit_rate": round(hits / max(1, len(lat)), 3),
        "client": client_lib,
        "client_cpu_ms_per_request": round(1000 * client_cpu / max(1, len(lat) + sum(errors.values())), 1),
    }


def baseline_python(ref: str, work: Path, log) -> str:
    """A Python that runs vidsearch as of git `ref` (exported beside the work dir, installed editable
    without dependencies into a venv over this machine's packages), so old and new servers are
    measured in one run on the same index."""
    tree = work / f"baseline-{ref}"
    python = tree / ".venv" / "bin" / "python"
    if not python.exists():
        shutil.rmtree(tree, ignore_errors=True)
        tree.mkdir(parents=True)
        repo = Path(__file__).resolve().parent.parent
        archive = subprocess.run(["git", "-C", str(repo), "archive", ref], check=True, capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", str(tree)], input=archive, check=True)
        subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(tree / ".venv")], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-deps", "-e", str(tree)], check=True)
        log(f"  baseline {ref} installed in {tree}")
    return str(python)


def measure(python: str, work: Path, args, log, processes: int = 0) -> dict:
    """Start a server with this Python (and `processes` search processes), warm it, load it for
    --seconds, stop it."""
    t0 = time.perf_counter()
    env = {"VIDSEARCH_SEARCH_PROCESSES": str(processes)} if processes else None
    with Server(index_dir(work, args.model), work / "server.log", ready_timeout=900, python=python, env=env) as server:
        ready_s = time.perf_counter() - t0
        with httpx.Client(base_url=server.url, timeout=60) as c:  # a server may build a faster query path first
            for _ in range(900):  # ... and start its search processes
                ready = c.get("/readyz").json()
                if ready.get("query_runtime") != "building" and ready.get("search_processes", {}).get("ready", True):
                    break
                time.sleep(0.2)
        runtime_s = time.perf_counter() - t0
        log(f"  {server.url} ready in {ready_s:.1f} s; warming up {args.warmup_seconds:.0f} s ...")
        queries = Queries(args.miss_rate, args.seed)
        asyncio.run(load(server.url, args.clients, args.warmup_seconds, queries, args.top_k, args.client))
        load_before = os.getloadavg()
        cpu0 = server.cpu_seconds()
        log(f"  {args.clients} clients for {args.seconds:.0f} s ...")
        res = asyncio.run(load(server.url, args.clients, args.seconds, queries, args.top_k, args.client))
        res["server_cpu_s"] = round(server.cpu_seconds() - cpu0, 1)
        res["server_cpu_ms_per_request"] = round(1000 * res["server_cpu_s"] / max(1, res["requests_ok"]), 1)
        res["load_before"] = [round(x, 2) for x in load_before]
        res["load_after"] = [round(x, 2) for x in os.getloadavg()]
        res["server_rss_mb"] = round(server.rss_mb(), 1)
        with httpx.Client(base_url=server.url) as c:
            res["ready"] = c.get("/readyz").json()
        res["worker_rss_mb"] = res["ready"].get("search_processes", {}).get("rss_mb")
    res["server_ready_s"] = round(ready_s, 1)
    res["query_runtime"] = res["ready"].get("query_runtime", "torch")
    res["query_runtime_ready_s"] = round(runtime_s, 1)
    return res


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--warmup-seconds", type=float, default=3.0, help="load before measuring (not counted)")
    ap.add_argument("--miss-rate", type=float, default=0.5, help="share of requests with a never-sent query text")
    ap.add_argument("--top-k", type=int, default=10)
    ap.add_argument("--videos", type=int, default=20)
    ap.add_argument("--model", default="tiny", help="the index's model (open_clip name or tiny; random weights where none ship)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--client", choices=sorted(CLIENTS), default="httpx",
                    help="the load generator's HTTP library (its CPU per request is reported: it shares the cores)")
    ap.add_argument("--baseline", metavar="GIT_REF", default=None,
                    help="also load a server running vidsearch as of this commit, first, on the same index")
    ap.add_argument("--baseline-processes", type=int, default=0, help="the baseline server's search processes (0: threads)")
    ap.add_argument("--search-processes", type=int, default=0,
                    help="this tree's server computes searches in this many worker processes (0: threads)")
    ap.add_argument("--compare-threads", action="store_true",
                    help="with --search-processes: also load this tree's server with threads, first, in the same run")
    ap.add_argument("--workdir", type=Path, default=None, help="keep the clips and the index here between runs")
    ap.add_argument("--json", action="store_true", help="print exactly one JSON object (progress goes to stderr)")
    args = ap.parse_args()
    if not 0.0 <= args.miss_rate <= 1.0:
        ap.error("--miss-rate must be in [0, 1]")

    def log(msg: str) -> None:
        print(msg, file=sys.stderr if args.json else sys.stdout, flush=True)

    tmp = None
    if args.workdir is None:
        tmp = Path(tempfile.mkdtemp(prefix="vidsearch-load-"))
        args.workdir = tmp
    work = args.workdir
    work.mkdir(parents=True, exist_ok=True)
    runs: dict[str, dict] = {}
    try:
        log("preparing the index ...")
        make_clips(work / "media", args.videos, log)
        index = build_index(work / "media", index_dir(work, args.model), log, args.model)
        if args.baseline:
            log(f"the baseline server ({args.baseline}) ...")
            runs[f"baseline {args.baseline}"] = measure(baseline_python(args.baseline, work, log), work, args, log,
                                                        processes=args.baseline_processes)  # fmt: skip
        if args.compare_threads and args.search_processes:
            log("the server of this tree, threads ...")
            runs["this tree, threads"] = measure(sys.executable, work, args, log)
        name = f"this tree, {args.search_processes} processes" if args.search_processes else "this tree"
        log(f"{name} ...")
        runs[name] = measure(sys.executable, work, args, log, processes=args.search_processes)
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    res = runs[name]
    report = {
        "benchmark": "api_load",
        "clients": args.clients,
        "seconds": args.seconds,
        "miss_rate": args.miss_rate,
        "expected_hit_rate": round(1 - args.miss_rate, 3),
        "top_k": args.top_k,
        "videos": res["ready"].get("videos"),
        "model": res["ready"].get("model"),
        "index": index,
        "cpus": os.cpu_count(),
        **{k: v for k, v in res.items() if k != "ready"},
        "runs": {name: {k: v for k, v in r.items() if k != "ready"} for name, r in runs.items()},
    }
    if len(runs) == 2:
        base = next(iter(runs.values()))
        report["throughput_ratio"] = round(res["throughput_rps"] / max(base["throughput_rps"], 1e-9), 2)
    if args.json:
        print(json.dumps(report))
    else:
        print()
        print(f"API load: {args.clients} clients x {args.seconds:.0f} s, POST /v1/search top_k={args.top_k}, "
              f"{report['videos']} videos (model {report['model']}), {os.cpu_count()} CPUs shared by server and client, "
              f"{args.miss_rate:.0%} of queries new")  # fmt: skip
        names = list(runs)
        print(f"{'figure':34} " + " ".join(f"{n:>22}" for n in names))
        rows = [
            ("requests answered", "requests_ok"), ("throughput (req/s)", "throughput_rps"),
            ("server CPU per request (ms)", "server_cpu_ms_per_request"), ("server memory (MB)", "server_rss_mb"),
            ("  of which each search process (MB)", "worker_rss_mb"),
            ("client CPU per request (ms)", "client_cpu_ms_per_request"), ("errors", "errors"),
            ("query-cache hit rate (observed)", "query_cache_hit_rate"), ("server ready (s)", "server_ready_s"),
            ("query encoder", "query_runtime"), ("query encoder ready (s)", "query_runtime_ready_s"),
        ]  # fmt: skip
        for label, key in rows:
            print(f"{label:34} " + " ".join(f"{runs[n][key]!s:>22}" for n in names))
        for p in ("p50", "p90", "p99", "max"):
            print(f"{'latency ' + p + ' (ms)':34} " + " ".join(f"{runs[n]['latency_ms'][p]!s:>22}" for n in names))
        for kind in ("new_text", "repeated_text"):
            print(f"{'  ' + kind.replace('_', ' ') + ' p50 / p99 (ms)':34} " + " ".join(
                f"{str(runs[n]['latency_' + kind + '_ms']['p50']) + ' / ' + str(runs[n]['latency_' + kind + '_ms']['p99']):>22}"
                for n in names))  # fmt: skip
        print(f"{'load average before / after':34} " + " ".join(
            f"{runs[n]['load_before'][0]:>10} / {runs[n]['load_after'][0]:<9}" for n in names))  # fmt: skip
        if "throughput_ratio" in report:
            print(f"throughput: {report['throughput_ratio']}x the baseline; p99 {res['latency_ms']['p99']} ms (target <= 300)")
    return 0 if res["errors"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
