"""Encoding through Triton vs local torch, on the same machine, in one run.

For each model (shipped `tiny`; ViT-B-32 with random weights, speed does not depend on them) the towers
are exported with `export_triton` into one repository, served by PyTriton's tritonserver on loopback
(deploy/triton/local_server.py: the same ONNX files, run by onnxruntime in the server), and measured:

- frames/s at request batch sizes 1-64 through `TritonBackbone.encode_frames` (the indexer's path:
  requests cut to the batch, two in flight), HTTP and gRPC, against the local backbone at its default
  precision (bf16 where the CPU has AMX and it matches fp32) and at fp32, and against onnxruntime in
  this process with no server (which separates the server's overhead from the runtime's speed);
- query-encode latency p50/p99 (one caption a request, as the query server sends them).

Targets on this CPU machine (overhead, not speed): Triton >= 0.8x local throughput for indexing
batches, <= 5 ms added latency per query. Each throughput figure is the median of --repeats
interleaved runs; the machine's cores are shared, so medians and ratios, not single runs.

    python bench/triton_encode.py [--models tiny ViT-B-32] [--batches 1 8 32 64] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("LANCE_LOG", "error")
# torch's OpenMP threads spin after each parallel region unless told otherwise; with onnxruntime and a
# server on the same two cores, a spinning runtime starves the one that is measured
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "deploy" / "triton"))

from local_server import LocalTriton, ensure_venv  # noqa: E402

from vidsearch.encoders.backbone import load_backbone  # noqa: E402
from vidsearch.encoders.onnx_export import DEFAULT_CAPTIONS, IMAGE_INPUT, OUTPUT, TEXT_INPUT, export_triton, model_names  # noqa: E402
from vidsearch.encoders.triton_backend import TritonOptions, load_triton_backbone  # noqa: E402

FRAMES = {"tiny": 512, "ViT-B-32": 64}
QUERIES = [f"{c} number {i}" for i in range(10) for c in DEFAULT_CAPTIONS[:10]]


def _prefix(model: str) -> str:
    return model.lower().replace("-", "")


def _frames(n: int, size: int, seed: int = 0) -> np.ndarray:
    """Smooth frames (gradients and blocks), not noise: closer to what decoders hand the encoder."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size] / size
    out = np.empty((n, size, size, 3), np.uint8)
    for i in range(n):
        c = rng.uniform(0, 1, (3, 3))
        img = np.stack([c[k, 0] * x + c[k, 1] * y + c[k, 2] * np.sin(6 * x * (k + 1) + i) for k in range(3)], -1)
        out[i] = np.clip(img / img.max() * 255, 0, 255).astype(np.uint8)
    return out


class OrtLocal:
    """The exported ONNX files run by onnxruntime in this process: the server's runtime without the server."""

    def __init__(self, repo: Path, prefix: str, tokenizer):
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")  # as the server runs it
        image, text = model_names(prefix)
        self.image = ort.InferenceSession(str(repo / image / "1" / "model.onnx"), opts, providers=["CPUExecutionProvider"])
        self.text = ort.InferenceSession(str(repo / text / "1" / "model.onnx"), opts, providers=["CPUExecutionProvider"])
        self.tokenizer = tokenizer

    def encode_frames(self, frames: np.ndarray, batch: int) -> np.ndarray:
        return np.concatenate([self.image.run([OUTPUT], {IMAGE_INPUT: frames[i : i + batch]})[0] for i in range(0, len(frames), batch)])

    def encode_text(self, texts: list[str]) -> np.ndarray:
        return self.text.run([OUTPUT], {TEXT_INPUT: self.tokenizer(texts).numpy().astype(np.int32)})[0]


def _fps(encode, frames: np.ndarray, batch: int) -> float:
    t0 = time.perf_counter()
    encode(frames, batch)
    return len(frames) / (time.perf_counter() - t0)


