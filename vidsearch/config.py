"""Settings, in one place: defaults < TOML file < `VIDSEARCH_*` environment < command-line flags.

Every part reads the same `Settings`, so a value set once (say `VIDSEARCH_MODEL=tiny`) means the same
thing to the indexer, the search service and the UI. The TOML file is `--config PATH`,
`VIDSEARCH_CONFIG`, or `./vidsearch.toml` when it exists.
"""

from __future__ import annotations

import difflib
import json
import os
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

DEFAULT_CONFIG_FILE = Path("vidsearch.toml")


class Settings(BaseSettings):
    """What an operator can tune. Names match the CLI flags and `VIDSEARCH_<NAME>` variables."""

    model_config = SettingsConfigDict(env_prefix="VIDSEARCH_", extra="ignore", validate_default=True)

    db: Path = Field(Path("vidsearch-index"), description="Index directory (LanceDB).")

    # Frame/text tower. `pretrained` None means the model's default weights (laion2b for ViT-B-32,
    # the shipped checkpoint for `tiny`); "none" means random weights (benchmarks only).
    model: str = Field("ViT-B-32", description="open_clip model name, or `tiny`.")
    pretrained: str | None = Field(None, description="open_clip pretrained tag.")
    checkpoint: Path | None = Field(None, description="Local weights file (open_clip state dict).")
    precision: Literal["auto", "bf16", "fp32"] = Field(
        "auto", description="auto: bf16 on CPUs that support it when it matches fp32 (cosine >= 0.999)."
    )
    device: str = Field("auto", description="auto, cpu, cuda, cuda:1, ...")
    token_merging: str = Field(
        "off", description="Temporal token merging in the image tower: off, recommended, or a schedule string."
    )

    audio_model: str | None = Field(
        None, description="Pretrained text-audio tower for non-speech sounds (CLAP): a Hugging Face name "
        "(laion/clap-htsat-unfused) or a local folder; none: no such tower. Part of the index's fingerprint.",
    )
    audio_weight: float = Field(0.5, ge=0, le=10, description="How much a pretrained audio tower's match counts against the visual score.")

    # Where the frame/text towers run (README: Serving encoders with Triton). The heads and the audio
    # tower stay in this process either way.
    encoder_backend: Literal["torch", "triton"] = Field(
        "torch", description="torch: load the towers here; triton: encode on a Triton server (--triton-url)."
    )
    triton_url: str | None = Field(None, description="Triton server: http://HOST:8000 or grpc://HOST:8001.")
    triton_model_prefix: str = Field(
        "vidsearch", description="Served model names are PREFIX_image and PREFIX_text (`export-triton --prefix`)."
    )
    triton_timeout: float = Field(120.0, gt=0, description="Seconds a Triton request may take (CPU servers are slow).")
    triton_retries: int = Field(3, ge=0, le=10, description="Retries (with backoff) of a Triton request on transient errors.")

    # Sampling and segmentation.
    sample_fps: float = Field(1.0, gt=0, le=30, description="Frames sampled per second of video.")
    short_video_fps: float = Field(
        0.0, ge=0, le=30, description="Frames per second for videos up to short_video_seconds long, where above "
        "sample_fps (0: every video at sample_fps). For libraries of short clips whose events last seconds: 2 "
        "reads order and moments better, at twice the frames (README: \"Frames per second\").",
    )
    short_video_seconds: float = Field(300.0, ge=0, description="Longest video sampled at short_video_fps.")
    window_seconds: float = Field(4.0, gt=0, description="Fixed-window segment length.")
    window_stride: float = Field(2.0, gt=0, description="Fixed-window segment stride.")
    shot_threshold: float = Field(
        0.4, gt=0, le=1, description="Colour-histogram change (0..1) between samples that cuts a shot."
    )

    # Pipeline.
    batch_size: int | None = Field(
        None, ge=1, description="Frames per encoder batch (default: 256 where the frame tower runs on a GPU, 32 elsewhere)."
    )
    decode_workers: int | None = Field(None, ge=1, description="Decoder processes (default: cores, at most 4).")
    overlap: Literal["auto", "on", "off"] = Field(
        "auto",
        description="Decode while encoding: auto = where decoders do not share the encoder's cores (GPU, "
        "many-core CPU); off = take turns (faster when they would share cores).",
    )
    decode_ahead: int = Field(4, ge=1, description="Decoded videos queued ahead of the encoder.")
    flush_videos: int = Field(16, ge=1, description="Videos buffered per store commit.")
    threads: int | None = Field(None, ge=1, description="Torch CPU threads of the indexer's encoder and the search engine (default: the cores this process may use).")
    decode_stall_seconds: float = Field(
        120.0, gt=0, description="A decoder whose progress stops this long is killed; that file fails alone."
    )
    follow_symlinks: bool = Field(
        False, description="Follow symbolic links that lead outside the folders being indexed (off: reported, not read)."
    )
    retry_failed: bool = Field(False, description="Try files that failed before again even if they did not change.")
    engine: Literal["local", "ray"] = Field(
        "local", description="Indexing engine: local (this machine's processes) or ray (Ray Data over a cluster)."
    )
    ray_address: str | None = Field(None, description="Ray cluster for --engine ray: auto, ray://HOST:10001 (none: start one here).")

    # Text channels (indexing).
    speech: bool = Field(True, description="Transcribe speech (ASR with word times) into timed spans.")
    speech_engine: Literal["whisper", "pocketsphinx"] = Field("whisper", description="ASR engine.")
    speech_model: str | None = Field(None, description="Whisper model name or path (default tiny.en, shipped).")
    speech_batch: int = Field(
        8, ge=1, description="Whisper: pieces of speech decoded side by side (1: the sequential decoder, ~3x slower)."
    )
    speech_threads: int = Field(
        0, ge=0, description="Whisper's CPU threads per decoder process (0: the decoder's share of the cores, cores / decode_workers, "
        "as OCR's, since it runs beside the frames and OCR; with speech_beside_frames off, half the cores).",
    )
    speech_beside_frames: bool = Field(
        True, description="Transcribe a video's soundtrack on a thread of its own while its frames are decoded and read for text "
        "(Whisper side by side with OCR); off, after the last frame (fewer busy threads per decoder, for the same CPU).",
    )
    ocr: bool = Field(True, description="Read on-screen text into timed spans.")
    sound_cues: bool = Field(
        True, description="Read the soundtrack's level, pitch and bursts every quarter second for the sound channel. With a model "
        "that has no audio tower and speech off this decodes each soundtrack for them alone (~0.4 CPU s per minute of audio, "
        "~60 ms a file); with speech on they are read from the speech decode.",
    )
    ocr_engine: Literal["rapidocr", "tesseract"] = Field(
        "rapidocr", description="rapidocr: PP-OCRv4 detection + recognition (reads text on busy backgrounds); tesseract."
    )
    ocr_fps: float | None = Field(
        None, gt=0, le=30, description="Frames per second read whole for on-screen text (default: 0.5, or sample_fps where lower; "
        "tesseract: sample_fps). At the video's sampling rate or below, OCR reads the encoder's decode (where its frames are at least "
        "the encoder's size); a faster rate decodes again.",
    )
    ocr_glance: bool = Field(
        True, description="Where OCR reads slower than frames are sampled, look at the frames between for text that appeared and went "
        "between two reads (their thin strokes against the reads' on either side, ~1 ms a frame) and read those frames where it did "
        "(rapidocr). Off, text shown for less than two reads' interval can be missed.",
    )

    # Search.
    candidates: int = Field(100, ge=1, le=1000, description="Videos re-ranked by the fine stage.")
    coarse_segments: int = Field(
        500, ge=10, le=20000, description="Segments fetched by the coarse stage (HNSW efSearch follows it)."
    )
    pooling: Literal["auto", "xpool", "param_free", "mean"] = Field(
        "auto", description="Fine re-ranking: trained X-Pool head when the model has one, else parameter-free."
    )
    pool_temperature: float = Field(0.01, gt=0, description="Temperature of parameter-free X-Pool.")
    rrf_k: float = Field(60.0, gt=0, description="Reciprocal rank fusion constant.")
    ann: Literal["auto", "flat", "hnsw", "ivfpq"] = Field("auto", description="Coarse index kind.")
    ann_storage: Literal["fp16", "flat"] = Field(
        "fp16", description="How an HNSW coarse index keeps its vectors: float16 (half the memory) or float32."
    )
    ann_saved: bool = Field(
        True, description="Save the coarse index beside the store (DB/ann/) and load it at start instead of rebuilding."
    )
    feature_cache_mb: int = Field(1024, ge=16, description="Memory for cached unit vectors.")
    refresh_seconds: float = Field(1.0, ge=0, description="How often the server looks for a new index version.")
    calibration: Path | None = Field(
        None, description="Relevance calibration JSON (default: <db>/calibration.json, else the one shipped with the model)."
    )
    min_relevance: float | None = Field(
        None, ge=0, le=1, description="Drop results whose calibrated relevance is below this (default: the calibration's)."
    )
    max_image_mb: float = Field(10.0, gt=0, le=64, description="Largest example image a search accepts (MB); larger is a 413.")
    query_batch_ms: float = Field(
        2.0, ge=0, le=50, description="Concurrent new queries wait this long to be encoded in one batch (0: one by one)."
    )
    response_cache: int = Field(
        256, ge=0, description="Search responses kept per server for repeated requests on the live index version (0: none)."
    )
    search_threads: int = Field(
        0, ge=0, le=256, description="Searches computed at once by the server (0: one per CPU core); the rest wait their "
        "turn in arrival order, which keeps the slowest answers close to the typical one under load.",
    )
    search_processes: int = Field(
        0, ge=0, le=64, description="Worker processes that compute new searches for the server, each with its own copy "
        "of the model and snapshot (0: threads of the server's own process). Under load a process per core answers "
        "more requests, sooner, than threads sharing one interpreter; each costs the memory of the model and the index.",
    )
    query_runtime: Literal["auto", "torch", "onnx"] = Field(
        "auto", description="What encodes new queries where the text tower is the sentence encoder (tiny): auto = "
        "`vidsearch serve` builds an ONNX Runtime copy in the background at start (torch answers meanwhile) and "
        "one-shot searches use torch; onnx = every engine does; torch = never. Without onnxruntime: torch.",
    )

    # HTTP service.
    host: str = Field("127.0.0.1", description="Address `vidsearch serve` binds.")
    port: int = Field(8080, ge=0, le=65535, description="Port `vidsearch serve` binds (0: any free port).")
    api_keys: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="Keys accepted as `Authorization: Bearer KEY` (JSON list or comma-separated)."
    )
    read_auth: bool = Field(False, description="Require an API key for reads too (writes always need one).")
    library_roots: Annotated[list[Path], NoDecode] = Field(
        default_factory=list,
        description="Folders the server may index and serve media from (JSON list, or paths separated by `:`); "
        "jobs over HTTP are refused while none is set. The CLI indexes what the operator names.",
    )
    header_timeout: float = Field(
        20.0, gt=0, description="Seconds a client has to send a request's line and headers (a second more per 500 "
        "bytes, up to twice this); slower connections are closed.",
    )
    body_timeout: float = Field(
        20.0, gt=0, description="Seconds a request body has to arrive, a second more per 500 bytes received; "
        "a body that trickles slower is dropped with its connection.",
    )
    send_timeout: float = Field(
        60.0, gt=0, description="Seconds a client may take none of an answer (its buffers full) before the "
        "connection is dropped; a slow reader is not timed.",
    )
    max_connections: int = Field(
        0, ge=0, description="Open connections the server holds (0: half the process's open-file limit); past it the "
        "connection waiting longest for its request is closed.",
    )
    job_stall_seconds: float = Field(900.0, gt=0, description="A server job that reports no progress this long is stopped (failed).")
    api_url: str | None = Field(None, description="Search API the UI and `vidsearch search --api` talk to.")

    @field_validator("api_keys", mode="before")
    @classmethod
    def _split_keys(cls, value):
        return _listed(value, ",")

    @field_validator("api_keys")
    @classmethod
    def _real_keys(cls, keys: list[str]) -> list[str]:
        """Keys as clients send them: surrounding whitespace dropped (a TOML or JSON list can keep a
        newline, and such a key never matched), blank ones dropped (`--api-key "$KEY"` with KEY unset
        gave '', which counted as configured: a --read-auth server started, and a URL signed with the
        empty key opened every video)."""
        return list(dict.fromkeys(k.strip() for k in keys if k and k.strip()))

    @field_validator("library_roots", mode="before")
    @classmethod
    def _split_roots(cls, value):
        return _listed(value, os.pathsep)


