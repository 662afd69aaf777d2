"""Does a model see shape? Each event's own units against "a {colour} {shape}" for the four shapes.

P@1 by attribute says how often the first result holds the caption's shape, mixed with everything
else ranking does; this asks the units directly: for every event of a synthetic corpus, the mean of
the unit vectors inside the event (as the indexer makes them: the model's head, focus view and
temporal module included) is compared with the four captions "a {its colour} {circle|square|
triangle|star}", and the best one is the model's reading. Chance is 25%; the confusion matrix says
which shapes it takes for which (round 4 read 104 of 120 held-out triangles as stars; an earlier
ad hoc probe of the same model counted 106).

    python -m vidsearch.lab.shape_probe CORPUS/test.jsonl [--checkpoint CKPT] [--json]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from vidsearch.encoders.shape_swaps import SHAPES


def shape_probe(data: Path, checkpoint: Path | None = None, fps: float = 1.0) -> dict:
    from vidsearch.encoders import load_backbone
    from vidsearch.lab.training_data import load_training_set

    bb = load_backbone("tiny", None, checkpoint, precision="fp32")
    ts = load_training_set(Path(data), fps, bb.image_size)
    owner = np.repeat(np.arange(len(ts.videos)), np.diff(ts.frame_offsets))
    units, start, end, unit_owner = bb.encode_units(ts.frames, ts.unit_start.astype(np.float64), ts.unit_end.astype(np.float64), owner)
    centre = (start + end) / 2
    by_name = {Path(v).name: i for i, v in enumerate(ts.videos)}
    events = [json.loads(line) for line in (Path(data).parent / "events.jsonl").read_text().splitlines() if line.strip()]
    rows, colours, truth = [], [], []
    for e in events:
        v = by_name.get(Path(e["video"]).name)
        inside = (unit_owner == v) & (centre >= e["start"]) & (centre <= e["end"]) if v is not None else None
        if inside is None or not inside.any():
            continue
        rows.append(units[inside].mean(0))
        colours.append(e["colour"])
        truth.append(SHAPES.index(e["shape"]))
    names = sorted(set(colours))
    text = {c: bb.encode_text([f"a {c} {s}" for s in SHAPES]) for c in names}  # [4, D] per colour
    scores = np.stack([text[c] @ r for c, r in zip(colours, rows)])  # [events, 4]
    read = scores.argmax(1)
    confusion = np.zeros((len(SHAPES), len(SHAPES)), int)
    np.add.at(confusion, (np.asarray(truth), read), 1)
    return {"events": len(truth), "accuracy": round(100 * float(np.trace(confusion)) / max(len(truth), 1), 1),
            "shapes": list(SHAPES), "confusion": confusion.tolist()}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data", type=Path, help="a synthetic corpus's JSONL (events.jsonl beside it)")
    ap.add_argument("--checkpoint", type=Path, default=None, help="weights (default: the shipped tiny model)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    out = shape_probe(args.data, args.checkpoint)
    if args.json:
        print(json.dumps(out))
        return
    print(f"shape read right for {out['accuracy']}% of {out['events']} events (chance 25%); rows true, columns read:")
    print("          " + " ".join(f"{s:>9}" for s in SHAPES))
    for s, row in zip(SHAPES, out["confusion"]):
        print(f"{s:>9} " + " ".join(f"{n:>9}" for n in row))


if __name__ == "__main__":
    main()
