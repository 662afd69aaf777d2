"""On-screen text with PP-OCRv4 (detection, then recognition), through `rapidocr-onnxruntime`, whose
wheel ships the ONNX models (nothing is downloaded).

Why a second engine beside Tesseract: video text sits on busy backgrounds (a caption box over a
checkerboard, a title over moving footage). Tesseract segments the whole page and reads none of the
demo library's words (DANGER, STOP, WIN, EXIT over textured backdrops); a text detector finds the
box first and the recogniser reads the crop, and reads all of them.

Why a recognition cache: detection must run on every frame that changed, but text usually stays put
while the picture moves (a caption held for five seconds over moving video, a scoreboard, a slide
title). A detected box whose crop looks like one read recently (same size, grey pixels within a few
levels) reuses that reading, so recognition, the costlier half, runs on what is new.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from functools import lru_cache
from importlib import metadata as importlib_metadata

import numpy as np

DET_SIDE = 360  # detector input: short side (PP-OCR's default, 736, costs ~3x and read no more here)
MIN_SCORE = 0.8  # recogniser confidence below which a reading is dropped (junk from textures scores lower)
SIGNATURE = (12, 48)  # grey thumbnail a crop is compared by (rows, columns)
SAME_LEVEL = 10.0  # mean absolute grey difference under which two crops are the same text


class ModelUnavailable(RuntimeError):
    """rapidocr-onnxruntime is not installed."""


@lru_cache(maxsize=2)
def _engine(det_side: int):
    try:
        from rapidocr_onnxruntime import RapidOCR
    except ImportError as exc:
        raise ModelUnavailable("the rapidocr OCR engine needs rapidocr-onnxruntime (pip install rapidocr-onnxruntime), "
                               "or choose ocr_engine = \"tesseract\"") from exc  # fmt: skip
    return RapidOCR(det_limit_side_len=det_side, det_limit_type="min", print_verbose=False)


def version() -> str:
    try:
        return importlib_metadata.version("rapidocr-onnxruntime")
    except importlib_metadata.PackageNotFoundError:  # pragma: no cover
        return "?"


def _signature(crop: np.ndarray) -> np.ndarray:
    """A small grey picture of a crop: what two readings of the same text share."""
    from PIL import Image

    grey = Image.fromarray(np.ascontiguousarray(crop[..., :3])).convert("L")
    return np.asarray(grey.resize((SIGNATURE[1], SIGNATURE[0]), Image.BILINEAR), np.float32)


class RapidTextReader:
    """Reads frames (RGB uint8) into lines: (text, score, box) per detected text box."""

    def __init__(self, det_side: int = DET_SIDE, min_score: float = MIN_SCORE, cache_size: int = 256):
        self.engine = _engine(det_side)
        self.det_side, self.min_score = det_side, min_score
        self.cache: OrderedDict[int, list[tuple[np.ndarray, float, str, float]]] = OrderedDict()  # by aspect bucket
        self.cache_size = cache_size
        self.recognised = self.reused = 0
        self._lock = threading.Lock()

    @property
    def provenance(self) -> str:
        return f"rapidocr-onnxruntime {version()} PP-OCRv4 det{self.det_side} score>={self.min_score}"

    def read(self, frame: np.ndarray) -> list[tuple[str, float, tuple[int, int, int, int]]]:
        with self._lock:  # one ONNX session pair per process; it parallelises inside
            bgr = np.ascontiguousarray(np.asarray(frame)[..., 2::-1])
            boxes, _ = self.engine.text_det(bgr)
            if boxes is None or len(boxes) == 0:
                return []
            boxes = self.engine.sorted_boxes(boxes)
            crops = self.engine.get_crop_img_list(bgr, boxes)
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
            if abs(ref_h - h) <= max(2.0, 0.15 * h) and float(np.abs(ref - sig).mean()) < SAME_LEVEL:
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