def _listed(value, sep: str):
    """A list setting given as one string (an environment variable): a JSON list, or items split at `sep`."""
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            return json.loads(text)
        return [item.strip() for item in text.split(sep) if item.strip()]
    return value


class _CheckedToml(TomlConfigSettingsSource):
    """A TOML settings file in which every key must be a setting: a typo (`sample_fsp = 2`) is an
    error that names the key and the file, not a value silently ignored. (Unknown `VIDSEARCH_*`
    environment variables stay allowed: other tools share the prefix, e.g. VIDSEARCH_API_KEY.)"""

    def __init__(self, settings_cls: type[BaseSettings], toml_file: Path):
        super().__init__(settings_cls, toml_file=toml_file)
        known = set(settings_cls.model_fields)
        for key in sorted(set(self.toml_data) - known):
            close = difflib.get_close_matches(key, sorted(known), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ValueError(f"unknown setting {key!r} in {toml_file}{hint}")


class _SettingsWithToml(Settings):
    """Settings whose sources include a TOML file chosen at load time."""

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        toml = _toml_path()
        if toml is not None:
            sources.append(_CheckedToml(settings_cls, toml))
        return tuple(sources)


_TOML_OVERRIDE: Path | None = None


def _toml_path() -> Path | None:
    path = _TOML_OVERRIDE or os.environ.get("VIDSEARCH_CONFIG")
    if path:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"config file {path} does not exist")
        return path
    return DEFAULT_CONFIG_FILE if DEFAULT_CONFIG_FILE.is_file() else None


def load_settings(config_file: Path | None = None, **overrides: Any) -> Settings:
    """Build settings from every source; `overrides` (CLI flags) win, and None means "not given"."""
    global _TOML_OVERRIDE
    _TOML_OVERRIDE = Path(config_file) if config_file else None
    try:
        given = {k: v for k, v in overrides.items() if v is not None}
        loaded = _SettingsWithToml(**given)
    finally:
        _TOML_OVERRIDE = None
    # keep track of what was set by any source, so callers can tell "default" from "asked for"
    return Settings.model_validate(loaded.model_dump(exclude_unset=True))
