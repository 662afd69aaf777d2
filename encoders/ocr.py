"""On-screen text as a search channel: Tesseract over keyframes, repeats merged into timed spans.

Slides, titles, lower thirds and burned-in captions hold words users search for ("the quarterly
report slide"). Tesseract costs ~0.1-0.25 s a frame here, and video text mostly sits still for many
keyframes, so the work is shaped around not running it:

* **Skip near-identical frames.** Each frame is compared with the last frame that was read (not
  just the previous one, so slow drift still triggers a fresh read) on grey cells of 2 x 2 pixels
  at 360p; if fewer than 5 cells moved by over 12 grey levels, the earlier result is reused. The
  cells are that small because the text that changes most often is the smallest: a burned-in clock
  ticking one digit at 10-16 px (white, grey or blue on dark, H.264 at CRF 30) moved 0 cells of the
  64-cell-wide thumbnail used before, so a still shot kept its first time for the whole video. At
  2 px cells a 10 px grey clock's tick moves >= 6 cells ("8" -> "9", the smallest change), grain on a
  flat still moves none, and heavy grain over a detailed still (noise 10) up to ~100: such a shot is
  detected again at every frame, which costs time (the box cache still spares recognition), not
  correctness.
* **Read only where a frame changed** (rapidocr). A frame that changed in a few places (a clock, a
  presenter's inset over a still slide, a ticker) is detected only there (`changed_regions`: a box
  around each group of changed cells, padded, at the whole frame's scale), its lines outside them
  are kept from the last read. A region first grows over every line it touches, so a line is read
  whole or kept whole; changes over 30% of the frame read the whole frame. Cells outside the
  regions keep their last read values in the reference, so change too small to count there (a fade,
  drift) still adds up. `bench/ocr_reuse.py`: a 10 px clock on a still shot 2.3 -> 1.1 CPU s for 20
  frames, a slide with a moving inset and a clock 5.8 -> 4.5 s for 30, moving pictures unchanged, no
  reading kept too long.
* **Detect every other sample of a moving picture without text** (rapidocr). Detection is most of
  a frame's cost (~55 ms of CPU, against ~15-30 ms per new box recognised). After a sample read
  whole that holds no text, of the next two consecutive samples the second is read first; when it
  holds none either (`skip_between`), the one between is not detected. Wherever a neighbour holds text the
  sample is detected as before (reading it at the neighbours' boxes instead cut text that grew,
  "SCORE 10" for "SCORE 100"). What it can miss: text shown in that one sample only, between two
  without any. `bench/ocr_reuse.py`: a textless moving picture 1.6 -> 0.9 CPU s for 30 frames.
* **Glance between reads** (rapidocr). Reading whole frames every 2 s (`ocr_fps` 0.5, the default)
  costs half of reading every second, and text that stays 2 s or more is read all the same; what
  it would miss is text shown for less, between two reads. The frames between (the encoder's, decoded
  anyway) are glanced at (`OcrReader.glance`): their thin strokes (a 5 px white and black top-hat,
  ~1 ms a frame) are compared with the strokes of the reads before and after, and only where strokes
  appear that neither holds (`new_text_cells`: 16 px cells with >= 20 new stroke pixels, 2 px of
  jitter allowed) is the frame read, there alone, for lines clear of those already read. A caption
  replaced in place puts its strokes mostly where its neighbours' were, so each line read before is
  also compared glyph by glyph with both (`_glyphs_changed`) and read again where it differs from
  both. A running clock's next digits sit within its neighbours' strokes (and its box is too small
  to compare): it is not read twice as often; a caption that flashes for a second is.
  `bench/text_channels.py`: 1 s captions over testsrc2, five in new places and five in place of
  another, read 10 of 10 (0 without the glance, 10 at one read a second) for 0.1-0.4 CPU s per
  minute of its talk.
* **Skip flat frames.** A frame where nothing stands out from the background (blank slide, fade)
  holds no text, and Tesseract's binarisation turns its noise into junk "words"; it is not read.
* **Merge repeats.** A line that reappears on consecutive keyframes (compared after normalising case,
  spacing and punctuation, fuzzily with difflib ratio >= 0.8, because OCR flickers a letter here and
  there; its numbers must be equal, or a running clock would merge into one minute-long span)
  becomes one span from its first keyframe's start to its last keyframe's end, written as the most
  confident reading.

Page segmentation (``psm``), measured on 640x360 and 398x224 frames with DejaVu text:

* ``11`` (sparse text, the default): reads clean text on plain backgrounds exactly, keeps text
  scattered around a frame (corner titles, boxed captions) that ``3`` drops, and on busy backgrounds
  finds fragments plus junk, most of which falls under the confidence threshold (70).
* ``3`` (automatic page layout, Tesseract's own default): exact on slides and plain backgrounds but
  reads nothing at all on busy backgrounds and misses isolated captions.
* ``6`` (one uniform block): worst on video (junk from every texture on busy frames).

Frames under 320 px high are upscaled 2x before OCR: Tesseract wants capitals ~20 px tall, and at
224 px, 9-12 px text goes from half-read to exact. The function takes whatever frames it gets; pass
larger ones than the 224 px encoder frames when the decoder has them.
"""

from __future__ import annotations

import difflib
import itertools
import logging
import math
import os
import re
import time
import unicodedata
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from collections.abc import Mapping
from functools import lru_cache
from typing import Sequence

import numpy as np

from vidsearch.cores import usable_cores

from .sentence import TextSpan

log = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_PSM",
    "FrameText",
    "OcrLine",
    "OcrReader",
    "OcrResult",
    "OcrWord",
    "frame_changed",
    "has_contrast",
    "merge_repeats",
    "normalize_text",
    "ocr_frames",
    "ocr_image",
    "provenance",
    "thumbnail",
]

DEFAULT_PSM = 11
DEFAULT_MIN_CONF = 70.0  # Tesseract word confidence, 0..100: clean text reads 90+, noise junk up to ~65
TARGET_HEIGHT = 320  # frames lower than this are upscaled (224 -> 448); 360p is read as is
MAX_UPSCALE = 3


@dataclass(frozen=True)
class OcrWord:
    text: str
    conf: float  # 0..1
    box: tuple[int, int, int, int]  # left, top, width, height in the frame's own pixels


@dataclass(frozen=True)
class OcrLine:
    text: str
    conf: float  # mean of its words', 0..1
    words: tuple[OcrWord, ...]


@dataclass(frozen=True)
class FrameText:
    start: float
    end: float
    lines: tuple[OcrLine, ...]
    ocr_run: bool  # False when the lines were reused from an earlier near-identical frame

    @property
    def text(self) -> str:
        return "\n".join(line.text for line in self.lines)


@dataclass
class OcrResult:
    frames: list[FrameText]
    spans: list[TextSpan]
    reads: int  # frames read (the rest reused an earlier near-identical frame's lines)
    calls: int  # Tesseract runs: reads of frames with any contrast (flat frames cost nothing)
    seconds: float  # wall-clock seconds spent reading
    provenance: str = ""
    skipped: list[int] = field(default_factory=list)  # indices of frames that reused an earlier read

    @property
    def seconds_per_call(self) -> float:
        return self.seconds / self.calls if self.calls else 0.0  # flat frames cost ~nothing


# ----------------------------------------------------------------------------------- frame skipping


def _grey(img: np.ndarray) -> np.ndarray:
    img = np.asarray(img)
    if img.ndim == 3:
        return img[..., :3].astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    return img.astype(np.float32)


CELL_ROWS = 180  # a frame's short side in change cells: 2 x 2 pixel cells at 360p (see the docstring)


def thumbnail(frame: np.ndarray, rows: int = CELL_ROWS) -> np.ndarray:
    """Grey averages of square cells, `rows` of them along the frame's short side: small enough that
    one changed digit of a 10 px clock moves several, large enough to average away pixel noise."""
    grey = _grey(np.asarray(frame))
    cell = max(1, math.ceil(min(grey.shape[:2]) / rows))  # 2 px at 240-360p: compression noise averages out
    h, w = grey.shape[0] // cell, grey.shape[1] // cell
    if cell == 1 or h == 0 or w == 0:
        return grey
    return grey[: h * cell, : w * cell].reshape(h, cell, w, cell).mean(axis=(1, 3))


REGION_SHARE = 0.3  # changes over less of the frame than this are read there alone (rapidocr)
Box = tuple[int, int, int, int]  # x0, y0, x1, y1 in a frame's pixels


def skip_between(before: Sequence[OcrLine], after: Sequence[OcrLine]) -> bool:
    """Whether the sample between two consecutive samples read whole, `before` and `after` (their
    lines), can go undetected: neither holds text. Text shown in that sample alone (for less than two
    sampling steps) is then missed; text next to text is always detected, where it is."""
    return not before and not after


def changed_regions(a: np.ndarray, b: np.ndarray, shape: tuple[int, ...], level: float = 12.0) -> list[Box] | None:
    """Where two thumbnails of a frame of `shape` differ: a box around each group of changed cells,
    padded by 6% of the short side (a word's neighbours) and at least 128 px a side (the detector
    rounds its input to 32 px). None where they would cover `REGION_SHARE` of the frame or more:
    then the whole frame is read."""
    mask = np.abs(a - b) > level
    if not mask.any():
        return None
    return _regions_of(mask, shape)


def _regions_of(mask: np.ndarray, shape: tuple[int, ...]) -> list[Box] | None:
    """Boxes in a frame of `shape` around the groups of set cells of `mask` (a grid over the frame),
    padded and fitted as `changed_regions` says; None where they cover `REGION_SHARE` or more."""
    import cv2

    mask = mask.astype(np.uint8)
    h, w = shape[:2]
    cell_y, cell_x = h / mask.shape[0], w / mask.shape[1]
    pad = max(16, round(0.06 * min(h, w)))
    reach = 2 * int(np.ceil(pad / min(cell_x, cell_y))) + 1  # cells closer than two pads form one group
    n, _, stats, _ = cv2.connectedComponentsWithStats(cv2.dilate(mask, np.ones((reach, reach), np.uint8)))
    boxes = [(int(x * cell_x), int(y * cell_y), int((x + bw) * cell_x), int((y + bh) * cell_y)) for x, y, bw, bh, _ in stats[1:n]]
    return fit_regions(boxes, w, h)


def fit_regions(boxes: list[Box], w: int, h: int, least: int = 128) -> list[Box] | None:
    """`boxes` each grown to `least` pixels a side (moved to stay in the frame), overlapping ones
    merged; None when together they cover REGION_SHARE of the frame or more."""
    fitted = []
    for x0, y0, x1, y1 in boxes:
        x0, x1 = _span(x0, x1, w, least)
        y0, y1 = _span(y0, y1, h, least)
        fitted.append((x0, y0, x1, y1))
    while True:  # merge overlapping pairs until none overlap
        pair = next(((i, j) for i, j in itertools.combinations(range(len(fitted)), 2) if _overlaps(fitted[i], fitted[j])), None)
        if pair is None:
            break
        i, j = pair
        fitted[i] = _union(fitted[i], fitted[j])
        del fitted[j]
    if sum((x1 - x0) * (y1 - y0) for x0, y0, x1, y1 in fitted) >= REGION_SHARE * w * h:
        return None
    return sorted(fitted)


