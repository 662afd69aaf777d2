"""On-screen text with PP-OCRv4 (detection, then recognition), through `rapidocr-onnxruntime`, whose
wheel ships the ONNX models (nothing is downloaded).

Why a second engine beside Tesseract: video text sits on busy backgrounds (a caption box over a
checkerboard, a title over moving footage). Tesseract segments the whole page and reads none of the
demo library's words (DANGER, STOP, WIN, EXIT over textured backdrops); a text detector finds the
box first and the recogniser reads the crop, and reads all of them.

Why a recognition cache: recognition costs ~40 ms of wall time per box here (a frame's detection
~45-75 ms), and text usually stays put while the picture moves (a caption held for five seconds over
moving video, a scoreboard, a slide title). A detected box whose crop looks like one read recently
(same size, grey pixels within a few levels) reuses that reading, so recognition runs on what is new.
A changed character is a few columns of the signature that differ a lot, which a mean over the
whole crop hides (a clock's "12:01:07" -> "12:01:08" differs by 3.6 grey levels on average, under
the 10 of `SAME_LEVEL`, but by 38-59 in its most changed column): a crop also has to match column by
column (`SAME_COLUMN`) to reuse a reading. Still coarse: one character of a long line (~1.5 columns
of the 48) can pass, a crop over full-frame noise varies by up to ~20 per column by itself, and small
digits pass: testsrc2's 27 px timecode changes a column by 5-22 from one second to the next, so over
the text bench's talking video (60 s) its 60 readings stay 7 distinct ones (5 before), for 55
recognitions instead of 42.

Why detection at a short side of `DET_SIDE` = 320 pixels (360p frames at 0.89; the boxes are read
back into the frame's own pixels, where the recogniser reads full-size crops): on the text-channel
bench's captions over testsrc2 and its busy backgrounds (five generated backgrounds, three caption
styles down to 14 px, the size of 1080p subtitles read at 360p) it reads as much as at full size
for ~80% of the detector's time, and fires on fewer texture boxes, each of which costs a
recognition. Smaller is cheaper and loses small text: at 270, 14 px captions over testsrc2 were read
in 4 of 12 frames instead of 12; at 180, 12 px text was lost.

The ONNX sessions do not spin their idle threads: spinning bought no speed here and burnt ~30% more
CPU, which the decoders and the speech channel share.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from functools import lru_cache
from importlib import metadata as importlib_metadata

import numpy as np

DET_SIDE = 320  # detector input: short side (PP-OCR's default, 736, costs ~5x and read no more here)
MIN_SCORE = 0.8  # recogniser confidence below which a reading is dropped (junk from textures scores lower)
MARGIN = 0.2  # of a crop's height, padded on every side (edge pixels repeated) before recognition
SIGNATURE = (12, 48)  # grey thumbnail a crop is compared by (rows, columns)
SAME_LEVEL = 10.0  # mean absolute grey difference under which two crops are the same text
SAME_COLUMN = 30.0  # ... and the most any one column of the signature may differ (a changed character)


class ModelUnavailable(RuntimeError):
    """rapidocr-onnxruntime is not installed."""


@lru_cache(maxsize=2)
def _engine(det_side: int):
    try:
        from rapidocr_onnxruntime import RapidOCR
    except ImportError as exc:
        raise ModelUnavailable("the rapidocr OCR engine needs rapidocr-onnxruntime (pip install rapidocr-onnxruntime), "
                               "or choose ocr_engine = \"tesseract\"") from exc  # fmt: skip
    engine = RapidOCR(det_limit_side_len=det_side, det_limit_type="min", print_verbose=False)
    for part in (engine.text_det.infer, engine.text_rec.session):
        _no_spinning(part)
    return engine


def _no_spinning(infer) -> None:
    """Re-open a rapidocr ONNX session with idle threads that sleep instead of spin (see the module
    docstring). Left as it is where the session does not say which model it holds."""
    import onnxruntime as ort

    model = getattr(infer.session, "_model_path", None)
    if not model:  # pragma: no cover - another onnxruntime
        return
    opts = type(infer)._init_sess_opts({})  # the options rapidocr opens its sessions with
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    infer.session = ort.InferenceSession(model, sess_options=opts, providers=infer.session.get_providers())


def version() -> str:
    try:
        return importlib_metadata.version("rapidocr-onnxruntime")
    except importlib_metadata.PackageNotFoundError:  # pragma: no cover
        return "?"


def same_text(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether two crops' signatures show the same text: close on the whole and in every column."""
    diff = np.abs(a - b)
    return float(diff.mean()) < SAME_LEVEL and float(diff.mean(axis=0).max()) < SAME_COLUMN