def _latency(encode_text, queries: list[str]) -> dict:
    encode_text(queries[:3])  # warm
    ts = []
    for q in queries:
        t0 = time.perf_counter()
        encode_text([q])
        ts.append((time.perf_counter() - t0) * 1000)
    a = np.array(ts)
    return {"p50_ms": round(float(np.percentile(a, 50)), 2), "p99_ms": round(float(np.percentile(a, 99)), 2)}


def bench_model(name: str, repo: Path, server: LocalTriton, batches: list[int], repeats: int, n_frames: int) -> dict:
    prefix = _prefix(name)
    local = load_backbone(name, pretrained=None if name == "tiny" else "none", device="cpu")
    local32 = load_backbone(name, pretrained=None if name == "tiny" else "none", precision="fp32", device="cpu")
    backends = {
        f"local torch ({str(local.visual_dtype).removeprefix('torch.')})": lambda f, b: local.encode_units(
            f, np.arange(len(f), dtype=float), np.arange(len(f)) + 1.0, np.zeros(len(f), int), b),
        "local torch (float32)": lambda f, b: local32.encode_units(
            f, np.arange(len(f), dtype=float), np.arange(len(f)) + 1.0, np.zeros(len(f), int), b),
        "onnxruntime in-process": None,
        "triton http": None,
        "triton grpc": None,
    }  # fmt: skip
    ort_local = OrtLocal(repo, prefix, local.tokenizer)
    http = load_triton_backbone(TritonOptions(server.http_url, prefix=prefix, timeout=600), name, pretrained=None if name == "tiny" else "none")
    grpc = load_triton_backbone(TritonOptions(server.grpc_url, prefix=prefix, timeout=600), name, pretrained=None if name == "tiny" else "none")
    backends["onnxruntime in-process"] = ort_local.encode_frames
    backends["triton http"] = lambda f, b: http.encode_frames(f, b)
    backends["triton grpc"] = lambda f, b: grpc.encode_frames(f, b)
    frames = _frames(n_frames, local.image_size)
    # equality on these frames, for the record (the test asserts it on decoded video)
    ref = local32.encode_frames(frames[:64])
    cos = {k: float(np.min(np.sum(b.encode_frames(frames[:64]) * ref, -1))) for k, b in (("http", http), ("grpc", grpc))}
    for fn in backends.values():  # warm every path once (threads, sessions, connections)
        fn(frames[:8], 8)
    throughput: dict[str, dict[int, float]] = {k: {} for k in backends}
    for b in batches:
        runs: dict[str, list[float]] = {k: [] for k in backends}
        some = frames[: max(32, min(len(frames), 32 * b))]  # small batches: fewer frames, similar time
        for _ in range(repeats):  # interleaved, so a burst of load on the shared cores hits all alike
            for k, fn in backends.items():
                runs[k].append(_fps(fn, some, b))
        for k in backends:
            throughput[k][b] = round(statistics.median(runs[k]), 1)
    latency = {
        list(backends)[0]: _latency(local.encode_text, QUERIES),
        "onnxruntime in-process": _latency(ort_local.encode_text, QUERIES),
        "triton http": _latency(http.encode_text, QUERIES),
        "triton grpc": _latency(grpc.encode_text, QUERIES),
    }
    return {"model": name, "fingerprint": http.fingerprint.id, "frames": n_frames, "image_size": local.image_size,
            "cosine_to_torch_fp32": cos, "throughput_fps": throughput, "query_latency": latency}  # fmt: skip


def _ratios(r: dict) -> dict:
    t = r["throughput_fps"]
    keys = list(t)
    local, local32 = keys[0], keys[1]
    out = {}
    for proto in ("triton http", "triton grpc"):
        for b in t[proto]:
            out.setdefault(proto, {})[b] = {
                "vs_local": round(t[proto][b] / t[local][b], 2),
                "vs_local_fp32": round(t[proto][b] / t[local32][b], 2),
                "vs_onnxruntime": round(t[proto][b] / t["onnxruntime in-process"][b], 2),
            }
    lat = r["query_latency"]
    added = {p: round(lat[p]["p50_ms"] - lat[keys[0]]["p50_ms"], 2) for p in ("triton http", "triton grpc")}
    overhead = {p: round(lat[p]["p50_ms"] - lat["onnxruntime in-process"]["p50_ms"], 2) for p in ("triton http", "triton grpc")}
    return {"throughput": out, "added_query_ms_vs_local": added, "server_overhead_query_ms": overhead}