def _span(lo: int, hi: int, size: int, least: int) -> tuple[int, int]:
    """[lo, hi) grown about its centre to `least` (or the frame's size), then moved inside [0, size)."""
    grow = max(0, min(least, size) - (hi - lo))
    lo, hi = lo - grow // 2, hi + grow - grow // 2
    if lo < 0:
        lo, hi = 0, hi - lo
    if hi > size:
        lo, hi = max(0, lo - (hi - size)), size
    return lo, hi


def _cut_by(box: tuple[int, int, int, int], region: Box, w: int, h: int) -> bool:
    """Whether a box read in `region` reaches one of its borders inside the frame: text that goes on
    outside the region, unchanged there and unread before (too faint, too short); read cut, it would
    be a fragment kept for the rest of the shot, so it is left unread, as it was."""
    x, y, bw, bh = box
    x0, y0, x1, y1 = region
    return (x0 > 0 and x <= x0 + 1) or (y0 > 0 and y <= y0 + 1) or (x1 < w and x + bw >= x1 - 1) or (y1 < h and y + bh >= y1 - 1)


def _corners(box: tuple[int, int, int, int]) -> Box:
    """A word box (left, top, width, height) as (x0, y0, x1, y1)."""
    x, y, bw, bh = box
    return x, y, x + bw, y + bh


def _cut_by_any(box: tuple[int, int, int, int], regions: list[Box], w: int, h: int) -> bool:
    """Whether a box read in `regions` reaches the border of one it lies in (`_cut_by`)."""
    return any(_touches(box, r) and _cut_by(box, r, w, h) for r in regions)


def _overlaps(a: Box, b: Box) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def _union(a: Box, b: Box) -> Box:
    return min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3])


def _touches(box: tuple[int, int, int, int], region: Box) -> bool:
    """Whether a word box (left, top, width, height) overlaps a region (x0, y0, x1, y1)."""
    x, y, bw, bh = box
    return _overlaps((x, y, x + bw, y + bh), region)