def _signature(crop: np.ndarray) -> np.ndarray:
    """A small grey picture of a crop: what two readings of the same text share."""
    from PIL import Image

    grey = Image.fromarray(np.ascontiguousarray(crop[..., :3])).convert("L")
    return np.asarray(grey.resize((SIGNATURE[1], SIGNATURE[0]), Image.BILINEAR), np.float32)


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


class RapidTextReader:
    """Reads frames (RGB uint8) into lines: (text, score, box) per detected text box."""

    def __init__(self, det_side: int = DET_SIDE, min_score: float = MIN_SCORE, cache_size: int = 256, margin: float = MARGIN):
        self.engine = _engine(det_side)
        self.det_side, self.min_score, self.margin = det_side, min_score, margin
        self.cache: OrderedDict[int, list[tuple[np.ndarray, float, str, float]]] = OrderedDict()  # by aspect bucket
        self.cache_size = cache_size
        self.recognised = self.reused = 0
        self._lock = threading.Lock()

    @property
    def provenance(self) -> str:
        return f"rapidocr-onnxruntime {version()} PP-OCRv4 det{self.det_side} margin{self.margin} score>={self.min_score}"

    def _detect(self, bgr: np.ndarray) -> np.ndarray:
        """Text boxes [N, 4, 2] in the frame's pixels, found on the frame scaled to `det_side`: the
        detector's map is read back straight into the frame's pixels (boxes rounded in the small
        frame's pixels crop the text a pixel off, and the recogniser then drops spaces)."""
        import cv2

        det = self.engine.text_det
        h, w = bgr.shape[:2]
        scale = self.det_side / min(h, w)
        small = bgr
        if abs(scale - 1) > 0.02:
            size = (max(32, round(w * scale)), max(32, round(h * scale)))
            small = cv2.resize(bgr, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
        prepared = det.get_preprocess(max(small.shape[:2]))(small)
        if prepared is None:
            return np.zeros((0, 4, 2), np.float32)
        boxes, _ = det.postprocess_op(det.infer(prepared)[0], (h, w))
        if len(boxes) == 0:
            return np.zeros((0, 4, 2), np.float32)
        return np.asarray(det.filter_tag_det_res(boxes, (h, w)), np.float32).reshape(-1, 4, 2)

    def read(self, frame: np.ndarray) -> list[tuple[str, float, tuple[int, int, int, int]]]:
        with self._lock:  # one ONNX session pair per process; it parallelises inside
            bgr = np.ascontiguousarray(np.asarray(frame)[..., 2::-1])
            boxes = self._detect(bgr)
            if len(boxes) == 0:
                return []
            boxes = self.engine.sorted_boxes(boxes)
            crops = [_with_margin(c, self.margin) for c in self.engine.get_crop_img_list(bgr, boxes)]
            readings: list[tuple[str, float] | None] = []
            todo = []
            for i, crop in enumerate(crops):
                hit = self._lookup(crop)
                readings.append(hit)
                if hit is None:
                    todo.append(i)
                else:
                    self.reused += 1
            if todo:
                results, _ = self.engine.text_rec([crops[i] for i in todo])
                for i, (text, score) in zip(todo, results):
                    readings[i] = (str(text), float(score))
                    self._store(crops[i], str(text), float(score))
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

    def _lookup(self, crop: np.ndarray) -> tuple[str, float] | None:
        entries = self.cache.get(self._bucket(crop))
        if not entries:
            return None
        sig = _signature(crop)
        h = crop.shape[0]
        for ref, ref_h, text, score in entries:
            if abs(ref_h - h) <= max(2.0, 0.15 * h) and same_text(ref, sig):
                return text, score
        return None

    def _store(self, crop: np.ndarray, text: str, score: float) -> None:
        key = self._bucket(crop)
        entries = self.cache.setdefault(key, [])
        entries.insert(0, (_signature(crop), float(crop.shape[0]), text, score))
        del entries[16:]  # the most recent readings of this shape
        self.cache.move_to_end(key)
        while len(self.cache) > self.cache_size:
            self.cache.popitem(last=False)