def print_table(results: list[dict], startup: float) -> None:
    print(f"\ntritonserver (PyTriton, onnxruntime CPU) ready in {startup:.1f} s; cores: {os.cpu_count()}")
    for r in results:
        t = r["throughput_fps"]
        batches = list(next(iter(t.values())))
        print(f"\n{r['model']} ({r['image_size']}px, {r['frames']} frames a run) - frames/s, median of runs; "
              f"cosine Triton vs torch fp32: {', '.join(f'{k} {v:.5f}' for k, v in r['cosine_to_torch_fp32'].items())}")  # fmt: skip
        print(f"{'backend':28}" + "".join(f"{'batch ' + str(b):>10}" for b in batches))
        for k, row in t.items():
            print(f"{k:28}" + "".join(f"{row[b]:>10.1f}" for b in batches))
        ratios = r["ratios"]["throughput"]
        for proto, row in ratios.items():
            print(f"{proto + ' / local':28}" + "".join(f"{row[b]['vs_local']:>10.2f}" for b in batches))
            print(f"{proto + ' / local fp32':28}" + "".join(f"{row[b]['vs_local_fp32']:>10.2f}" for b in batches))
            print(f"{proto + ' / onnxruntime':28}" + "".join(f"{row[b]['vs_onnxruntime']:>10.2f}" for b in batches))
        print(f"\n{'query encode (1 caption)':28}{'p50 ms':>10}{'p99 ms':>10}")
        for k, v in r["query_latency"].items():
            print(f"{k:28}{v['p50_ms']:>10.2f}{v['p99_ms']:>10.2f}")
        added, over = r["ratios"]["added_query_ms_vs_local"], r["ratios"]["server_overhead_query_ms"]
        print("added p50 vs local torch: " + ", ".join(f"{k} {v:+.2f} ms" for k, v in added.items())
              + "; server overhead vs onnxruntime in-process: " + ", ".join(f"{k} {v:+.2f} ms" for k, v in over.items()))  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=["tiny", "ViT-B-32"])
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 8, 32, 64])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--frames", type=int, default=None, help="frames per run (default: 512 tiny, 64 ViT-B-32)")
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--json", action="store_true", help="print one JSON object (the table goes to stderr)")
    args = parser.parse_args()
    ensure_venv()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="vidsearch-triton-bench-"))
    repo = work / "repo"
    for name in args.models:
        if not (repo / f"{_prefix(name)}_image").is_dir():
            bb = load_backbone(name, pretrained=None if name == "tiny" else "none", precision="fp32", device="cpu")
            rep = export_triton(bb, repo, _frames(16, bb.image_size, seed=1), prefix=_prefix(name))
            print(f"exported {name}: " + ", ".join(f"{c.role} cosine {c.min_cosine:.6f}" for c in rep.checks), file=sys.stderr)
    results = []
    with LocalTriton(repo, work / "server") as server:
        for name in args.models:
            n = args.frames or FRAMES.get(name, 128)
            r = bench_model(name, repo, server, args.batches, args.repeats, n)
            r["ratios"] = _ratios(r)
            results.append(r)
        startup = server.startup_seconds
    out = sys.stderr if args.json else sys.stdout
    stdout, sys.stdout = sys.stdout, out
    try:
        print_table(results, startup)
    finally:
        sys.stdout = stdout
    if args.json:
        print(json.dumps({"server_startup_s": round(startup, 1), "cpu_count": os.cpu_count(), "results": results}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
