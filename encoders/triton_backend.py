"""The frame/text towers behind a Triton Inference Server: a backbone that encodes through `tritonclient`.

Why: on a GPU fleet one encoder service, shared by indexers and query servers, replaces a torch model
in every process. `TritonBackbone` has the local backbone's interface (`encode_units`,
`encode_frames`, `encode_text`, `fingerprint`, `image_size`, `dim`, `audio_tower`, `head`), so the
indexer, the search engine and the server only flip a setting (`--encoder-backend triton
--triton-url URL`). The X-Pool / fusion head and the audio tower stay local: they are small, and the
head re-ranks stored vectors per query, which a round trip per candidate would only slow down.

The wire format is the exporter's (encoders/onnx_export.py): uint8 frames as decoded, int32 token ids
tokenised here, normalised float32 vectors back. Requests are cut to the served model's
`max_batch_size`; transient failures (connection refused or reset, 429/502/503/504, gRPC UNAVAILABLE,
DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED) are retried with exponential backoff; every error names the
server URL and the model.

The server's model must be the one the caller expects: each served model carries the fingerprint in
its config parameters, and a server that serves another model (or other weights or token-merging
settings) than the flags or the index ask for is refused with both named.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import torch

from vidsearch.fingerprint import Fingerprint

from .backbone import (
    RANDOM_SEED,
    ModelLoadError,
    _build_heads,
    _open_clip,
    file_sha256,
    read_checkpoint,
    resolve_weights,
    spec_from_fingerprint,
)
from .onnx_export import FINGERPRINT_PARAM, IMAGE_INPUT, OUTPUT, TEXT_INPUT, model_names
from .unit_head import head_units

log = logging.getLogger(__name__)

TRANSIENT_HTTP = {"429", "502", "503", "504"}
TRANSIENT_GRPC = {"StatusCode.UNAVAILABLE", "StatusCode.DEADLINE_EXCEEDED", "StatusCode.RESOURCE_EXHAUSTED"}
IN_FLIGHT = 2  # frame batches on the wire at once: the next is serialised while the server computes


class TritonError(ModelLoadError):
    """Encoding through Triton failed; the message names the server and the model."""


class TritonUnavailable(TritonError):
    """The server cannot be reached (down, wrong URL, or not answering in time)."""


class TritonModelMismatch(TritonError):
    """The server serves another model than the index or the flags ask for."""


@dataclass(frozen=True)
class TritonOptions:
    """Where the encoders are served and how patiently to talk to them."""

    url: str
    prefix: str = "vidsearch"
    timeout: float = 120.0  # seconds per request: a 64-frame ViT-B-32 batch takes ~10 s on 2 busy CPU cores
    retries: int = 3  # extra attempts on transient errors
    backoff: float = 0.2  # seconds before the first retry; doubles each time

    @classmethod
    def from_settings(cls, settings) -> TritonOptions:
        if not settings.triton_url:
            raise TritonError(
                "--encoder-backend triton needs the server's address: --triton-url http://HOST:8000 "
                "or grpc://HOST:8001 (VIDSEARCH_TRITON_URL)"
            )
        return cls(settings.triton_url, settings.triton_model_prefix, settings.triton_timeout, settings.triton_retries)

    @property
    def protocol(self) -> str:
        return parse_url(self.url)[0]


def parse_url(url: str) -> tuple[str, str, bool]:
    """`http://h:p`, `https://h:p`, `grpc://h:p` or `grpcs://h:p` -> (protocol, "h:p", ssl)."""
    parts = urlsplit(url if "://" in url else f"http://{url}")
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https", "grpc", "grpcs") or not parts.hostname:
        raise TritonError(f"Triton URL {url!r} is not http://HOST:PORT or grpc://HOST:PORT")
    default_port = 8001 if scheme.startswith("grpc") else 8000
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return ("grpc" if scheme.startswith("grpc") else "http"), f"{host}:{parts.port or default_port}", scheme.endswith("s")


def _is_transient(exc: BaseException) -> bool:
    if isinstance(exc, (ConnectionError, TimeoutError, OSError)):
        return True
    status = getattr(exc, "status", None)
    code = str(status() if callable(status) else status)
    if code in TRANSIENT_HTTP or code in TRANSIENT_GRPC:
        return True
    return "timed out" in str(exc).lower() or type(exc).__name__ == "Timeout"  # gevent's timeout


def _describe(exc: BaseException) -> str:
    msg = getattr(exc, "message", None)
    text = (msg() if callable(msg) else msg) or str(exc) or type(exc).__name__
    status = getattr(exc, "status", None)
    code = status() if callable(status) else status
    return f"{text} ({code})" if code else text


class TritonClient:
    """One protocol's `tritonclient`, per thread (the HTTP client is gevent-based and not thread-safe),
    with retries, timeouts and errors that name the URL."""

    def __init__(self, options: TritonOptions):
        self.options = options
        self.protocol, self.address, self.ssl = parse_url(options.url)
        try:
            if self.protocol == "grpc":
                import tritonclient.grpc as module
            else:
                import tritonclient.http as module
        except ImportError as exc:
            raise TritonError(
                f"--encoder-backend triton needs tritonclient for {self.protocol}: pip install 'vidsearch[triton]'"
            ) from exc
        self._module = module
        self._local = threading.local()

    @property
    def url(self) -> str:
        return self.options.url

    def _client(self):
        client = getattr(self._local, "client", None)
        if client is None:
            t = self.options.timeout
            if self.protocol == "grpc":
                client = self._module.InferenceServerClient(self.address, ssl=self.ssl)
            else:
                client = self._module.InferenceServerClient(
                    self.address, ssl=self.ssl, connection_timeout=t, network_timeout=t
                )
            self._local.client = client
        return client

    def _call(self, what: str, fn, retries: int | None = None):
        """fn(client) with retries on transient errors; any failure becomes a TritonError naming the URL."""
        retries = self.options.retries if retries is None else retries
        for attempt in range(retries + 1):
            try:
                return fn(self._client())
            except Exception as exc:  # noqa: BLE001 - classified below; the message keeps the cause
                transient = _is_transient(exc)
                if transient and attempt < retries:
                    delay = self.options.backoff * 2**attempt
                    log.warning("Triton at %s: %s failed (%s); retrying in %.1f s", self.url, what, _describe(exc), delay)
                    self._local.client = None  # a reset connection is not reused
                    time.sleep(delay)
                    continue
                if transient:
                    raise TritonUnavailable(
                        f"Triton server at {self.url} is not reachable: {what} failed after {attempt + 1} "
                        f"attempt(s): {_describe(exc)}. Is it running (README: Serving encoders with Triton), "
                        f"and is the URL right (--triton-url / VIDSEARCH_TRITON_URL)? Or encode locally with "
                        f"--encoder-backend torch."
                    ) from exc
                raise TritonError(f"Triton server at {self.url}: {what} failed: {_describe(exc)}") from exc
        raise AssertionError  # unreachable

    def _timeout_kw(self) -> dict:
        return {"client_timeout": self.options.timeout} if self.protocol == "grpc" else {}

    def live(self) -> bool:
        return bool(self._call("liveness check", lambda c: c.is_server_live(**self._timeout_kw())))

    def model_ready(self, name: str) -> bool:
        return bool(self._call(f"readiness of model {name}", lambda c: c.is_model_ready(name, **self._timeout_kw()), retries=0))

    def model_config(self, name: str) -> dict:
        def get(c):
            if self.protocol == "grpc":
                return c.get_model_config(name, as_json=True, **self._timeout_kw())["config"]
            return c.get_model_config(name)

        return self._call(f"config of model {name}", get)

    def infer(self, name: str, input_name: str, array: np.ndarray) -> np.ndarray:
        from tritonclient.utils import np_to_triton_dtype

        m = self._module

        def run(c):
            inp = m.InferInput(input_name, list(array.shape), np_to_triton_dtype(array.dtype))
            if self.protocol == "grpc":
                inp.set_data_from_numpy(array)
                out = m.InferRequestedOutput(OUTPUT)
                result = c.infer(name, [inp], outputs=[out], client_timeout=self.options.timeout)
            else:
                inp.set_data_from_numpy(array, binary_data=True)
                out = m.InferRequestedOutput(OUTPUT, binary_data=True)
                result = c.infer(name, [inp], outputs=[out])
            return result.as_numpy(OUTPUT)

        got = self._call(f"inference on model {name} ({len(array)} inputs)", run)
        if got is None or got.shape[0] != array.shape[0]:
            raise TritonError(
                f"Triton server at {self.url}: model {name} answered {None if got is None else got.shape} "
                f"for {array.shape[0]} inputs (a server with numpy>=2 under PyTriton returns empty outputs)"
            )
        return np.asarray(got, dtype=np.float32)


@dataclass(frozen=True)
class ServedModel:
    """What the server says about one of our models (from its config)."""

    name: str
    max_batch_size: int
    input_name: str
    input_dims: tuple[int, ...]
    dim: int
    fingerprint: Fingerprint | None


def _served(client: TritonClient, name: str) -> ServedModel:
    if not client.model_ready(name):
        raise TritonError(
            f"Triton server at {client.url} has no ready model {name!r}: export the repository with "
            f"`vidsearch export-triton DIR --model ...` and load it (model name prefix: --triton-model-prefix)"
        )
    cfg = client.model_config(name)
    params = {k: (v or {}).get("string_value", "") for k, v in (cfg.get("parameters") or {}).items()}
    fp = None
    if params.get(FINGERPRINT_PARAM):
        fp = Fingerprint.model_validate(json.loads(params[FINGERPRINT_PARAM]))
    inputs, outputs = cfg.get("input") or [], cfg.get("output") or []
    if len(inputs) != 1 or not outputs:
        raise TritonError(f"Triton model {name} at {client.url} does not look like a vidsearch export (inputs {inputs})")
    return ServedModel(
        name=name,
        max_batch_size=int(cfg.get("max_batch_size") or 0),
        input_name=inputs[0]["name"],
        input_dims=tuple(int(d) for d in inputs[0].get("dims", [])),
        dim=int(outputs[0].get("dims", [0])[-1]),
        fingerprint=fp,
    )


def expected_identity(model: str, pretrained: str | None, checkpoint: Path | None, merging: str | None) -> tuple[str, str, str | None]:
    """(model, weights, merging) that the torch backend would load for these flags, without loading it.

    merging is None for temporal grouping ("recommended", or any `groups=`), which no served tower does.
    """
    from .token_merging import MergeConfig

    tag, ckpt = resolve_weights(model, pretrained, checkpoint)
    if ckpt is not None:
        if not Path(ckpt).is_file():
            raise ModelLoadError(f"checkpoint {ckpt} does not exist (from --checkpoint / VIDSEARCH_CHECKPOINT)")
        weights = f"sha256:{file_sha256(Path(ckpt))[:16]}"
    else:
        weights = f"pretrained:{tag}" if tag else f"random:seed{RANDOM_SEED}"
    setting = (merging or "off").strip()
    if setting.lower() in ("recommended", "auto", "default"):
        return model, weights, None
    try:
        config = MergeConfig.parse(setting)
    except ValueError as exc:
        raise ModelLoadError(f"token merging setting {setting!r}: {exc}") from exc
    return model, weights, (None if config.groups else config.canonical())


class TritonBackbone:
    """A backbone whose towers run on a Triton server; heads and the audio tower run here."""

    def __init__(self, client: TritonClient, image: ServedModel, text: ServedModel, tokenizer, checkpoint: Path | None):
        self.client = client
        self.image = image
        self.text = text
        self.tokenizer = tokenizer
        fp = image.fingerprint
        assert fp is not None
        self._fingerprint = fp
        self.name, self.weights, self.dim = fp.model, fp.weights, fp.dim
        self.image_size = int(image.input_dims[0])
        self.context_length = int(text.input_dims[0])
        self.device = torch.device("cpu")  # where the local heads run
        self.visual_dtype = torch.float32  # what the exported graph computes in
        self.audio_tower = self.head = None
        if checkpoint is not None:
            self.audio_tower, self.head = _build_heads(read_checkpoint(checkpoint), self.dim)
        self._pool = ThreadPoolExecutor(max_workers=IN_FLIGHT, thread_name_prefix="triton")

    @property
    def fingerprint(self) -> Fingerprint:
        return self._fingerprint

    @property
    def merging(self) -> str:
        return self._fingerprint.merging

    @property
    def url(self) -> str:
        return self.client.url

    def _batches(self, n: int, served: ServedModel, batch: int | None) -> list[tuple[int, int]]:
        size = served.max_batch_size or n or 1
        if batch:
            size = min(size, batch)
        return [(i, min(i + size, n)) for i in range(0, n, size)]

    def encode_frames(self, frames: np.ndarray, batch: int | None = None) -> np.ndarray:
        """uint8 frames (N, S, S, 3), already resized and cropped to `image_size` -> unit vectors (N, D)."""
        frames = np.ascontiguousarray(frames, dtype=np.uint8)
        if frames.ndim != 4 or frames.shape[1:] != (self.image_size, self.image_size, 3):
            raise ValueError(f"frames must be uint8 [N, {self.image_size}, {self.image_size}, 3], got {frames.shape}")
        if len(frames) == 0:
            return np.zeros((0, self.dim), np.float32)
        parts = self._batches(len(frames), self.image, batch)
        send = lambda ab: self.client.infer(self.image.name, self.image.input_name, frames[ab[0] : ab[1]])  # noqa: E731
        if len(parts) == 1:
            return send(parts[0])
        return np.concatenate(list(self._pool.map(send, parts)))

    def encode_units(
        self, frames: np.ndarray, unit_start: np.ndarray, unit_end: np.ndarray, video_index: np.ndarray, batch: int = 64,
        cues: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Frames -> units. Served models merge within a frame at most (temporal grouping does not
        export), so a unit is a frame, as with the local tower and merging off or per-frame. `cues`:
        the frames' where-cues when the caller already read them."""
        vecs = self.encode_frames(frames, batch)
        start, end, owner = np.asarray(unit_start, np.float64), np.asarray(unit_end, np.float64), np.asarray(video_index)
        # the focus view's crops through the served tower, the where-cues read from the pixels here: as the local tower
        units = head_units(self.head, lambda f: self.encode_frames(f, batch), frames, vecs, start, end, owner, start, end, owner, cues)
        return units, start, end, owner

    def encode_text(self, texts: list[str]) -> np.ndarray:
        if len(texts) == 0:
            return np.zeros((0, self.dim), np.float32)
        tokens = self.tokenizer(list(texts))
        tokens = np.ascontiguousarray(tokens.numpy() if hasattr(tokens, "numpy") else tokens, dtype=np.int32)
        return np.concatenate(
            [self.client.infer(self.text.name, self.text.input_name, tokens[a:b]) for a, b in self._batches(len(tokens), self.text, None)]
        )

    def readiness(self) -> dict:
        """The served models' state, for the server's /readyz."""
        models = {}
        for name in (self.image.name, self.text.name):
            try:
                models[name] = "READY" if self.client.model_ready(name) else "NOT READY"
            except TritonError as exc:
                models[name] = f"UNREACHABLE: {exc}"
        return {"backend": "triton", "url": self.url, "models": models, "ready": all(v == "READY" for v in models.values())}