def _with_cells(ref: np.ndarray, thumb: np.ndarray, regions: list[Box], shape: tuple[int, ...]) -> np.ndarray:
    """`ref` with `thumb`'s cells inside `regions` (pixel boxes of a frame of `shape`)."""
    out = ref.copy()
    cell_y, cell_x = shape[0] / ref.shape[0], shape[1] / ref.shape[1]
    for x0, y0, x1, y1 in regions:
        r0, r1 = int(y0 // cell_y), int(math.ceil(y1 / cell_y))
        c0, c1 = int(x0 // cell_x), int(math.ceil(x1 / cell_x))
        out[r0:r1, c0:c1] = thumb[r0:r1, c0:c1]
    return out


STROKE_KERNEL = 5  # px: text strokes thinner than this stand out (360p captions' are 2-4 px)
STROKE_LEVEL = 40  # grey levels a stroke stands out of what surrounds it
GLANCE_CELL = 16  # px: new strokes are counted in cells this size ...
GLANCE_PIXELS = 20  # ... and a cell with this many is new text (a 22 px caption's strokes fill 30-60 of its pixels)
GLANCE_JITTER = 2  # px: a neighbour's stroke this close covers a stroke (a box that moved a pixel)


def stroke_map(frame: np.ndarray) -> np.ndarray:
    """Where a frame (RGB) has thin bright or thin dark strokes, as text does: a white and a black
    top-hat of `STROKE_KERNEL` px over `STROKE_LEVEL`, as bool [h, w]. Wide shapes (colour fields,
    bars, a caption's box, a moving gradient) give nothing; grain and fine texture do."""
    import cv2

    grey = cv2.cvtColor(np.ascontiguousarray(np.asarray(frame)[..., :3]), cv2.COLOR_RGB2GRAY)
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (STROKE_KERNEL, STROKE_KERNEL))
    ink = np.maximum(cv2.morphologyEx(grey, cv2.MORPH_TOPHAT, kernel), cv2.morphologyEx(grey, cv2.MORPH_BLACKHAT, kernel))
    return ink > STROKE_LEVEL


def new_text_cells(strokes: np.ndarray, neighbours: Sequence[np.ndarray]) -> np.ndarray:
    """Which `GLANCE_CELL` cells of a frame (a grid over it, the last row and column cut by its edge)
    hold `GLANCE_PIXELS` or more stroke pixels (`stroke_map`) that none of its `neighbours`' strokes
    hold within `GLANCE_JITTER` px, as bool [rows, cols]."""
    import cv2

    new = strokes.copy()
    size = 2 * GLANCE_JITTER + 1
    for other in neighbours:
        if other.shape == strokes.shape:
            new &= cv2.dilate(other.astype(np.uint8), np.ones((size, size), np.uint8)) == 0
    h, w = new.shape
    rows, cols = -(-h // GLANCE_CELL), -(-w // GLANCE_CELL)
    grid = np.zeros((rows * GLANCE_CELL, cols * GLANCE_CELL), bool)
    grid[:h, :w] = new
    return grid.reshape(rows, GLANCE_CELL, cols, GLANCE_CELL).sum(axis=(1, 3)) >= GLANCE_PIXELS


def cell_regions(hot: np.ndarray, shape: tuple[int, ...]) -> list[Box] | None:
    """Boxes in a frame of `shape` around the groups of `hot` cells of `new_text_cells`, padded and
    fitted like `changed_regions`; [] where none is hot, None where they cover `REGION_SHARE` of the
    frame or more (read it whole)."""
    if not hot.any():
        return []
    h, w = shape[:2]
    regions = _regions_of(hot, (hot.shape[0] * GLANCE_CELL, hot.shape[1] * GLANCE_CELL))
    return None if regions is None else [(x0, y0, min(x1, w), min(y1, h)) for x0, y0, x1, y1 in regions]


GLANCE_REPLACED = 0.5  # text_difference from which a line's box holds other text at a glance (see _glyphs_changed)


def _glyphs_changed(frame: np.ndarray, before: np.ndarray, box: tuple[int, int, int, int]) -> bool:
    """Whether a line's box (left, top, width, height) shows other text in `frame` than in `before`:
    `ocr_rapid.text_difference` of the two crops over `GLANCE_REPLACED`. The recognition cache reuses
    a reading only under 0.05; here the test only decides whether to read again, and on the text
    bench's captions over moving testsrc2 the same caption in two frames scored up to 0.16 (the
    backdrop moves against glyphs that touch their box) where a caption replaced in place scored
    0.89-1.0. Boxes under `MIN_REUSE_HEIGHT` are not compared (their strokes are a pixel wide)."""
    from .ocr_rapid import MIN_REUSE_HEIGHT, glyph_signature, text_difference

    x, y, bw, bh = box
    x0, y0 = max(0, x), max(0, y)
    if bh < MIN_REUSE_HEIGHT or bw < 2 or frame.shape != before.shape:
        return False
    crops = [np.ascontiguousarray(np.asarray(img)[y0 : y + bh, x0 : x + bw, 2::-1]) for img in (frame, before)]
    if min(c.shape[0] for c in crops) < 2 or min(c.shape[1] for c in crops) < 2:
        return False
    return text_difference(glyph_signature(crops[0]), glyph_signature(crops[1])) >= GLANCE_REPLACED


def _hot_under(box: tuple[int, int, int, int], hot: np.ndarray) -> bool:
    """Whether a word box (left, top, width, height) covers a hot cell of `new_text_cells`."""
    x, y, bw, bh = box
    r0, c0 = max(0, y // GLANCE_CELL), max(0, x // GLANCE_CELL)
    return bool(hot[r0 : -(-(y + bh) // GLANCE_CELL), c0 : -(-(x + bw) // GLANCE_CELL)].any())


def frame_changed(a: np.ndarray, b: np.ndarray, level: float = 12.0, cells: int = 5) -> bool:
    """True when at least `cells` thumbnail cells moved by more than `level` grey levels."""
    if a.shape != b.shape:
        return True
    return bool(np.count_nonzero(np.abs(a - b) > level) >= cells)


# ------------------------------------------------------------------------------------------- reading


class _SingleThreadEnv(Mapping):
    """os.environ as Tesseract's children see it, with OMP_THREAD_LIMIT=1 unless the operator set it.

    Tesseract's OpenMP threads made each read 2-5x slower on a busy 2-core machine (0.11-0.27 s a
    frame single-threaded against 0.53-0.80 s with two threads); parallelism comes from reading
    several frames at once instead. A live view, so later environment changes still reach Tesseract,
    and nothing else in the process (torch, ffmpeg, other children) is affected."""

    def __getitem__(self, key: str) -> str:
        if key == "OMP_THREAD_LIMIT" and key not in os.environ:
            return "1"
        return os.environ[key]

    def __iter__(self):
        yield from os.environ
        if "OMP_THREAD_LIMIT" not in os.environ:
            yield "OMP_THREAD_LIMIT"

    def __len__(self) -> int:
        return len(os.environ) + ("OMP_THREAD_LIMIT" not in os.environ)


@lru_cache(maxsize=1)
def _tesseract_version() -> str:
    import pytesseract
    import pytesseract.pytesseract as impl

    if getattr(impl, "environ", None) is os.environ:  # pytesseract passes this mapping as `env=`
        impl.environ = _SingleThreadEnv()
    try:
        return str(pytesseract.get_tesseract_version()).split()[0]
    except pytesseract.TesseractNotFoundError as exc:
        raise RuntimeError(
            "on-screen text needs the tesseract binary: apt-get install -y tesseract-ocr tesseract-ocr-eng "
            "(or brew install tesseract), then pip install pytesseract"
        ) from exc


@lru_cache(maxsize=8)
def _check_lang(lang: str) -> None:
    import pytesseract

    have = set(pytesseract.get_languages(config=""))
    missing = [part for part in lang.split("+") if part not in have]
    if missing:
        raise ValueError(
            f"Tesseract has no trained data for {missing} (installed: {sorted(have)}); "
            f"install e.g. apt-get install tesseract-ocr-{missing[0]}"
        )


def provenance(psm: int = DEFAULT_PSM, lang: str = "eng", min_conf: float = DEFAULT_MIN_CONF) -> str:
    return f"tesseract {_tesseract_version()} psm{psm} {lang} conf{min_conf:g}"


def _prepare(frame: np.ndarray, target_height: int):
    from PIL import Image

    frame = np.asarray(frame)
    grey = _grey(frame).clip(0, 255).astype(np.uint8)
    img = Image.fromarray(grey)
    h = grey.shape[0]
    scale = 1
    if target_height and h < target_height:
        scale = min(MAX_UPSCALE, math.ceil(target_height / max(h, 1)))
    if scale > 1:
        img = img.resize((img.width * scale, img.height * scale), Image.BICUBIC)
    return img, scale


def has_contrast(frame: np.ndarray, level: float = 40.0, fraction: float = 0.001) -> bool:
    """Whether anything in the frame stands out from its background by `level` grey levels.

    A flat frame (a fade, a blank slide, a plain colour with sensor or encoder noise) holds no text,
    and Tesseract's binarisation turns its noise into hundreds of junk "words" (2 s and a few
    confident ones at 60+ for a noisy 224p navy frame), so it is not run on such frames at all."""
    t = np.asarray(frame)
    step = max(1, max(t.shape[:2]) // 512)
    t = t[::step, ::step]
    grey = _grey(t)
    return bool((np.abs(grey - np.median(grey)) > level).mean() > fraction)


def ocr_image(
    frame: np.ndarray,
    *,
    psm: int = DEFAULT_PSM,
    lang: str = "eng",
    min_conf: float = DEFAULT_MIN_CONF,
    min_chars: int = 2,
    target_height: int = TARGET_HEIGHT,
    timeout: float = 30.0,
) -> list[OcrLine]:
    """Lines of text in one frame (uint8 [H, W, 3] or [H, W]), words under `min_conf` dropped, lines
    with fewer than `min_chars` letters/digits dropped (stray "|" and "." from edges and textures)."""
    import pytesseract

    _tesseract_version()
    if not has_contrast(frame):
        return []
    img, scale = _prepare(frame, target_height)
    try:
        data = pytesseract.image_to_data(
            img, lang=lang, config=f"--psm {int(psm)}", output_type=pytesseract.Output.DICT, timeout=timeout
        )
    except RuntimeError as exc:  # pytesseract's timeout
        log.warning("tesseract gave up on a frame: %s", exc)
        return []
    groups: dict[tuple[int, int, int], list[OcrWord]] = {}
    for i, raw in enumerate(data["text"]):
        text = (raw or "").strip()
        conf = float(data["conf"][i])
        if not text or conf < min_conf:
            continue
        box = tuple(int(round(data[k][i] / scale)) for k in ("left", "top", "width", "height"))
        key = (data["block_num"][i], data["par_num"][i], data["line_num"][i])
        groups.setdefault(key, []).append(OcrWord(text, conf / 100.0, box))  # type: ignore[arg-type]
    lines = []
    for words in groups.values():
        text = " ".join(w.text for w in words)
        if sum(ch.isalnum() for ch in text) < min_chars:
            continue
        lines.append(OcrLine(text, float(np.mean([w.conf for w in words])), tuple(words)))
    return lines


# ------------------------------------------------------------------------------------------- merging


def normalize_text(text: str) -> str:
    """What two readings of the same line share: case, spacing and punctuation are OCR's noise."""
    text = unicodedata.normalize("NFKC", text).lower()
    return " ".join(re.sub(r"[^\w]+", " ", text).split())


def _numbers(norm: str) -> str:
    """The figures of a normalised line (a clock's, a score's, a price's): the digits of its words
    that are at least half digits ("10:32AM" -> "1032"; "REP0RT", a misread O, has none), joined, so
    a space read into a number ("1 499") changes nothing."""
    return "".join(re.sub(r"\D", "", w) for w in norm.split() if 2 * sum(c.isdigit() for c in w) >= len(w))


def _similar(a: str, b: str, threshold: float) -> float:
    """How alike two normalised readings are (0 below `threshold`). Readings whose numbers differ are
    different lines however alike: "00:00:01.500" and "00:00:02.500" are 92% alike, and were merged
    into one span of a minute's length, read as one time. (A digit misread within a line splits its
    span in two, which costs less than a clock or a score held wrong.)"""
    if a == b:
        return 1.0
    if _numbers(a) != _numbers(b):
        return 0.0
    ratio = difflib.SequenceMatcher(None, a, b, autojunk=False).ratio()
    return ratio if ratio >= threshold else 0.0


def merge_repeats(frames: Sequence[FrameText], similarity: float = 0.8, patience: int = 1) -> list[TextSpan]:
    """One span per run of a line over consecutive frames. A line may go unread for up to `patience`
    frames in a run (OCR misses a frame now and then) without splitting the span."""

    @dataclass
    class Run:
        norm: str
        text: str
        conf: float
        start: float
        end: float
        last: int
        confs: list[float]

    open_runs: list[Run] = []
    done: list[Run] = []
    for i, ft in enumerate(frames):
        used: set[int] = set()
        for line in ft.lines:
            norm = normalize_text(line.text)
            if not norm:
                continue
            best, best_score = None, 0.0
            for k, run in enumerate(open_runs):
                if k in used or run.last >= i:
                    continue
                score = _similar(run.norm, norm, similarity)
                if score > best_score:
                    best, best_score = k, score
            if best is None:
                open_runs.append(Run(norm, line.text, line.conf, ft.start, ft.end, i, [line.conf]))
                used.add(len(open_runs) - 1)
                continue
            run = open_runs[best]
            used.add(best)
            run.end, run.last = max(run.end, ft.end), i
            run.confs.append(line.conf)
            if line.conf > run.conf:
                run.text, run.norm, run.conf = line.text, norm, line.conf
        still = []
        for run in open_runs:
            (still if i - run.last <= patience else done).append(run)
        open_runs = still
    done.extend(open_runs)
    done.sort(key=lambda r: (r.start, r.end))
    return [TextSpan("ocr", r.start, r.end, r.text, float(np.mean(r.confs))) for r in done]


# -------------------------------------------------------------------------------------------- driver


def _frame_ends(times: np.ndarray, ends: Sequence[float] | None) -> np.ndarray:
    """A keyframe stands for the time until the next one; the last lasts one typical interval."""
    if ends is not None:
        return np.asarray(ends, np.float64)
    if len(times) == 0:
        return times
    gaps = np.diff(times)
    last = float(np.median(gaps)) if len(gaps) else 0.0
    return np.append(times[1:], times[-1] + last)


OCR_ENGINES = ("rapidocr", "tesseract")


class OcrReader:
    """On-screen text of one video, read chunk by chunk (frames in time order), so a long video's
    frames never sit in memory at once. A frame that looks like the last one read reuses its lines,
    across chunk boundaries too; `spans()` merges repeats over the whole video.

    `engine`: "rapidocr" (PP-OCRv4 detection + recognition, see ocr_rapid.py: reads text on busy
    backgrounds) or "tesseract" (whole-frame page segmentation: clean text on plain backgrounds).
    `threads`: the rapidocr sessions' threads (0: one per core)."""

    def __init__(
        self,
        *,
        engine: str = "tesseract",
        psm: int = DEFAULT_PSM,
        lang: str = "eng",
        min_conf: float = DEFAULT_MIN_CONF,
        similarity: float = 0.8,
        change_level: float = 12.0,
        change_cells: int = 5,
        target_height: int = TARGET_HEIGHT,
        workers: int | None = None,
        threads: int = 0,
    ):
        self.psm, self.lang, self.min_conf, self.similarity = psm, lang, min_conf, similarity
        self.change_level, self.change_cells, self.target_height = change_level, change_cells, target_height
        self.workers = workers
        if engine not in OCR_ENGINES:
            raise ValueError(f"unknown OCR engine {engine!r}; expected one of {OCR_ENGINES}")
        self.engine = engine
        self._rapid = None
        if engine == "rapidocr":
            from .ocr_rapid import RapidTextReader

            self._rapid = RapidTextReader(threads=threads)
        self.frames: list[FrameText] = []
        self.reads = self.calls = 0
        self.regional = 0  # reads of only the part of a frame that changed (rapidocr)
        self.skipped_detections = 0  # samples between two without text, not detected (rapidocr)
        self.glanced = self.glance_reads = 0  # frames between reads looked at / read where new text showed (rapidocr)
        self._last_detected: tuple[np.ndarray, np.ndarray] | None = None  # (frame, stroke map) detected last before a glance's chunk
        self._undetected: list[int] = []  # of the frames of the last `add`: those skipped between two without text
        self._anchor: tuple[int, list[OcrLine]] | None = None
        self.seconds = 0.0
        self.skipped: list[int] = []
        self._ref_thumb: np.ndarray | None = None
        self._ref_lines: list[OcrLine] = []
        self._checked = False

    def _read(self, frame: np.ndarray) -> list[OcrLine]:
        if self._rapid is not None:
            return [OcrLine(text, score, (OcrWord(text, score, box),)) for text, score, box in self._rapid.read(frame)]
        return ocr_image(frame, psm=self.psm, lang=self.lang, min_conf=self.min_conf, target_height=self.target_height)

    def _read_regions(self, frame: np.ndarray, regions: list[Box], before: list[OcrLine]) -> list[OcrLine]:
        """The lines of a frame that changed only in `regions` (rapidocr): the lines read before outside
        them, and what is read inside them now. A region first grows over every line it touches, so a
        line is read whole or kept whole; where they grow too large the whole frame is read."""
        h, w = frame.shape[:2]
        for _ in range(4):
            grown = []
            for region in regions:
                for line in before:
                    if _touches(line.words[0].box, region):
                        x, y, bw, bh = line.words[0].box
                        x0, y0, x1, y1 = _union(region, (x - 4, y - 4, x + bw + 4, y + bh + 4))
                        region = (max(0, x0), max(0, y0), min(w, x1), min(h, y1))
                grown.append(region)
            if grown == regions:
                break
            regions = fit_regions(grown, w, h)
            if regions is None:
                return self._read(frame)
        else:
            return self._read(frame)
        self.regional += 1
        kept = [line for line in before if not any(_touches(line.words[0].box, r) for r in regions)]
        new = [OcrLine(text, score, (OcrWord(text, score, box),)) for text, score, box in self._rapid.read(frame, regions)
               if not _cut_by_any(box, regions, w, h)]  # fmt: skip
        return sorted(kept + new, key=lambda line: (line.words[0].box[1], line.words[0].box[0]))

    def _read_rapid(self, frames, to_read: list[int], regions: dict[int, list[Box] | None]) -> list[list[OcrLine]]:
        """The lines of each frame in `to_read` (rapidocr), in order: a frame that changed in a few
        places keeps the last read's other lines (`_read_regions`). After a sample read whole that
        holds no text, of the next two consecutive samples the second is read first, and when it holds
        none either (`skip_between`), the one between is not detected at all: a moving picture without text pays
        for every other detection, which is most of what reading costs (~55 ms of CPU a frame against
        ~15-30 ms per new box). Wherever a neighbour holds text, the sample is detected whole, as
        before. What it can miss: text shown in the middle sample only (for less than two sampling
        steps) between two samples without any."""
        done: dict[int, list[OcrLine]] = {}
        last, anchor = self._ref_lines, self._anchor  # anchor: (index, lines) of the last sample read whole
        k = 0
        while k < len(to_read):
            i = to_read[k]
            where = regions.get(i)
            if where is not None:
                done[i] = last = self._read_regions(frames[i], where, last)
                anchor = None
                k += 1
                continue
            nxt = to_read[k + 1] if k + 1 < len(to_read) else None
            if anchor is not None and anchor[0] == i - 1 and not anchor[1] and nxt == i + 1 and regions.get(nxt) is None:
                after = self._read(frames[nxt])  # consecutive samples: the one after first
                if skip_between(anchor[1], after):
                    done[i] = []
                    self.skipped_detections += 1
                    self._undetected.append(i)
                else:
                    done[i] = self._read(frames[i])
                done[nxt] = last = after
                anchor = (nxt, after)
                k += 2
                continue
            done[i] = last = self._read(frames[i])
            anchor = (i, last)
            k += 1
        # the next chunk's first sample follows this one's last: an anchor only if that one was read whole
        self._anchor = (-1, anchor[1]) if anchor is not None and anchor[0] == len(frames) - 1 else None
        return [done[i] for i in to_read]

    def add(self, frames: Sequence[np.ndarray] | np.ndarray, times: Sequence[float], ends: Sequence[float] | None = None) -> None:
        times = np.asarray(times, np.float64)
        if len(frames) != len(times):
            raise ValueError(f"{len(frames)} frames but {len(times)} times")
        self._undetected = []  # (a chunk with nothing to read leaves none from the last: `glance` maps them)
        if len(frames) == 0:
            return
        if not self._checked and self._rapid is None:
            _check_lang(self.lang)
            self._checked = True
        frame_ends = _frame_ends(times, ends)
        source: list[int] = []  # per frame: the frame of this chunk whose read it uses (-1: the last chunk's)
        regions: dict[int, list[Box] | None] = {}  # where a read frame changed (rapidocr)
        ref = -1
        for i, frame in enumerate(frames):
            thumb = thumbnail(frame)
            if self._ref_thumb is None or frame_changed(self._ref_thumb, thumb, self.change_level, self.change_cells):
                where = None
                if self._rapid is not None and self._ref_thumb is not None and self._ref_thumb.shape == thumb.shape:
                    where = regions[i] = changed_regions(self._ref_thumb, thumb, frame.shape, self.change_level)
                # a frame read in regions is the reference there only: change elsewhere too small to
                # count yet must still add up against what was read (slow drift, a fade)
                self._ref_thumb, ref = (thumb if where is None else _with_cells(self._ref_thumb, thumb, where, frame.shape)), i
            source.append(ref)
        to_read = sorted({s for s in source if s >= 0})
        n_cpu = usable_cores()
        workers = 1 if self._rapid is not None else max(1, min(self.workers or min(n_cpu, 4), len(to_read) or 1))
        self.calls += sum(has_contrast(frames[i]) for i in to_read)
        t0 = time.perf_counter()
        if self._rapid is not None:
            results = self._read_rapid(frames, to_read, regions)
        elif workers == 1:
            results = [self._read(frames[i]) for i in to_read]
        else:
            with ThreadPoolExecutor(workers) as pool:
                results = list(pool.map(self._read, [frames[i] for i in to_read]))
        self.seconds += time.perf_counter() - t0
        self.reads += len(to_read)
        read_lines = dict(zip(to_read, results))
        offset = len(self.frames)
        for i, src in enumerate(source):
            lines = self._ref_lines if src < 0 else read_lines[src]
            self.frames.append(FrameText(float(times[i]), float(frame_ends[i]), tuple(lines), src == i))
            if src != i:
                self.skipped.append(offset + i)
        if source[-1] >= 0:
            self._ref_lines = read_lines[source[-1]]

    def glance(self, frames: Sequence[np.ndarray] | np.ndarray, starts: Sequence[float], ends: Sequence[float], read: Sequence[int]) -> None:
        """Look at the frames of a chunk that `add` was not given (all but the indices `read`, in
        order, which it was, just before), and at those it skipped between two without text, for
        text that appeared since the frame detected before and is gone by the one after (`_split_at`:
        new strokes, `new_text_cells`, or a line's glyphs changed from both). Where nothing is new it
        costs its stroke map and a glyph comparison per line (~1-2 ms at 360p). Frames after the
        chunk's last detected frame are compared with that one alone. rapidocr only."""
        if self._rapid is None or len(frames) == 0:
            return
        read = [int(i) for i in read]
        skipped = {read[i] for i in self._undetected}  # not detected: their strokes vouch for nothing
        detected = np.array(sorted(set(read) - skipped), np.int64)
        strokes: dict[int, np.ndarray] = {}

        def strokes_of(i: int) -> np.ndarray:
            if i not in strokes:
                strokes[i] = stroke_map(frames[i])
            return strokes[i]

        t0 = time.perf_counter()
        tail: int | None = None  # past the chunk's last detected frame: the last frame read there stands in for it
        for j in sorted(set(range(len(frames))) - set(detected.tolist())):
            at = int(np.searchsorted(detected, j))
            neighbours = [strokes_of(int(i)) for i in detected[max(0, at - 1) : at + 1]]
            before = frames[int(detected[at - 1])] if at > 0 else None
            after = frames[int(detected[at])] if at < len(detected) else None
            if at == 0 and self._last_detected is not None:
                before = self._last_detected[0]
                neighbours.append(self._last_detected[1])
            if after is None and tail is not None:
                before, neighbours = frames[tail], [strokes_of(tail)]
            self.glanced += 1
            if neighbours and self._split_at(float(starts[j]), float(ends[j]), frames[j], new_text_cells(strokes_of(j), neighbours), before, after):
                if after is None:
                    tail = j
        if len(detected):
            self._last_detected = (np.array(frames[int(detected[-1])]), strokes_of(int(detected[-1])))  # a copy: not the chunk
        self.seconds += time.perf_counter() - t0

    def _split_at(self, start: float, end: float, frame: np.ndarray, hot: np.ndarray, before: np.ndarray | None,
                  after: np.ndarray | None = None) -> bool:
        """Read `frame` where its strokes are new (`hot` cells, `new_text_cells`) or where a line of
        the entry it falls in shows other glyphs than in both `before` and `after`, the frames detected
        on either side (a caption replaced in place for a moment puts its strokes mostly on its
        neighbours'; text that stays is read at `after`; lines too small to compare, such as a running
        clock, are not compared), and, where it then holds other lines than that entry, give it its own
        entry [start, end) with them, cutting that entry around it. Those lines of the entry are read
        again; the others stand as read, and a line found beside them is taken only clear of them (a
        region is not grown over a caption beside it to read it again). A line cut by a region's
        border is read once more with the region grown over it; where regions grow to much of the
        frame, it is read whole. -> whether the frame got an entry of its own."""
        k = next((k for k in range(len(self.frames) - 1, -1, -1) if self.frames[k].start <= start < self.frames[k].end), None)
        if k is None:
            return False
        entry = self.frames[k]
        h, w = frame.shape[:2]

        def replaced(box: tuple[int, int, int, int]) -> bool:
            return before is not None and _glyphs_changed(frame, before, box) and (after is None or _glyphs_changed(frame, after, box))

        changed = [line for line in entry.lines if _hot_under(line.words[0].box, hot) or replaced(line.words[0].box)]
        if not changed and not hot.any():
            return False
        self.glance_reads += 1
        held = [line for line in entry.lines if line not in changed]
        regions = cell_regions(hot, frame.shape)

        def grown(boxes: list[tuple[int, int, int, int]]) -> list[Box] | None:
            # half a line's height around it (the detector's boxes reach a few pixels past the glyphs), at
            # least 64 px high: a caption's strip, not the 128 px square a change of unknown size gets
            pads = [(max(0, x - m), max(0, y - m), min(w, x + bw + m), min(h, y + bh + m)) for x, y, bw, bh in boxes for m in [max(8, bh // 2)]]
            return None if regions is None else fit_regions(regions + pads, w, h, least=64)

        if changed:
            regions = grown([line.words[0].box for line in changed])
        for attempt in (0, 1):
            if regions is None:
                lines = self._read(frame)
                break
            found = [(text, score, box) for text, score, box in self._rapid.read(frame, regions)
                     if not any(_touches(box, _corners(line.words[0].box)) for line in held)]  # (a held line's piece: it stands)
            cut = [box for _, _, box in found if _cut_by_any(box, regions, w, h)]
            if cut and attempt == 0:
                regions = grown(cut)
                continue
            new = [OcrLine(text, score, (OcrWord(text, score, box),)) for text, score, box in found if box not in cut]
            lines = sorted([*held, *new], key=lambda line: (line.words[0].box[1], line.words[0].box[0]))
            break
        if sorted(normalize_text(line.text) for line in lines) == sorted(normalize_text(line.text) for line in entry.lines):
            return False
        end = min(end, entry.end)
        pieces = [FrameText(entry.start, start, entry.lines, entry.ocr_run)] if start > entry.start else []
        pieces.append(FrameText(start, end, tuple(lines), True))
        if end < entry.end:
            pieces.append(FrameText(end, entry.end, entry.lines, False))
        self.frames[k : k + 1] = pieces
        # `skipped` indexes `frames`: the entries after k move; the glanced frame's own entry was read
        head = start > entry.start  # the entry's head is kept at k, with its own status
        skipped = {i + len(pieces) - 1 if i > k else i for i in self.skipped if head or i != k}
        if end < entry.end:
            skipped.add(k + len(pieces) - 1)
        self.skipped = sorted(skipped)
        return True

    def spans(self) -> list[TextSpan]:
        return merge_repeats(self.frames, self.similarity)

    def result(self) -> OcrResult:
        return OcrResult(
            frames=self.frames,
            spans=self.spans(),
            reads=self.reads,
            calls=self.calls,
            seconds=self.seconds,
            provenance=self._rapid.provenance if self._rapid is not None else provenance(self.psm, self.lang, self.min_conf),
            skipped=self.skipped,
        )


def ocr_frames(
    frames: Sequence[np.ndarray] | np.ndarray,
    times: Sequence[float],
    ends: Sequence[float] | None = None,
    *,
    psm: int = DEFAULT_PSM,
    lang: str = "eng",
    min_conf: float = DEFAULT_MIN_CONF,
    similarity: float = 0.8,
    change_level: float = 12.0,
    change_cells: int = 5,
    target_height: int = TARGET_HEIGHT,
    workers: int | None = None,
) -> OcrResult:
    """OCR keyframes (uint8 [T, H, W, 3], times in seconds from the file start, in order).

    `ends[i]` is when frame i stops standing for the video (default: the next frame's time). Frames
    are read in parallel by `workers` Tesseract processes (default: the CPU count, at most 4), each
    on one OpenMP thread unless OMP_THREAD_LIMIT says otherwise (see `_SingleThreadEnv`).
    """
    reader = OcrReader(psm=psm, lang=lang, min_conf=min_conf, similarity=similarity, change_level=change_level,
                       change_cells=change_cells, target_height=target_height, workers=workers)  # fmt: skip
    reader.add(frames, times, ends)
    return reader.result()
