"""Caption data for training and evaluation: our JSONL format, and MSR-VTT's published splits.

One JSON object a line: `{"video": "path.mp4", "captions": [{"text": "...", "start": 0.0, "end": 4.5}]}`;
paths are relative to the file's folder; start/end are optional (absent: the whole video).
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path


class DatasetError(ValueError):
    """A data file cannot be used; the message names the file, the line and the problem."""


@dataclass(frozen=True)
class Caption:
    text: str
    start: float | None = None
    end: float | None = None


@dataclass(frozen=True)
class VideoCaptions:
    video: Path
    captions: tuple[Caption, ...]


def read_jsonl(path: Path) -> list[VideoCaptions]:
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path} does not exist")
    out: list[VideoCaptions] = []
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            where = f"{path}:{lineno}"
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DatasetError(f"{where}: not valid JSON ({exc.msg})") from exc
            if not isinstance(row, dict) or not isinstance(row.get("video"), str) or not isinstance(row.get("captions"), list):
                raise DatasetError(f'{where}: needs "video" (string) and "captions" (list)')
            caps = []
            for c in row["captions"]:
                if isinstance(c, str):
                    c = {"text": c}
                if not isinstance(c, dict) or not str(c.get("text", "")).strip():
                    raise DatasetError(f"{where}: every caption needs a non-empty text")
                start, end = c.get("start"), c.get("end")
                if (start is None) != (end is None) or (start is not None and not float(end) > float(start) >= 0):
                    raise DatasetError(f"{where}: caption times need 0 <= start < end (or neither)")
                caps.append(Caption(str(c["text"]), None if start is None else float(start), None if end is None else float(end)))
            video = Path(row["video"])
            out.append(VideoCaptions(video if video.is_absolute() else path.parent / video, tuple(caps)))
    if not out:
        raise DatasetError(f"{path} has no videos")
    return out


def read_msrvtt(split_file: Path, videos_dir: Path, annotations: Path | None = None) -> list[VideoCaptions]:
    """MSR-VTT as CLIP4Clip's splits publish it.

    `split_file` is either the test CSV (`MSRVTT_JSFUSION_test.csv`: key, vid_key, video_id, sentence;
    one caption per video) or a train/val CSV of video ids (`MSRVTT_train.9k.csv`: video_id), in which
    case captions come from `annotations` (`MSRVTT_data.json`: "sentences": [{video_id, caption}]).
    """
    split_file, videos_dir = Path(split_file), Path(videos_dir)
    with open(split_file, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    if not rows:
        raise DatasetError(f"{split_file} is empty")
    captions: dict[str, list[Caption]] = {}
    if "sentence" in rows[0]:
        for r in rows:
            captions.setdefault(r["video_id"], []).append(Caption(r["sentence"].strip()))
    else:
        if annotations is None:
            raise DatasetError(f"{split_file} lists video ids only: pass the annotations (MSRVTT_data.json)")
        wanted = {r["video_id"] for r in rows}
        data = json.loads(Path(annotations).read_text(encoding="utf-8"))
        for s in data.get("sentences", []):
            if s["video_id"] in wanted:
                captions.setdefault(s["video_id"], []).append(Caption(s["caption"].strip()))
    return [VideoCaptions(videos_dir / f"{vid}.mp4", tuple(caps)) for vid, caps in captions.items()]


def write_jsonl(items: list[VideoCaptions], path: Path) -> None:
    """Write our format (paths relative to the output file where possible)."""
    path = Path(path)
    with open(path, "w", encoding="utf-8") as fh:
        for it in items:
            try:
                video = str(it.video.resolve().relative_to(path.parent.resolve()))
            except ValueError:
                video = str(it.video)
            caps = [{"text": c.text, **({"start": c.start, "end": c.end} if c.start is not None else {})} for c in it.captions]
            fh.write(json.dumps({"video": video, "captions": caps}) + "\n")
