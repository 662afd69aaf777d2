"""Frames per second of the indexer's encode step on the machine's accelerator, against its CPU.

The indexer hands the frame tower uint8 frames already resized and cropped (`ClipBackbone.encode_units`:
upload, scale and normalise on the device, the tower, unit vectors back to the host); this times that
call, not the bare tower, with `--batches` tower batches in one call (as the Ray encode actor hands
over a whole video), for each model x precision x batch size x token merging asked, on the device
asked (`--device cuda`) and, as the baseline in the same run, on the CPU (`--cpu-batches` batches of
the first configuration; 0 skips it). Without merging on a GPU it also times the per-batch loop the
call ran before uploads overlapped the tower (upload, tower, vectors back, batch by batch) and checks
that both give the same vectors; and (unless `--no-tower`) the tower alone on frames already there. Random weights (`pretrained="none"`): speed does not
depend on their values, and no weights are downloaded. Frames are the token-merging bench's synthetic
clips (a panning textured scene with moving objects), so merging sees real redundancy.

Printed per configuration: frames/s (median of `--repeats` timed runs after a warm-up; the device is
synchronised before the clock stops, since the vectors come back to the host), GFLOPs per frame
(torch's FLOP counter, on the CPU), the achieved TFLOP/s, and the device's peak memory. The README's
"On paper, nodes and GPUs" estimated ~34,000 ViT-B-32 frames/s on an H100 at 30% of its dense bf16
peak; this measures it.

    python bench/encode_device.py [--device cuda] [--models ViT-B-32] [--precision bf16 fp32]
                                  [--batch 64 256 1024] [--merging off recommended] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

from vidsearch.encoders.backbone import load_backbone

sys.path.insert(0, str(Path(__file__).parent))
from token_merging import _gflops, synthetic_clips  # noqa: E402

FRAMES_PER_CLIP = 12  # one clip is one video's run of frames (merging works within a video)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _gflops_per_frame(bb, frames: np.ndarray) -> float:
    """FLOPs of `encode_units` per frame on two clips (a CPU copy of the model: the same graph;
    merging merges within each clip)."""
    n = 2 * FRAMES_PER_CLIP
    starts = np.arange(n, dtype=np.float64) % FRAMES_PER_CLIP
    return _gflops(lambda: bb.encode_units(frames[:n], starts, starts + 1.0, np.arange(n) // FRAMES_PER_CLIP, batch=n)) / n


def _repeat(frames: np.ndarray, n: int, batch: int) -> np.ndarray:
    """`n` frames made of the synthetic clips, repeated (whole clips: merging works within one)."""
    pool = frames[: max(batch, FRAMES_PER_CLIP)]
    return np.concatenate([pool] * (n // len(pool) + 1))[:n]


def _timed(fn, repeats: int):
    """(median seconds of `repeats` calls after a warm-up that picks kernels and grows memory pools,
    the last call's result)."""
    fn()
    times, got = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        got = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), got


def measure(model: str, precision: str, batch: int, merging: str, device: str, frames: np.ndarray, repeats: int, batches: int) -> dict:
    """Frames/s of one `encode_units` call on `batches` batches of `batch` frames (whole clips)."""
    bb = load_backbone(model, pretrained="none", precision=precision, device=device, merging=merging)
    dev = torch.device(device)
    n = batch * batches
    work = _repeat(frames, n, batch)
    starts = np.arange(n, dtype=np.float64) % FRAMES_PER_CLIP
    video = np.arange(n) // FRAMES_PER_CLIP

    def run() -> np.ndarray:
        # one call for all the frames, cut into `batch`-frame tower calls inside: as the Ray encode
        # actor hands over a whole video, and the local indexer a buffer of at least `batch_size`
        vecs, *_ = bb.encode_units(work, starts, starts + 1.0, video, batch=batch)
        _sync(dev)
        return vecs

    def plain() -> np.ndarray:  # the loop encode_units ran before: upload, tower, vectors back, per batch
        return np.concatenate([bb.encode_frames(work[i : i + batch]) for i in range(0, n, batch)])

    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    secs, vecs = _timed(run, repeats)
    out = {
        "model": model, "precision": precision, "batch": batch, "merging": merging, "device": device,
        "dtype": str(bb.visual_dtype).replace("torch.", ""), "frames": n, "units": len(vecs),
        "frames_per_s": round(n / secs, 1), "seconds": round(secs, 4),
    }  # fmt: skip
    if dev.type == "cuda":
        out["peak_memory_gb"] = round(torch.cuda.max_memory_allocated(dev) / 1e9, 2)
        if merging == "off":
            plain_secs, plain_vecs = _timed(plain, repeats)
            out["plain_loop_frames_per_s"] = round(n / plain_secs, 1)
            out["max_abs_diff_vs_plain_loop"] = float(np.abs(plain_vecs - vecs).max())
    del bb
    if dev.type == "cuda":
        torch.cuda.empty_cache()
    return out


