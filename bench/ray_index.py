"""The Ray engine against the local engine, on the same generated library, in one run on this machine.

Goal: on one node the Ray engine keeps >= 0.8 of the local engine's throughput (Ray's overhead must
be small). Reported: wall seconds and seconds of video per second for each engine, their ratio, and
the Ray engine's phases (connect / hash stage / first video out, i.e. actor start-up and model load /
all videos), from which the README's scaling figures are worked out. Each engine indexes into a new
index; the Ray engine starts its own local cluster with this machine's CPUs (`ray.init`), which the
phases show apart. Random weights: speed does not depend on their values.

    python bench/ray_index.py [--model tiny] [--videos 8] [--seconds 20] [--repeats 1] [--json]
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import shutil
import statistics
import sys
import tempfile
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


def run_once(engine: str, lib: Path, model: str, work: Path) -> dict:
    db = work / f"db-{engine}"
    shutil.rmtree(db, ignore_errors=True)
    settings = Settings(db=db, model=model, pretrained="none", speech=False, ocr=False, engine=engine)
    loader = functools.partial(load_backbone, model, pretrained="none")
    backbone = loader()
    store = open_store_for(settings, backbone)
    t0 = time.perf_counter()
    if engine == "ray":
        run = RayIndexRun(store, backbone, settings, load_backbone=loader)
    else:
        run = IndexRun(store, backbone, settings)
    summary = run.run([lib])
    wall = time.perf_counter() - t0
    assert summary.failed == 0, summary.failures
    return {"wall_s": wall, "video_s_per_s": summary.video_seconds / wall, "indexed": summary.indexed,
            "phases": {k: round(v, 2) for k, v in getattr(run, "timings", {}).items()}}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="tiny")
    ap.add_argument("--videos", type=int, default=8)
    ap.add_argument("--seconds", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="vidsearch-raybench-"))
    try:
        make_videos(work / "lib", args.videos, args.seconds)
        runs = {e: [run_once(e, work / "lib", args.model, work) for _ in range(args.repeats)] for e in ("local", "ray")}
    finally:
        try:
            import ray

            ray.shutdown()
        finally:
            shutil.rmtree(work, ignore_errors=True)
    med = {e: statistics.median(r["video_s_per_s"] for r in rs) for e, rs in runs.items()}
    steady = runs["ray"][-1]["phases"]
    # throughput once the actors are up: the videos after the first, over the time they took
    after = steady.get("all_videos", 0) - steady.get("first_video", 0)
    ray_steady = (args.videos - 1) * args.seconds / after if after > 0 else float("nan")
    result = {"videos": args.videos, "seconds_each": args.seconds, "model": args.model, "cpus": os.cpu_count(),
              "local_video_s_per_s": round(med["local"], 2), "ray_video_s_per_s": round(med["ray"], 2),
              "ratio_ray_to_local": round(med["ray"] / med["local"], 3),
              "ray_steady_video_s_per_s": round(ray_steady, 2), "runs": runs}  # fmt: skip
    if args.json:
        print(json.dumps(result))
        return
    print(f"{args.videos} videos x {args.seconds} s, model {args.model}, {os.cpu_count()} CPUs")
    for e in ("local", "ray"):
        print(f"  {e:5s}  {med[e]:7.2f} s of video/s   (wall {statistics.median(r['wall_s'] for r in runs[e]):.1f} s)")
    print(f"  ratio ray/local: {result['ratio_ray_to_local']:.3f}   (goal >= 0.8)")
    print(f"  ray phases (s): {steady}   steady state after the first video: {ray_steady:.2f} s of video/s")


if __name__ == "__main__":
    main()
