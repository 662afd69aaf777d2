"""What every `vidsearch` command shares: the consoles, the one-line error exit, settings from flags,
JSON output and the option declarations.

The commands live in two places, the product's (`vidsearch.cli`: index, search, serve, ui...) and
the lab's (`vidsearch.lab.commands`: train, eval, synth...), and the lab sits beside the product, not
under it, so what both need is here, in the core, where either may import it.

Help texts state defaults in square brackets ("[default 1.0]"): the options default to None so a
command can tell "not given" (let the TOML file or the environment decide) from a value.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated, NoReturn, Optional

import typer
from rich.console import Console
from rich.markup import escape

from .config import Settings, load_settings
from .fingerprint import FingerprintMismatch

PIPED_WIDTH = 400  # columns of a table written to a pipe or a file


def _stdout_console() -> Console:
    """Rich fits a table to 80 columns where stdout is no terminal (and COLUMNS is not set), so piped
    output broke file paths over lines (`vidsearch list | grep clip.mp4` found nothing): a pipe gets
    wide lines instead."""
    piped = not sys.stdout.isatty() and not os.environ.get("COLUMNS")
    return Console(width=PIPED_WIDTH) if piped else Console()


out = _stdout_console()
err = Console(stderr=True)


class UserError(Exception):
    """An error the user can fix; printed as one line, exit code 2."""


def user_errors() -> tuple[type[BaseException], ...]:
    """Errors whose message already says what to do, printed as one line (a command that loads a
    model adds the model stack's ModelLoadError). The store is imported here, not at the top:
    importing lancedb takes 2.5 s, which `vidsearch --help` and `vidsearch ui` must not pay."""
    from .store import StoreError

    return (UserError, FingerprintMismatch, StoreError, FileNotFoundError)


def fail(message: str, code: int = 2) -> NoReturn:
    err.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def settings_from(config: Path | None, **flags) -> Settings:
    """Settings from every source, flags first; a bad value or a missing file is one clear line."""
    try:
        return load_settings(config, **flags)
    except FileNotFoundError as exc:
        fail(str(exc))
    except ValueError as exc:  # pydantic validation or an unknown TOML key: name the setting
        fail(f"invalid setting: {exc}")


def print_json(obj) -> None:
    sys.stdout.write(json.dumps(obj, ensure_ascii=False, default=str) + "\n")


ConfigOpt = Annotated[Optional[Path], typer.Option("--config", help="TOML settings file (else VIDSEARCH_CONFIG or ./vidsearch.toml).")]
DbOpt = Annotated[Optional[Path], typer.Option("--db", help="Index directory [VIDSEARCH_DB; default ./vidsearch-index].")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object instead of tables.")]
ModelOpt = Annotated[Optional[str], typer.Option("--model", help="open_clip model name, or `tiny`; an existing index keeps the model it was built with [VIDSEARCH_MODEL; default ViT-B-32].")]
PretrainedOpt = Annotated[Optional[str], typer.Option("--pretrained", help="open_clip pretrained tag; `none` for random weights [VIDSEARCH_PRETRAINED].")]
CheckpointOpt = Annotated[Optional[Path], typer.Option("--checkpoint", help="Local weights file [VIDSEARCH_CHECKPOINT].")]
PrecisionOpt = Annotated[Optional[str], typer.Option("--precision", help="auto | bf16 | fp32 [VIDSEARCH_PRECISION; default auto].")]
FpsOpt = Annotated[Optional[float], typer.Option("--sample-fps", help="Frames sampled per second [default 1.0].")]
WinOpt = Annotated[Optional[float], typer.Option("--window-seconds", help="Fixed-window segment length [default 4].")]
StrideOpt = Annotated[Optional[float], typer.Option("--window-stride", help="Fixed-window stride [default 2].")]
ShotOpt = Annotated[Optional[float], typer.Option("--shot-threshold", help="Histogram change that cuts a shot, 0..1 [default 0.4].")]
BatchOpt = Annotated[Optional[int], typer.Option("--batch-size", help="Frames per encoder batch [default: 256 on a GPU, 32 elsewhere].")]
WorkersOpt = Annotated[Optional[int], typer.Option("--decode-workers", help="Decoder processes [default: cores, at most 4].")]
ProgressFileOpt = Annotated[Optional[Path], typer.Option("--progress-file", help="Also write progress as JSON to this file (for job runners).")]
SpeechOpt = Annotated[Optional[bool], typer.Option("--speech/--no-speech", help="Transcribe speech into timed text [default on].")]
OcrOpt = Annotated[Optional[bool], typer.Option("--ocr/--no-ocr", help="Read on-screen text [default on].")]
SpeechEngineOpt = Annotated[Optional[str], typer.Option("--speech-engine", help="whisper | pocketsphinx [default whisper].")]
SpeechModelOpt = Annotated[Optional[str], typer.Option("--speech-model", help="Whisper model name or path [default tiny.en, shipped].")]
AudioModelOpt = Annotated[Optional[str], typer.Option("--audio-model", help="Pretrained text-audio tower for non-speech sounds (CLAP): a Hugging Face name or a local folder; `none` for no such tower. Part of the index's fingerprint [VIDSEARCH_AUDIO_MODEL].")]
MergingOpt = Annotated[Optional[str], typer.Option("--token-merging", help="Temporal token merging: off | recommended | a schedule [default off].")]
FollowOpt = Annotated[Optional[bool], typer.Option("--follow-symlinks/--no-follow-symlinks", help="Follow symbolic links that lead outside the folders given [default: no; they are listed as not followed].")]
RetryOpt = Annotated[Optional[bool], typer.Option("--retry-failed", help="Try again files that failed before, even if unchanged.")]
EngineOpt = Annotated[Optional[str], typer.Option("--engine", help="Indexing engine: local, or ray (Ray Data over a cluster).", show_default=False)]
RayAddressOpt = Annotated[Optional[str], typer.Option("--ray-address", help="Ray cluster for --engine ray: auto or ray://HOST:10001 (default: start one here).", show_default=False)]
RestoreOpt = Annotated[bool, typer.Option("--restore", help="Bring back files under PATHS that were deleted from the index (a file named directly always comes back).")]
# where the towers run: here (torch, on --device) or on a Triton server
BackendOpt = Annotated[Optional[str], typer.Option("--encoder-backend", help="torch | triton: encode here or on a Triton server [VIDSEARCH_ENCODER_BACKEND; default torch].")]
TritonUrlOpt = Annotated[Optional[str], typer.Option("--triton-url", help="Triton server, http://HOST:8000 or grpc://HOST:8001 [VIDSEARCH_TRITON_URL].")]
DeviceOpt = Annotated[Optional[str], typer.Option("--device", help="auto | cpu | cuda | cuda:N for the local towers [VIDSEARCH_DEVICE; default auto: the GPU when there is one].")]
PathsArg = Annotated[list[Path], typer.Argument(help="Folders (recursive), video files, or manifest.jsonl files.", show_default=False)]