def load_triton_backbone(
    options: TritonOptions,
    model: str | None = None,
    pretrained: str | None = None,
    checkpoint: Path | None = None,
    merging: str | None = "off",
) -> TritonBackbone:
    """Connect, check that the server serves the model these flags (or the index) describe, and
    load the local heads from its checkpoint (the shipped one for `tiny`).

    `model=None` takes whatever the server serves (the caller then checks the index's fingerprint).
    """
    client = TritonClient(options)
    client.live()  # TritonUnavailable naming the URL when nobody answers
    image_name, text_name = model_names(options.prefix)
    image, text = _served(client, image_name), _served(client, text_name)
    for served in (image, text):
        if served.fingerprint is None:
            raise TritonModelMismatch(
                f"Triton model {served.name} at {client.url} carries no vidsearch fingerprint "
                f"(parameter {FINGERPRINT_PARAM}); serve a repository written by `vidsearch export-triton`"
            )
    if image.fingerprint != text.fingerprint:
        raise TritonModelMismatch(
            f"Triton at {client.url} serves two different models: {image_name} is "
            f"{image.fingerprint.describe()}, {text_name} is {text.fingerprint.describe()}"
        )
    fp = image.fingerprint
    if len(image.input_dims) != 3 or image.input_name != IMAGE_INPUT or text.input_name != TEXT_INPUT:
        raise TritonError(f"Triton models at {client.url} do not take vidsearch's inputs ({image.input_name}, {text.input_name})")
    if model is not None:
        want_model, want_weights, want_merging = expected_identity(model, pretrained, checkpoint, merging)
        if want_merging is None:
            raise TritonModelMismatch(
                f"token merging {merging!r} groups neighbouring frames, which a Triton-served tower cannot do; "
                f"use --token-merging off or a per-frame setting such as 'r=1' (and export it so)"
            )
        if (fp.model, fp.weights, fp.merging) != (want_model, want_weights, want_merging):
            raise TritonModelMismatch(
                f"Triton server at {client.url} serves {fp.describe()} (fingerprint {fp.id}), but this run "
                f"expects {want_model} [{want_weights}] merging={want_merging} (from the index, or from "
                f"--model/--pretrained/--checkpoint/--token-merging). Export and load the expected model "
                f"(`vidsearch export-triton DIR --model {want_model} ...`), or point --triton-url at a server "
                f"that serves it."
            )
    heads_from = None
    if fp.weights.startswith("sha256:"):
        # the trained heads and audio tower live beside the CLIP weights in the checkpoint
        try:
            heads_from = spec_from_fingerprint(fp, checkpoint)["checkpoint"]
        except ModelLoadError as exc:
            raise TritonError(
                f"Triton server at {client.url} serves {fp.describe()}; its X-Pool head and audio tower run "
                f"here, from that checkpoint (sha256 {fp.weights.removeprefix('sha256:')}): point at the file "
                f"with --checkpoint PATH (VIDSEARCH_CHECKPOINT)"
            ) from exc
    tokenizer = _open_clip().get_tokenizer(fp.model)
    backbone = TritonBackbone(client, image, text, tokenizer, heads_from)
    length = int(tokenizer(["a"]).shape[-1])
    if length != backbone.context_length:
        raise TritonError(
            f"Triton model {text_name} at {client.url} takes {backbone.context_length} tokens, but the "
            f"{fp.model} tokenizer here makes {length}"
        )
    return backbone
