"""The Ray engine against the local engine, on the same generated library, in one run on this machine.

Goal: on one node the Ray engine keeps >= 0.8 of the local engine's throughput (Ray's overhead must
be small). Two ways to meet Ray, each against the local engine in the same run:
- **cold**: no cluster yet; the run starts a local Ray itself (`ray.init` inside the timed run, its
  start-up included), as `vidsearch index --engine ray` without `--ray-address` does;
- **cluster**: a long-lived cluster (`ray start --head`, started here before the timed run, stopped at
  the end), joined with `--ray-address`, as on a real cluster.
The local engine runs first and last (the load on a shared machine drifts); its figure is the mean of
the two. Reported: wall seconds and seconds of video per second of each run, the ratios, the CPU
seconds each run cost (this process, the cluster's processes and their children, from /proc: the
figure the other work on a shared machine does not move much) and their ratio, the Ray
engine's phases (connect: `ray.init`; hash: connect and hashing together, they overlap; first video
out: actor start-up and model load; all videos), and the load average before and after. Each run
indexes into a new index. Random weights: speed does not depend on their values.

    python bench/ray_index.py [--model tiny] [--videos 6] [--seconds 120] [--modes cold,cluster]
                              [--library DIR] [--json]
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("LANCE_LOG", "error")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
sys.path.insert(0, str(Path(__file__).parent))

from index_throughput import make_videos  # noqa: E402

from vidsearch.config import Settings  # noqa: E402
from vidsearch.encoders.backbone import load_backbone  # noqa: E402
from vidsearch.indexer.pipeline import IndexRun, open_store_for  # noqa: E402
from vidsearch.indexer.ray_engine import RayIndexRun  # noqa: E402


def _tree(match: str | None) -> dict[int, int]:
    """CPU ticks (user + system) of this process, the processes whose command line holds `match` (a
    cluster's temp dir) and all their descendants, by pid. From /proc (Linux)."""
    procs: dict[int, tuple[int, int, str]] = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            stat = Path(f"/proc/{d}/stat").read_text()
            cmd = Path(f"/proc/{d}/cmdline").read_bytes().decode(errors="replace") if match else ""
        except OSError:
            continue
        rest = stat[stat.rfind(")") + 2 :].split()
        procs[int(d)] = (int(rest[1]), int(rest[11]) + int(rest[12]), cmd)
    keep = {os.getpid()} | {pid for pid, (_, _, cmd) in procs.items() if match and match in cmd}
    grew = True
    while grew:
        more = {pid for pid, (ppid, _, _) in procs.items() if ppid in keep} - keep
        keep |= more
        grew = bool(more)
    return {p: procs[p][1] for p in keep if p in procs}


class TreeCPU:
    """CPU seconds a run costs: the tree of processes above, sampled every `every` s while the run goes
    (Ray reaps its workers without adding their time to a parent's), each process counted at its last
    sample, less what it had used before the run. A process that lives shorter than a sample is missed."""

    def __init__(self, match: str | None = None, every: float = 0.25):
        self.match, self.every = match, every
        self.start = _tree(match)
        self.last: dict[int, int] = dict(self.start)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        while not self._stop.wait(self.every):
            self.last.update(_tree(self.match))

    def stop(self) -> float:
        self._stop.set()
        self._thread.join()
        self.last.update(_tree(self.match))
        return sum(t - self.start.get(p, 0) for p, t in self.last.items()) / os.sysconf("SC_CLK_TCK")


def run_once(engine: str, lib: Path, model: str, work: Path, address: str | None = None, match: str | None = None) -> dict:
    db = work / f"db-{engine}"
    shutil.rmtree(db, ignore_errors=True)
    settings = Settings(db=db, model=model, pretrained="none", speech=False, ocr=False, engine=engine, ray_address=address)
    loader = functools.partial(load_backbone, model, pretrained="none")
    backbone = loader()
    store = open_store_for(settings, backbone)
    cpu, t0 = TreeCPU(match), time.perf_counter()
    if engine == "ray":
        run = RayIndexRun(store, backbone, settings, load_backbone=loader)
    else:
        run = IndexRun(store, backbone, settings)
    summary = run.run([lib])
    wall = time.perf_counter() - t0
    time.sleep(1.0)  # the actors the run killed: one more sample sees whatever they used last
    cpu = cpu.stop()
    assert summary.failed == 0, summary.failures
    shutil.rmtree(db, ignore_errors=True)
    return {"wall_s": round(wall, 2), "video_s_per_s": round(summary.video_seconds / wall, 3), "indexed": summary.indexed,
            "cpu_s": round(cpu, 1), "cpu_s_per_video_min": round(cpu / (summary.video_seconds / 60), 2),
            "phases": {k: round(v, 2) for k, v in getattr(run, "timings", {}).items()}, "load": os.getloadavg()[0]}  # fmt: skip


def start_cluster(temp: Path) -> str:
    """`ray start --head` on loopback, as a long-lived cluster is started once before any job."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "ray.scripts.scripts", "start", "--head", "--node-ip-address=127.0.0.1", f"--port={port}",
           f"--num-cpus={os.cpu_count()}", "--include-dashboard=false", "--disable-usage-stats", f"--temp-dir={temp}"]  # fmt: skip
    subprocess.run(cmd, check=True, capture_output=True)
    return f"127.0.0.1:{port}"


def stop_cluster() -> None:
    subprocess.run([sys.executable, "-m", "ray.scripts.scripts", "stop"], check=False, capture_output=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="tiny")
    ap.add_argument("--videos", type=int, default=6)
    ap.add_argument("--seconds", type=int, default=120)
    ap.add_argument("--modes", default="cold,cluster", help="comma-separated: cold, cluster")
    ap.add_argument("--library", type=Path, help="keep the generated library here (made once, reused)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    modes = [m for m in args.modes.split(",") if m]
    work = Path(tempfile.mkdtemp(prefix="vidsearch-raybench-"))
    lib = args.library or work / "lib"
    load_before = os.getloadavg()
    runs: dict[str, dict] = {}
    try:
        make_videos(lib, args.videos, args.seconds)
        runs["local_first"] = run_once("local", lib, args.model, work)
        import ray

        if "cold" in modes:
            runs["ray_cold"] = run_once("ray", lib, args.model, work)
            ray.shutdown()
        if "cluster" in modes:
            address = start_cluster(work / "ray")
            try:
                runs["ray_cluster"] = run_once("ray", lib, args.model, work, address=address, match=str(work / "ray"))
            finally:
                ray.shutdown()
                stop_cluster()
        runs["local_last"] = run_once("local", lib, args.model, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    local = (runs["local_first"]["video_s_per_s"] + runs["local_last"]["video_s_per_s"]) / 2
    local_cpu = (runs["local_first"]["cpu_s"] + runs["local_last"]["cpu_s"]) / 2
    result = {"videos": args.videos, "seconds_each": args.seconds, "model": args.model, "cpus": os.cpu_count(),
              "load_before": [round(x, 2) for x in load_before], "load_after": [round(x, 2) for x in os.getloadavg()],
              "local_video_s_per_s": round(local, 3), "runs": runs,
              "ratio": {m: round(runs[f"ray_{m}"]["video_s_per_s"] / local, 3) for m in modes},
              "cpu_ratio": {m: round(runs[f"ray_{m}"]["cpu_s"] / local_cpu, 3) for m in modes}}  # fmt: skip
    if args.json:
        print(json.dumps(result))
        return
    print(f"{args.videos} videos x {args.seconds} s, model {args.model}, {os.cpu_count()} CPUs, "
          f"load average before {result['load_before']} after {result['load_after']}")  # fmt: skip
    for name, r in runs.items():
        print(f"  {name:12s} {r['video_s_per_s']:7.2f} s of video/s  (wall {r['wall_s']:.1f} s, CPU {r['cpu_s']:.1f} s, "
              f"load {r['load']:.1f})  {r['phases'] or ''}")  # fmt: skip
    for m, ratio in result["ratio"].items():
        print(f"  ratio ray ({m}) / local: {ratio:.3f}  goal >= 0.8: {'met' if ratio >= 0.8 else 'missed'}   "
              f"CPU seconds ray / local: {result['cpu_ratio'][m]:.2f}")  # fmt: skip


if __name__ == "__main__":
    main()
