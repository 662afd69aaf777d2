"""How well the pixel cue alone tells direction: the ceiling the temporal module can learn toward.

For each event of a synthetic corpus that moves left, right, up or down, the video is sampled as the
indexer samples it (1 fps, centre crop at the model's 224) and the event's direction is read as the
larger component of its `where_cues` move from the event's first sampled frame to its last. A model
whose direction accuracy is far below this has the information in its units and has not learned to
use it; a cue far below 100% would mean the cue itself misses (e.g. the shape is the background).

    python -m vidsearch.lab.direction_cues CORPUS [--videos N] [--json]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from vidsearch.encoders.temporal import frame_cues
from vidsearch.indexer.decode import decode_frames, plan_samples
from vidsearch.indexer.probe import probe

DIRECTIONS = ("left", "right", "up", "down")


def read_direction(move: np.ndarray) -> str:
    """(dx, dy) in image coordinates (y down) -> the direction word of its larger component."""
    dx, dy = float(move[0]), float(move[1])
    return ("left" if dx < 0 else "right") if abs(dx) > abs(dy) else ("up" if dy < 0 else "down")


def cue_direction_accuracy(corpus: Path, videos: int | None = None, fps: float = 1.0, size: int = 224) -> dict:
    events: dict[str, list[dict]] = {}
    for line in (Path(corpus) / "events.jsonl").read_text().splitlines():
        e = json.loads(line)
        events.setdefault(e["video"], []).append(e)
    right = total = 0
    for video in list(events)[:videos]:
        path = Path(corpus) / video
        info = probe(path)
        plan = plan_samples(info.duration, fps)
        chunk, _ = decode_frames(path, plan, info, size)
        cues = frame_cues(chunk.frames, np.zeros(len(chunk.frames), int))
        centre = (chunk.unit_start + chunk.unit_end) / 2  # the frames decoded (repeats merged, lost ones dropped)
        for e in events[video]:
            inside = (centre >= e["start"]) & (centre < e["end"])
            if e["motion"] not in DIRECTIONS or inside.sum() < 2:
                continue
            seen = cues[inside]
            right += read_direction(seen[-1] - seen[0]) == e["motion"]
            total += 1
    return {"corpus": str(corpus), "videos": min(len(events), videos or len(events)), "events": total,
            "direction_from_cues": round(100.0 * right / max(total, 1), 2)}  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("corpus", type=Path, help="a `vidsearch synth` output folder (with events.jsonl)")
    ap.add_argument("--videos", type=int, default=None, help="only the first N videos")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    out = cue_direction_accuracy(args.corpus, args.videos)
    print(json.dumps(out) if args.json else f"{out['events']} moving events in {out['videos']} videos: the cue alone tells "
          f"{out['direction_from_cues']:.2f}% of directions")  # fmt: skip


if __name__ == "__main__":
    main()
