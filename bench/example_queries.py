"""Query by example on the synthetic corpus: a picture of an event, and "more like this" moment.

Renders a synthetic corpus (lab/synth.py: every event known), indexes it with the shipped `tiny`
model (speech and OCR off), then, for every event whose look (colour, shape, motion, background:
its `visual_key`) appears in another video too, asks three ways for that other rendering, with the
query's own video left out of the gallery:

* **image**: one frame of the event (its middle, as a PNG at the video's size) uploaded as a picture;
* **like**: `like: {video_id, start, end}` over the event (the stored vectors; nothing re-encoded);
* **text** (the baseline, side by side): the event's held-out test caption.

P@1: the top video holds an event with the same look. Moment IoU: the top video's best moment
against that event (the best of its events with the look; 0 when the video is wrong). Chance: the
share of the gallery's videos that hold the look. Also: image queries of looks found *nowhere* else
in the library ("absent"), whose top score should sit below the present ones' (their AUC).

    python bench/example_queries.py [--videos 60] [--seed 11] [--work DIR] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

os.environ.setdefault("LANCE_LOG", "error")

from vidsearch.config import load_settings  # noqa: E402
from vidsearch.encoders.backbone import load_backbone  # noqa: E402
from vidsearch.indexer.pipeline import IndexRun, open_store_for  # noqa: E402
from vidsearch.lab import synth  # noqa: E402
from vidsearch.search import temporal_iou  # noqa: E402
from vidsearch.server import local_client  # noqa: E402


def frame_png(video: Path, t: float) -> bytes:
    cmd = ["ffmpeg", "-nostdin", "-v", "error", "-ss", f"{t:.3f}", "-i", str(video), "-frames:v", "1", "-f", "image2pipe", "-c:v", "png", "-"]
    return subprocess.run(cmd, check=True, capture_output=True).stdout


def build(work: Path, videos: int, seed: int):
    corpus, db = work / "corpus", work / "db"
    if not (corpus / "events.jsonl").exists():
        synth.generate(corpus, videos, seed, jobs=2, test_fraction=0.0, progress=False)
    settings = load_settings(None, db=db, model="tiny", speech=False, ocr=False)
    if not db.exists():
        backbone = load_backbone("tiny")
        IndexRun(open_store_for(settings, backbone), backbone, settings).run([corpus / "videos"])
    return corpus, settings


def auc(pos: np.ndarray, neg: np.ndarray) -> float:
    """P(a present query's top score > an absent one's), ties half (columnar)."""
    if not len(pos) or not len(neg):
        return float("nan")
    diff = pos[:, None] - neg[None, :]
    return float(((diff > 0) + 0.5 * (diff == 0)).mean())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--videos", type=int, default=60)
    ap.add_argument("--seed", type=int, default=11, help="corpus seed (the shipped model trained on seed 7)")
    ap.add_argument("--work", type=Path, default=None, help="keep the corpus and index here (reused when present)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="vidsearch-examples-"))
    t0 = time.perf_counter()
    corpus, settings = build(work, args.videos, args.seed)
    built = time.perf_counter() - t0
    plans = synth.plan(args.videos, args.seed, 0.0)
    with local_client(settings) as vs:
        ids = {Path(v.uri).name: v.id for v in vs.videos(limit=1000).videos}
        vid_of = {p.index: ids[Path(p.video).name] for p in plans}
        spans = defaultdict(list)  # (video id, visual key) -> event spans
        holders = defaultdict(set)  # visual key -> video ids
        for p in plans:
            for e in p.events:
                spans[(vid_of[p.index], e.visual_key)].append((e.start, e.end))
                holders[e.visual_key].add(vid_of[p.index])
        all_ids = sorted(ids.values())
        rows = {"image": [], "like": [], "text": []}
        chance, present_top, absent_top, took = [], [], [], []
        for p in plans:
            src = vid_of[p.index]
            others = [v for v in all_ids if v != src]
            for e in p.events:
                png = frame_png(corpus / p.video, (e.start + e.end) / 2)
                only = {"filters": {"video_ids": others}, "top_k": 1, "max_moments": 1}
                targets = holders[e.visual_key] - {src}
                if not targets:  # a look found nowhere else: how high does its best match score?
                    r = vs.search(image=png, **only).results
                    absent_top.append(r[0].channel_scores.get("visual", 0.0) if r else 0.0)
                    continue
                chance.append(len(targets) / len(others))
                asks = {
                    "image": lambda: vs.search(image=png, **only),
                    "like": lambda: vs.more_like(src, e.start, e.end, top_k=1, max_moments=1),
                    "text": lambda: vs.search(e.captions["test"], **only),
                }
                for name, ask in asks.items():
                    t = time.perf_counter()
                    resp = ask()
                    took.append((name, time.perf_counter() - t))
                    top = resp.results[0] if resp.results else None
                    hit = top is not None and top.video.id in targets
                    iou = 0.0
                    if hit and top.moments:
                        m = top.moments[0]
                        iou = float(temporal_iou([[m.start, m.end]], spans[(top.video.id, e.visual_key)]).max())
                    rows[name].append((hit, iou))
                    if name == "image" and top is not None:
                        present_top.append(top.channel_scores.get("visual", 0.0))
    report = {"videos": args.videos, "seed": args.seed, "queries": len(rows["image"]), "absent_queries": len(absent_top),
              "build_s": round(built, 1), "chance_p_at_1": round(float(np.mean(chance)), 3)}  # fmt: skip
    for name, got in rows.items():
        hits, ious = np.array([g[0] for g in got], bool), np.array([g[1] for g in got])
        ms = np.array([dt for n, dt in took if n == name]) * 1000
        report[name] = {"p_at_1": round(float(hits.mean()), 3), "mean_iou": round(float(ious.mean()), 3),
                        "iou_at_0.5": round(float((ious >= 0.5).mean()), 3), "median_ms": round(float(np.median(ms)), 1)}  # fmt: skip
    pos, neg = np.array(present_top), np.array(absent_top)
    report["absent"] = {"median_top_score_present": round(float(np.median(pos)), 3), "median_top_score_absent": round(float(np.median(neg)), 3),
                        "auc_present_over_absent": round(auc(pos, neg), 3)}  # fmt: skip
    if args.json:
        print(json.dumps(report))
        return
    print(f"{report['queries']} queries (events whose look is in another video), {args.videos} videos, seed {args.seed}; chance P@1 {report['chance_p_at_1']}")
    print(f"{'query':<8}{'P@1':>8}{'mean IoU':>10}{'IoU>=0.5':>10}{'median ms':>11}")
    for name in ("text", "image", "like"):
        r = report[name]
        print(f"{name + (' (baseline)' if name == 'text' else ''):<8}{r['p_at_1']:>8.3f}{r['mean_iou']:>10.3f}{r['iou_at_0.5']:>10.3f}{r['median_ms']:>11.1f}")
    a = report["absent"]
    print(f"image queries of looks absent from the library ({len(neg)}): median top score {a['median_top_score_absent']:.3f} "
          f"vs {a['median_top_score_present']:.3f} present; AUC {a['auc_present_over_absent']:.3f}")  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
