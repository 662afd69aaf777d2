"""On-screen text with PP-OCRv4 (detection, then recognition), through `rapidocr-onnxruntime`, whose
wheel ships the ONNX models (nothing is downloaded).

Why a second engine beside Tesseract: video text sits on busy backgrounds (a caption box over a
checkerboard, a title over moving footage). Tesseract segments the whole page and reads none of the
demo library's words (DANGER, STOP, WIN, EXIT over textured backdrops); a text detector finds the
box first and the recogniser reads the crop, and reads all of them.

Why a recognition cache: recognition costs ~15-30 ms of CPU per box here, read alone at its own
width (`recognise_each`; a frame's detection ~55-70 ms), and text usually stays put while the picture
moves (a caption held for five seconds over moving video, a scoreboard, a slide title). A detected
box whose glyphs match a reading's from earlier in the video reuses that reading, so recognition runs
on what is new. A reused reading for
text that changed is a wrong index entry (a burned-in clock read once and kept for twelve minutes),
so the test is built to say "different" for one changed digit and to let reuse go where unsure:
- *Glyphs, not pixels.* The box is cut tight (without the recognition margin), scaled to 32 px high,
  and its thin bright and thin dark strokes are taken apart from the backdrop by a white and a black
  top-hat (5 px): the bars and gradients a caption sits on drop out; strokes stay. The channel with
  more ink (the text's polarity) is compared, after a 0.7 px blur that absorbs sub-pixel jitter.
- *Aligned, then window by window.* The two stroke maps are aligned by their column profiles (a box
  that shifted, or grew a few pixels), then every window of 0.6 x the height (about one character)
  may shift by a pixel on its own (a box warped by a degree). The worst window decides:
  `text_difference`, the squared difference over the energy in that window.
- *Measured* on 1,181 boxes from 24 videos (testsrc2 timecodes and frame counters, clocks over plain,
  cellular and fractal backdrops, a scoreboard whose digits change, a price line with one changed
  digit, captions over moving colour bars and five busy backgrounds, a shaking camera), each box
  recognised: pairs of different text scored >= 0.070 (a timecode's "03" vs "09"), so readings are
  reused under `SAME_TEXT` = 0.05; with the cache as it runs, 153 boxes reused a reading and none of
  a different text. The grey-thumbnail test this replaces reused 674 readings, 532 of them from a
  different text (every timecode, counter and clock), and missed most captions over moving video.
- *Not for tiny text.* A box under `MIN_REUSE_HEIGHT` (20 px) is always recognised: its strokes are a
  pixel wide, and a 10 px clock on H.264 (a 19 px box) ticking "8" -> "9" differed by only 0.038.
  (Different-text pairs of boxes 20-24 px high scored >= 0.10; 24 px would also stop reuse for
  22 px captions, whose boxes are ~23 px high.)
  `bench/ocr_reuse.py` measures the whole reader, previous tests against these, on fresh readings.

Why detection at a short side of `DET_SIDE` = 320 pixels (360p frames at 0.89; the boxes are read
back into the frame's own pixels, where the recogniser reads full-size crops): on the text-channel
bench's captions over testsrc2 and its busy backgrounds (five generated backgrounds, three caption
styles down to 14 px, the size of 1080p subtitles read at 360p) it reads as much as at full size
for ~80% of the detector's time, and fires on fewer texture boxes, each of which costs a
recognition. Smaller is cheaper and loses small text: at 270, 14 px captions over testsrc2 were read
in 4 of 12 frames instead of 12; at 180, 12 px text was lost.

The ONNX sessions do not spin their idle threads: spinning bought no speed here and burnt ~30% more
CPU, which the decoders and the speech channel share. In indexing the reader runs inside a decoder
process, one per core, so each gets its share of the cores (`threads`; one on a 2-core machine): two
threads per session there cost ~18% more CPU for the same reading (60 frames of the text-channel
bench's talk: 8.4 vs 7.1 CPU s), and the other core was another decoder's.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from functools import lru_cache
from importlib import metadata as importlib_metadata

import numpy as np

DET_SIDE = 320  # detector input: short side (PP-OCR's default, 736, costs ~5x and read no more here)
# detector input: longest side. The detector's cost grows with its input's area: a 4000x16 strip with
# its short side taken to 320 became 80,000x320 (46 s and 3.7 GB for one frame). Frames up to 4:1
# (ultrawide included) keep DET_SIDE; a thinner one is scaled by its long side and costs as a 4:1 frame.
DET_MAX_LONG = 4 * DET_SIDE
MIN_SCORE = 0.8  # recogniser confidence below which a reading is dropped (junk from textures scores lower)
MARGIN = 0.2  # of a crop's height, padded on every side (edge pixels repeated) before recognition
GLYPH_HEIGHT = 32  # a box's stroke map is compared at this height (pixels)
STROKE = 5  # top-hat size: strokes thinner than this stand out of the backdrop
WINDOW = 0.6  # of the height: the width of the window a changed character shows in (about one glyph)
SAME_TEXT = 0.05  # text_difference under which a box reuses a reading (different text measured >= 0.070)
MIN_REUSE_HEIGHT = 20  # boxes lower than this (pixels) are always recognised: strokes a pixel wide


class ModelUnavailable(RuntimeError):
    """rapidocr-onnxruntime is not installed."""


@lru_cache(maxsize=2)
def _engine(det_side: int, threads: int = 0):
    try:
        from rapidocr_onnxruntime import RapidOCR
    except ImportError as exc:
        raise ModelUnavailable("the rapidocr OCR engine needs rapidocr-onnxruntime (pip install rapidocr-onnxruntime), "
                               "or choose ocr_engine = \"tesseract\"") from exc  # fmt: skip
    engine = RapidOCR(det_limit_side_len=det_side, det_limit_type="min", print_verbose=False)
    for part in (engine.text_det.infer, engine.text_rec.session):
        _reopen(part, threads)
    return engine


def _reopen(infer, threads: int) -> None:
    """Re-open a rapidocr ONNX session with idle threads that sleep instead of spin, and `threads`
    intra-op threads (0: onnxruntime's default, one per core); see the module docstring. Left as it
    is where the session does not say which model it holds."""
    import onnxruntime as ort

    model = getattr(infer.session, "_model_path", None)
    if not model:  # pragma: no cover - another onnxruntime
        return
    opts = type(infer)._init_sess_opts({})  # the options rapidocr opens its sessions with
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if threads > 0:
        opts.intra_op_num_threads = threads
    infer.session = ort.InferenceSession(model, sess_options=opts, providers=infer.session.get_providers())


def version() -> str:
    try:
        return importlib_metadata.version("rapidocr-onnxruntime")
    except importlib_metadata.PackageNotFoundError:  # pragma: no cover
        return "?"


def glyph_signature(crop: np.ndarray) -> np.ndarray:
    """What a reading depends on in a tight box (BGR uint8, as the reader cuts it): its thin bright
    and thin dark strokes at `GLYPH_HEIGHT`, blurred by 0.7 px, as float32 [2, GLYPH_HEIGHT, width].
    Wide shapes of the backdrop (bars, gradients, a caption box) give nothing."""
    import cv2

    grey = cv2.cvtColor(np.ascontiguousarray(crop[..., :3]), cv2.COLOR_BGR2GRAY)
    width = max(8, round(grey.shape[1] * GLYPH_HEIGHT / max(grey.shape[0], 1)))
    grey = cv2.resize(grey, (width, GLYPH_HEIGHT), interpolation=cv2.INTER_AREA)
    grey = cv2.copyMakeBorder(grey, STROKE, STROKE, STROKE, STROKE, cv2.BORDER_REPLICATE)
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (STROKE, STROKE))
    inner = (slice(STROKE, -STROKE), slice(STROKE, -STROKE))
    maps = [cv2.morphologyEx(grey, op, kernel)[inner].astype(np.float32) for op in (cv2.MORPH_TOPHAT, cv2.MORPH_BLACKHAT)]
    return np.stack([cv2.GaussianBlur(m, (0, 0), 0.7) for m in maps])


def _column_shift(a: np.ndarray, b: np.ndarray) -> int | None:
    """The shift d (b's column x sits at a's x + d) that best lines up the two maps' ink by column,
    among shifts that keep >= 85% of the wider one overlapping; None where none does."""
    wa, wb = a.shape[1], b.shape[1]
    pa, pb = a.sum(0) - a.sum(0).mean(), b.sum(0) - b.sum(0).mean()
    corr = np.correlate(pa, pb, "full")  # corr[k] pairs a[x] with b[x - (k - wb + 1)]
    shifts = np.arange(-(wb - 1), wa)
    overlap = np.minimum(wa, wb + shifts) - np.maximum(0, shifts)
    reach = int(0.1 * max(wa, wb)) + 4
    ok = (overlap >= 0.85 * max(wa, wb)) & (np.abs(shifts) <= reach)
    if not ok.any():
        return None
    score = np.where(ok, corr / np.maximum(overlap, 1) - 1e-6 * np.abs(shifts), -np.inf)  # ties: the smaller shift
    return int(shifts[int(np.argmax(score))])


def text_difference(a: np.ndarray, b: np.ndarray) -> float:
    """How much two boxes' glyphs differ (0 = the same strokes; see the module docstring): the worst
    character-sized window's squared difference over its energy, each window at its best one-pixel
    shift after the two are aligned by column. 1.0 where the boxes' widths differ by over 6%."""
    wa, wb = a.shape[2], b.shape[2]
    if abs(wa - wb) > 0.06 * max(wa, wb) + 3:
        return 1.0
    ink = int(a[1].sum() + b[1].sum() > a[0].sum() + b[0].sum())  # the text's polarity: more strokes
    a, b = a[ink], b[ink]
    d0 = _column_shift(a, b)
    if d0 is None:
        return 1.0
    height, window = a.shape[0], max(4, int(WINDOW * a.shape[0]))
    lo, hi = max(1, d0 + 1), min(wa - 1, wb + d0 - 1)  # columns of `a` every shift below can compare
    if hi - lo < window:
        return 1.0
    ones = np.ones(window, np.float32)
    ratios = []
    for dy in (-1, 0, 1):
        y0, y1 = max(0, dy), min(height, height + dy)
        for dx in (d0 - 1, d0, d0 + 1):
            pa, pb = a[y0:y1, lo:hi], b[y0 - dy : y1 - dy, lo - dx : hi - dx]
            diff = np.convolve(((pa - pb) ** 2).sum(0), ones, "valid")
            energy = np.convolve((pa**2 + pb**2).sum(0), ones, "valid")
            ratios.append(diff / np.maximum(energy, 1e-3 + 0.02 * energy.max()))
    return float(np.min(ratios, axis=0).max())


def same_text(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether two boxes' glyph signatures show the same text (see the module docstring)."""
    return text_difference(a, b) < SAME_TEXT


def _with_margin(crop: np.ndarray, margin: float) -> np.ndarray:
    """A crop padded by `margin` of its height on every side with its own edge pixels. The detector's
    boxes hug the letters, and from such a tight crop the recogniser drops spaces
    ("MEETINGSTARTSATNOON"), which keeps the words from matching a search; growing the box instead
    brings in background, which on busy backgrounds costs more words than the spaces win."""
    import cv2

    if margin <= 0:
        return crop
    m = max(2, int(round(margin * crop.shape[0])))
    return cv2.copyMakeBorder(crop, m, m, m, m, cv2.BORDER_REPLICATE)


def recognise_each(recogniser, crops: list[np.ndarray]) -> list[tuple[str, float]]:
    """(text, confidence) of each crop, each read alone at its own width (the recogniser's height,
    48 px, and the crop's aspect). rapidocr's own call pads every crop of a batch to the widest one
    and to at least 320 px: a frame's short timecode or counter read beside a 40-character caption
    paid for the caption's width, and a reading depended on its neighbours (a counter "341" read
    "344" beside others; padding put spaces into a timecode, "00: 00: 12.467"). Alone at its own
    width the recogniser costs half the CPU on video text (`bench/text_channels.py`), and reads the
    same crop the same way wherever it is."""
    import cv2

    _, height, _ = recogniser.rec_image_shape
    out = []
    for crop in crops:
        h, w = crop.shape[:2]
        if h == 0 or w == 0:  # nothing to read (cv2.resize would refuse it)
            out.append(("", 0.0))
            continue
        width = max(height // 3, int(np.ceil(height * w / max(h, 1))))
        img = cv2.resize(crop, (width, height)).astype(np.float32).transpose(2, 0, 1)
        img = img[None] / 127.5 - 1.0  # the recogniser's normalisation: (x / 255 - 0.5) / 0.5
        preds = recogniser.session(img)[0]
        ((text, score),) = recogniser.postprocess_op(preds)
        out.append((str(text), float(score)))
    return out


class RapidTextReader:
    """Reads frames (RGB uint8) into lines: (text, score, box) per detected text box."""

    def __init__(self, det_side: int = DET_SIDE, min_score: float = MIN_SCORE, cache_size: int = 256, margin: float = MARGIN, threads: int = 0):
        self.engine = _engine(det_side, threads)
        self.det_side, self.min_score, self.margin = det_side, min_score, margin
        self.cache: OrderedDict[int, list[tuple[np.ndarray, float, str, float]]] = OrderedDict()  # by aspect bucket
        self.cache_size = cache_size
        self.recognised = self.reused = 0
        self._lock = threading.Lock()

    @property
    def provenance(self) -> str:
        return f"rapidocr-onnxruntime {version()} PP-OCRv4 det{self.det_side} margin{self.margin} score>={self.min_score}"

    def _detect(self, bgr: np.ndarray, region: tuple[int, int, int, int] | None = None) -> np.ndarray:
        """Text boxes [N, 4, 2] in the frame's pixels, found on the frame scaled to `det_side`: the
        detector's map is read back straight into the frame's pixels (boxes rounded in the small
        frame's pixels crop the text a pixel off, and the recogniser then drops spaces). `region`
        (x0, y0, x1, y1): look only there, at the scale the whole frame would get."""
        import cv2

        det = self.engine.text_det
        h, w = bgr.shape[:2]
        scale = min(self.det_side / min(h, w), max(DET_MAX_LONG, self.det_side) / max(h, w))
        x0, y0 = 0, 0
        if region is not None:
            x0, y0, x1, y1 = region
            bgr = bgr[y0:y1, x0:x1]
            h, w = bgr.shape[:2]
        small = bgr
        if abs(scale - 1) > 0.02:
            size = (max(32, round(w * scale)), max(32, round(h * scale)))
            small = cv2.resize(bgr, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
        prepare = det.get_preprocess(max(small.shape[:2]))
        prepare.limit_side_len = min(small.shape[:2])  # at scale already: a region must not be enlarged to det_side
        prepared = prepare(small)
        if prepared is None:
            return np.zeros((0, 4, 2), np.float32)
        boxes, _ = det.postprocess_op(det.infer(prepared)[0], (h, w))
        if len(boxes) == 0:
            return np.zeros((0, 4, 2), np.float32)
        boxes = np.asarray(det.filter_tag_det_res(boxes, (h, w)), np.float32).reshape(-1, 4, 2)
        return boxes + np.array([x0, y0], np.float32)

    def read(self, frame: np.ndarray, regions: list[tuple[int, int, int, int]] | None = None) -> list[tuple[str, float, tuple[int, int, int, int]]]:
        """(text, score, (left, top, width, height)) per text box read in the frame, or only in
        `regions` (x0, y0, x1, y1 in the frame's pixels: where the frame changed, ocr.OcrReader)."""
        with self._lock:  # one ONNX session pair per process; it parallelises inside
            bgr = np.ascontiguousarray(np.asarray(frame)[..., 2::-1])
            if regions is None:
                boxes = self._detect(bgr)
            else:
                boxes = np.concatenate([self._detect(bgr, r) for r in regions] + [np.zeros((0, 4, 2), np.float32)])
            if len(boxes) == 0:
                return []
            boxes = self.engine.sorted_boxes(boxes)
            tight = self.engine.get_crop_img_list(bgr, boxes)
            # (a box too small to compare is never looked up nor stored: no signature)
            signatures = [glyph_signature(c) if c.shape[0] >= MIN_REUSE_HEIGHT else None for c in tight]
            readings: list[tuple[str, float] | None] = []
            todo = []
            for i, (crop, sig) in enumerate(zip(tight, signatures)):
                hit = self._lookup(crop, sig)
                readings.append(hit)
                if hit is None:
                    todo.append(i)
                else:
                    self.reused += 1
            if todo:
                results = recognise_each(self.engine.text_rec, [_with_margin(tight[i], self.margin) for i in todo])
                for i, (text, score) in zip(todo, results):
                    readings[i] = (str(text), float(score))
                    self._store(tight[i], signatures[i], str(text), float(score))
                self.recognised += len(todo)
            out = []
            for quad, reading in zip(boxes, readings):
                text, score = reading  # type: ignore[misc]
                if score < self.min_score or sum(ch.isalnum() for ch in text) < 2:
                    continue
                x0, y0 = np.floor(quad.min(axis=0)).astype(int)
                x1, y1 = np.ceil(quad.max(axis=0)).astype(int)
                out.append((text.strip(), score, (int(x0), int(y0), int(x1 - x0), int(y1 - y0))))
            return out

    @staticmethod
    def _bucket(crop: np.ndarray) -> int:
        h, w = crop.shape[:2]
        return int(round(4 * np.log2(max(w, 1) / max(h, 1))))  # crops of one text have one aspect

    def _lookup(self, crop: np.ndarray, sig: np.ndarray) -> tuple[str, float] | None:
        entries = self.cache.get(self._bucket(crop))
        if not entries or crop.shape[0] < MIN_REUSE_HEIGHT:
            return None
        h = crop.shape[0]
        for ref, ref_h, text, score in entries:
            if abs(ref_h - h) <= max(2.0, 0.15 * h) and same_text(ref, sig):
                return text, score
        return None

    def _store(self, crop: np.ndarray, sig: np.ndarray, text: str, score: float) -> None:
        if crop.shape[0] < MIN_REUSE_HEIGHT:  # never reused: nor lent to a box a pixel taller
            return
        key = self._bucket(crop)
        entries = self.cache.setdefault(key, [])
        entries.insert(0, (sig, float(crop.shape[0]), text, score))
        del entries[16:]  # the most recent readings of this shape
        self.cache.move_to_end(key)
        while len(self.cache) > self.cache_size:
            self.cache.popitem(last=False)
