"""Queries by example: a picture, a moment of an indexed video, and their composition with words.

Every input becomes one unit vector in the frame/text tower's joint space, so the rest of the search
(coarse index, X-Pool re-rank, moments) runs unchanged:

* **text**: the text tower (as before);
* **image**: the visual tower the index was built with, on the picture prepared exactly as indexed
  frames are (upright from its EXIF orientation, short side scaled to the tower's size, centre
  crop): an image is a one-frame clip;
* **like** (`{video_id, start, end}`): the mean of the *stored* unit vectors that overlap that stretch,
  renormalised. Nothing is decoded or encoded again, so it costs a feature-cache read.

**How inputs combine.** The query vector is the normalised weighted sum of the inputs' unit vectors,
q = Σ wᵢ vᵢ / ‖Σ wᵢ vᵢ‖ (weights from `query_weights`, default 1). For any stored unit u,
q·u = Σ wᵢ (vᵢ·u) / ‖Σ wᵢ vᵢ‖: the score is the weighted sum of each input's own cosine, scaled the
same for every unit, so the ranking is exactly "weighted sum of per-input similarities" and one
input with weight 0 has no effect. CLIP-style towers keep images and texts apart in their space
(the "modality gap", Liang et al., NeurIPS 2022): a picture's cosine to matching frames is much larger
than a sentence's, so with equal weights an image sways the ranking more than words do; raise the
text weight to let the words steer.

The response reports each contributing input's share wᵢ / Σ w.
"""

from __future__ import annotations

import base64
import binascii
import io
from dataclasses import dataclass

import numpy as np

from vidsearch.api_models import LikeQuery

from .features import VideoFeatures
from .plan import SearchError

__all__ = ["ComposedQuery", "ImageTooLarge", "NotAnImage", "check_image_size", "compose", "decode_base64_image", "image_frame", "like_vector"]

MAX_IMAGE_PIXELS = 64_000_000  # larger pictures are refused before decoding (decompression bombs)


class NotAnImage(SearchError):
    """The example image cannot be read as a picture (a 415)."""


class ImageTooLarge(SearchError):
    """The example image is over the size limit (a 413)."""


@dataclass(frozen=True)
class ComposedQuery:
    """The query vector and what it was made of."""

    vector: np.ndarray  # (D,) unit length
    inputs: dict[str, float]  # input -> its share of the weights (the inputs that contributed)


def decode_base64_image(text: str) -> bytes:
    """The `image` field of a JSON request: plain base64 or a `data:image/...;base64,` URL."""
    if text.startswith("data:"):
        header, _, text = text.partition(",")
        if ";base64" not in header:
            raise NotAnImage("image: a data: URL must be base64 (data:image/png;base64,...)")
    try:
        return base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise NotAnImage(f"image: not valid base64 ({exc})") from exc


def check_image_size(data: bytes, max_bytes: int) -> None:
    if len(data) > max_bytes:
        raise ImageTooLarge(f"image is {len(data) / 1e6:.2f} MB; the limit is {max_bytes / 1e6:.2f} MB (max_image_mb)")
    if not data:
        raise NotAnImage("image is empty (0 bytes)")


def image_frame(data: bytes, size: int, max_bytes: int) -> np.ndarray:
    """Picture bytes -> one (1, size, size, 3) uint8 frame, prepared as the indexer prepares frames.

    NotAnImage when the bytes are not a picture Pillow reads (PNG, JPEG, WebP, GIF, BMP, TIFF...),
    ImageTooLarge past `max_bytes` or MAX_IMAGE_PIXELS.
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    check_image_size(data, max_bytes)
    try:
        with Image.open(io.BytesIO(data)) as img:
            if img.width * img.height > MAX_IMAGE_PIXELS:
                raise ImageTooLarge(f"image is {img.width}x{img.height} pixels; the limit is {MAX_IMAGE_PIXELS:,} pixels")
            img.seek(0)  # an animated GIF or WebP: its first frame
            img.draft("RGB", (size, size))  # a JPEG decodes at a fraction of its size where that still covers `size`
            upright = ImageOps.exif_transpose(img)
            # the central square first, then the scale (the same frame as scaling the short side to
            # `size` and cropping after): a 1x60000 strip scaled first was a 112x6,720,000 picture
            # (gigabytes, seconds) for a PNG of 300 bytes
            w, h = upright.size
            side = min(w, h)
            left, top = (w - side) // 2, (h - side) // 2
            square = upright.crop((left, top, left + side, top + side)).convert("RGB")
    except Image.DecompressionBombError as exc:  # past Pillow's own limit (twice ours): too large, not unreadable
        raise ImageTooLarge(f"image is too large: {exc}; the limit is {MAX_IMAGE_PIXELS:,} pixels") from exc
    except UnidentifiedImageError as exc:  # its message names Pillow's in-memory file, not the user's
        raise NotAnImage(f"image is not a picture that can be read (PNG, JPEG, WebP, GIF, BMP, TIFF): {len(data):,} bytes in no known picture format, or a damaged one") from exc
    except ImageTooLarge:
        raise  # a SearchError is a ValueError: not to be read as an unreadable picture below
    except (OSError, SyntaxError, ValueError) as exc:
        raise NotAnImage(f"image is not a picture that can be read (PNG, JPEG, WebP, GIF, BMP, TIFF): {exc}") from exc
    square = square.resize((size, size), Image.Resampling.BICUBIC, reducing_gap=3.0)
    return np.array(square, dtype=np.uint8)[None]


def like_vector(features: VideoFeatures | None, like: LikeQuery) -> np.ndarray:
    """The mean of the stored unit vectors overlapping `like`'s stretch, renormalised (columnar)."""
    if features is None or len(features.start) == 0:
        raise SearchError(f"like.video_id {like.video_id} is not an indexed video")
    end = np.inf if like.end is None else like.end
    inside = (features.end > like.start) & (features.start < end)
    if not inside.any():
        raise SearchError(
            f"like: {like.start:g}-{end:g} s holds no indexed frames of video {like.video_id} "
            f"(its frames span {float(features.start.min()):.1f}-{float(features.end.max()):.1f} s)"
        )
    return _unit(features.vectors[inside].mean(axis=0), "like")


def compose(vectors: dict[str, np.ndarray], weights: dict[str, float] | None) -> ComposedQuery:
    """Inputs' unit vectors -> the normalised weighted sum (see the module's docstring for why)."""
    weights = weights or {}
    used = {name: float(weights.get(name, 1.0)) for name in vectors}
    used = {name: w for name, w in used.items() if w > 0}
    if not used:
        raise SearchError(f"every query input ({', '.join(vectors)}) has weight 0 in query_weights")
    names = list(used)
    w = np.asarray([used[n] for n in names], dtype=np.float32)
    stacked = np.stack([np.asarray(vectors[n], dtype=np.float32) for n in names])
    total = float(w.sum())
    return ComposedQuery(_unit(w @ stacked, "+".join(names)), {n: round(used[n] / total, 6) for n in names})


def _unit(v: np.ndarray, what: str) -> np.ndarray:
    norm = float(np.linalg.norm(v))
    if not np.isfinite(norm) or norm < 1e-6:
        raise SearchError(f"the {what} query has no direction (its inputs cancel out): change the weights")
    return (v / norm).astype(np.float32)
