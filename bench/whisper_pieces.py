"""What Whisper costs per minute of continuous speech, by piece length and thread count, and what it
hears: the previous setting (10 s pieces, a thread per core) against the current one (30 s pieces,
half the cores), in one run on the same audio.

Why pieces matter: Whisper's encoder always reads a 30 s window, so a 10 s piece of speech is padded
to 30 s and a minute of speech cut into 10 s pieces pays for six windows instead of two. Why threads:
batched decoding of short pieces gains little from a second thread on a small machine, and speech
runs beside the frame encoder, OCR and the decoders.

Media (made here): five ~55 s recordings of known sentences, one per flite voice (kal, slt, rms, awb,
kal16). Printed per configuration: CPU and wall seconds per minute of speech (medians of
`--repeats`), and the word error rate per voice and on average.

    python bench/whisper_pieces.py [--repeats 3] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from vidsearch.encoders.speech import SAMPLE_RATE, SpeechRecognizer, wer

sys.path.insert(0, str(Path(__file__).parent))
from index_throughput import SENTENCES  # noqa: E402

VOICES = ("kal", "slt", "rms", "awb", "kal16")
CORES = len(os.sched_getaffinity(0))
CONFIGS = {
    "previous: 10 s pieces, a thread per core": {"piece_seconds": 10.0, "threads": CORES},
    "30 s pieces, a thread per core": {"piece_seconds": 30.0, "threads": CORES},
    "now: 30 s pieces, half the cores": {"piece_seconds": 30.0, "threads": max(1, CORES // 2)},
}


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def recordings(work: Path) -> list[tuple[str, np.ndarray]]:
    """(text said, 16 kHz mono samples) per voice: as many sentences as fit in ~55 s."""
    out = []
    for k, voice in enumerate(VOICES):
        text = ". ".join(SENTENCES[(i + 5 * k) % len(SENTENCES)] for i in range(22))
        wav, raw = work / f"{voice}.wav", work / f"{voice}.f32"
        subprocess.run(["flite", "-voice", voice, "-t", text, "-o", str(wav)], check=True)
        subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(wav), "-ar", str(SAMPLE_RATE), "-ac", "1", "-f", "f32le", str(raw)], check=True)
        out.append((text, np.fromfile(raw, dtype=np.float32)))
    return out


def measure(cfg: dict, clips: list[tuple[str, np.ndarray]], repeats: int) -> dict:
    rec = SpeechRecognizer("whisper", cpu_threads=cfg["threads"])
    rec._impl.piece_seconds = cfg["piece_seconds"]
    rec.transcribe(clips[0][1][: 5 * SAMPLE_RATE])  # warm: model load and first-call costs out of the timing
    minutes = sum(len(a) for _, a in clips) / SAMPLE_RATE / 60
    cpu, wall, wers = [], [], []
    for rep in range(repeats):
        c0, t0 = _cpu(), time.perf_counter()
        heard = [" ".join(w.text for w in rec.transcribe(a).words) for _, a in clips]
        cpu.append((_cpu() - c0) / minutes)
        wall.append((time.perf_counter() - t0) / minutes)
        if rep == 0:
            wers = [wer(text, said) for (text, _), said in zip(clips, heard)]
    return {"cpu_s_per_min": round(statistics.median(cpu), 2), "wall_s_per_min": round(statistics.median(wall), 2),
            "wer_mean": round(float(np.mean(wers)), 4), "wer_by_voice": dict(zip(VOICES, (round(w, 4) for w in wers)))}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        clips = recordings(Path(tmp))
    rows = [{"config": name, **cfg, **measure(cfg, clips, args.repeats)} for name, cfg in CONFIGS.items()]
    result = {"voices": list(VOICES), "seconds": [round(len(a) / SAMPLE_RATE, 1) for _, a in clips], "repeats": args.repeats, "rows": rows}
    if args.json:
        print(json.dumps(result))
        return
    print(f"{len(clips)} voices, {sum(result['seconds']):.0f} s of speech, medians of {args.repeats}:")
    print(f"{'config':42} {'CPU s/min':>9} {'wall s/min':>10} {'WER':>6}  WER by voice")
    for r in rows:
        by = " ".join(f"{v} {w:.3f}" for v, w in r["wer_by_voice"].items())
        print(f"{r['config']:42} {r['cpu_s_per_min']:>9} {r['wall_s_per_min']:>10} {r['wer_mean']:>6.3f}  {by}")
    base, now = rows[0], rows[-1]
    print(f"CPU per minute of speech: {base['cpu_s_per_min']} -> {now['cpu_s_per_min']} ({base['cpu_s_per_min'] / now['cpu_s_per_min']:.1f}x less), "
          f"WER {base['wer_mean']:.3f} -> {now['wer_mean']:.3f}")  # fmt: skip


if __name__ == "__main__":
    main()