def measure_tower(model: str, precision: str, batch: int, device: str, frames: np.ndarray, repeats: int, batches: int) -> dict:
    """Frames/s of the tower alone on frames already on the device, normalised and cast: what the
    encode step would reach if uploading, normalising and returning vectors cost nothing."""
    bb = load_backbone(model, pretrained="none", precision=precision, device=device)
    dev = torch.device(device)
    x = bb._normalised(_repeat(frames, batch, batch)).to(bb.visual_dtype)

    def run() -> None:
        with torch.inference_mode():
            for _ in range(batches):
                bb.model.encode_image(x)
        _sync(dev)

    secs, _ = _timed(run, repeats)
    del bb, x
    if dev.type == "cuda":
        torch.cuda.empty_cache()
    return {"model": model, "precision": precision, "batch": batch, "frames_per_s": round(batch * batches / secs, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--models", nargs="+", default=["ViT-B-32"])
    ap.add_argument("--precision", nargs="+", default=["bf16", "fp32"])
    ap.add_argument("--batch", type=int, nargs="+", default=[64, 256, 1024])
    ap.add_argument("--merging", nargs="+", default=["off", "recommended"])
    ap.add_argument("--batches", type=int, default=8, help="batches per timed run on the device")
    ap.add_argument("--cpu-batches", type=int, default=2, help="batches of the first configuration on the CPU (0: no baseline)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--no-tower", action="store_true", help="skip the tower-alone rows")
    ap.add_argument("--json", action="store_true", help="print exactly one JSON object")
    ap.add_argument("--json-out", type=Path, help="also write the JSON report to this file")
    args = ap.parse_args()
    size = load_backbone(args.models[0], pretrained="none", device="cpu").image_size
    frames = synthetic_clips(max(args.batch) // FRAMES_PER_CLIP + 1, FRAMES_PER_CLIP, size)
    rows = []
    for model in args.models:
        gflops = {m: _gflops_per_frame(load_backbone(model, pretrained="none", device="cpu", merging=m), frames) for m in args.merging}
        for precision in args.precision:
            for merging in args.merging:
                for batch in args.batch:
                    row = measure(model, precision, batch, merging, args.device, frames, args.repeats, args.batches)
                    row["gflops_per_frame"] = round(gflops[merging], 3)
                    row["achieved_tflops"] = round(row["frames_per_s"] * gflops[merging] / 1e3, 1)
                    rows.append(row)
    towers = [measure_tower(m, p, b, args.device, frames, args.repeats, args.batches)
              for m in args.models for p in args.precision for b in args.batch] if args.device != "cpu" and not args.no_tower else []  # fmt: skip
    baseline = None
    if args.cpu_batches and args.device != "cpu":
        first = rows[0]
        baseline = measure(first["model"], first["precision"], first["batch"], first["merging"], "cpu", frames, 1, args.cpu_batches)
        baseline["cpus"] = os.cpu_count()
    report = {"device": args.device, "device_name": torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu",
              "torch": torch.__version__, "rows": rows, "tower_alone": towers, "cpu_baseline": baseline}  # fmt: skip
    if args.json_out:
        args.json_out.write_text(json.dumps(report))
    if args.json:
        print(json.dumps(report))
        return
    print(f"{report['device_name']} (torch {report['torch']}); encode_units from uint8 frames, medians of {args.repeats}:")
    print(f"{'model':10} {'precision':9} {'merging':12} {'batch':>5} {'frames/s':>10} {'GFLOPs/frame':>12} {'TFLOP/s':>8} {'peak GB':>7}")
    for r in rows:
        print(f"{r['model']:10} {r['precision']:9} {r['merging']:12} {r['batch']:>5} {r['frames_per_s']:>10} {r['gflops_per_frame']:>12} "
              f"{r['achieved_tflops']:>8} {r.get('peak_memory_gb', '-'):>7}")  # fmt: skip
        if "plain_loop_frames_per_s" in r:
            print(f"{'':44} per-batch loop (before): {r['plain_loop_frames_per_s']} frames/s; "
                  f"vectors agree within {r['max_abs_diff_vs_plain_loop']:.1e}")  # fmt: skip
    for t in towers:
        print(f"tower alone, frames already on the device: {t['model']} {t['precision']} batch {t['batch']}: {t['frames_per_s']} frames/s")
    if baseline:
        print(f"CPU baseline ({baseline['cpus']} CPUs, {baseline['model']} {baseline['precision']} batch {baseline['batch']}): "
              f"{baseline['frames_per_s']} frames/s; the device: {rows[0]['frames_per_s'] / baseline['frames_per_s']:.0f}x")  # fmt: skip


if __name__ == "__main__":
    main()
