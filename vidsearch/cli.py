"""The `vidsearch` command: one entry point for operators (index, status), users and scripts.

Every command that reports something takes `--json` and then prints exactly one JSON object on
stdout (progress bars go to stderr). Errors an operator can fix print one clear line and exit 2.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from .config import Settings, load_settings

app = typer.Typer(
    name="vidsearch",
    help="Text-to-video search that finds the moment. Index a library, then search it.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
out = Console()
err = Console(stderr=True)

ConfigOpt = Annotated[Optional[Path], typer.Option("--config", help="TOML settings file (else VIDSEARCH_CONFIG or ./vidsearch.toml).")]
DbOpt = Annotated[Optional[Path], typer.Option("--db", help="Index directory [env VIDSEARCH_DB; default ./vidsearch-index].")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object instead of tables.")]
ModelOpt = Annotated[Optional[str], typer.Option("--model", help="open_clip model name, or `tiny` [VIDSEARCH_MODEL; default ViT-B-32].")]
PretrainedOpt = Annotated[Optional[str], typer.Option("--pretrained", help="open_clip pretrained tag; `none` for random weights [VIDSEARCH_PRETRAINED].")]
CheckpointOpt = Annotated[Optional[Path], typer.Option("--checkpoint", help="Local weights file [VIDSEARCH_CHECKPOINT].")]
PrecisionOpt = Annotated[Optional[str], typer.Option("--precision", help="auto | bf16 | fp32 [VIDSEARCH_PRECISION].")]
FpsOpt = Annotated[Optional[float], typer.Option("--sample-fps", help="Frames sampled per second [default 1.0].")]
WinOpt = Annotated[Optional[float], typer.Option("--window-seconds", help="Fixed-window segment length [default 4].")]
StrideOpt = Annotated[Optional[float], typer.Option("--window-stride", help="Fixed-window stride [default 2].")]
ShotOpt = Annotated[Optional[float], typer.Option("--shot-threshold", help="Histogram change that cuts a shot, 0..1 [default 0.4].")]
BatchOpt = Annotated[Optional[int], typer.Option("--batch-size", help="Frames per encoder batch [default 32].")]
WorkersOpt = Annotated[Optional[int], typer.Option("--decode-workers", help="Decoder processes [default: cores, at most 4].")]
PathsArg = Annotated[list[Path], typer.Argument(help="Folders (recursive), video files, or manifest.jsonl files.", show_default=False)]


class UserError(Exception):
    """An error the user can fix; printed as one line, exit code 2."""


def _fail(message: str, code: int = 2) -> None:
    err.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def _known_errors() -> tuple[type[BaseException], ...]:
    from vidsearch.fingerprint import FingerprintMismatch
    from vidsearch.store import StoreError

    errors: list[type[BaseException]] = [UserError, FingerprintMismatch, StoreError, FileNotFoundError]
    try:
        from vidsearch.encoders.backbone import ModelLoadError

        errors.append(ModelLoadError)
    except ImportError:  # pragma: no cover
        pass
    return tuple(errors)


def _settings(config: Path | None, **flags) -> Settings:
    try:
        return load_settings(config, **flags)
    except FileNotFoundError as exc:
        _fail(str(exc))
    except ValueError as exc:  # pydantic validation: name the bad setting
        _fail(f"invalid setting: {exc}")
    raise AssertionError  # unreachable


def _print_json(obj) -> None:
    sys.stdout.write(json.dumps(obj, ensure_ascii=False, default=str) + "\n")


# -- index / reindex ----------------------------------------------------------------------------
class _RichProgress:
    """Videos bar with ETA and a frames counter with rate, on stderr."""

    def __init__(self, enabled: bool):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        self.enabled = enabled
        self.bar = Progress(
            TextColumn("[bold]indexing"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("videos · {task.fields[frames]} frames ({task.fields[fps]:.1f}/s)"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=err,
            disable=not enabled,
        )
        self.task = None
        self.frames = 0

    def start(self, total_videos: int) -> None:
        import time

        self.t0 = time.monotonic()
        self.bar.start()
        self.task = self.bar.add_task("index", total=total_videos, frames=0, fps=0.0)

    def advance(self, videos: int = 0, frames: int = 0) -> None:
        import time

        self.frames += frames
        rate = self.frames / max(time.monotonic() - self.t0, 1e-6)
        self.bar.update(self.task, advance=videos, frames=self.frames, fps=rate)

    def stop(self) -> None:
        self.bar.stop()


def _run_index(paths: list[Path], settings: Settings, json_out: bool, prune: bool, rebuild: bool) -> None:
    from vidsearch.encoders.backbone import load_backbone
    from vidsearch.indexer.pipeline import IndexRun, open_store_for

    try:
        backbone = load_backbone(settings.model, settings.pretrained, settings.checkpoint, settings.precision, settings.device)
        store = open_store_for(settings, backbone, rebuild=rebuild)
        progress = _RichProgress(enabled=not json_out and err.is_terminal)
        summary = IndexRun(store, backbone, settings, progress=progress).run(paths, prune=prune)
    except _known_errors() as exc:
        _fail(str(exc))
    result = {"db": str(settings.db), "fingerprint": backbone.fingerprint.id, **summary.as_dict()}
    if json_out:
        _print_json(result)
        return
    speed = summary.video_seconds / summary.elapsed if summary.elapsed else 0.0
    out.print(
        f"[green]indexed {summary.indexed}[/] · skipped {summary.skipped} (unchanged) · linked {summary.linked} "
        f"(same content) · [red]failed {summary.failed}[/] · removed {summary.removed} — "
        f"{summary.units} frames, {summary.video_seconds:.1f} s of video in {summary.elapsed:.1f} s "
        f"({speed:.1f} s of video/s)"
    )
    for f in summary.failures:
        out.print(f"  [red]✗[/] {escape(f['path'])}: {escape(f['error'])}", highlight=False)


@app.command()
def index(
    paths: PathsArg,
    db: DbOpt = None,
    model: ModelOpt = None,
    pretrained: PretrainedOpt = None,
    checkpoint: CheckpointOpt = None,
    precision: PrecisionOpt = None,
    sample_fps: FpsOpt = None,
    window_seconds: WinOpt = None,
    window_stride: StrideOpt = None,
    shot_threshold: ShotOpt = None,
    batch_size: BatchOpt = None,
    decode_workers: WorkersOpt = None,
    config: ConfigOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Index videos: new and changed files are encoded, unchanged ones skipped, bad ones listed.

    Safe to interrupt: run it again and it resumes where it stopped.
    """
    settings = _settings(config, **_flags(locals()))
    _run_index(paths, settings, json_out, prune=False, rebuild=False)


@app.command()
def reindex(
    paths: PathsArg,
    rebuild: Annotated[bool, typer.Option("--rebuild", help="Drop the index and rebuild it (new model or schema).")] = False,
    db: DbOpt = None,
    model: ModelOpt = None,
    pretrained: PretrainedOpt = None,
    checkpoint: CheckpointOpt = None,
    precision: PrecisionOpt = None,
    sample_fps: FpsOpt = None,
    window_seconds: WinOpt = None,
    window_stride: StrideOpt = None,
    shot_threshold: ShotOpt = None,
    batch_size: BatchOpt = None,
    decode_workers: WorkersOpt = None,
    config: ConfigOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Bring the index in line with PATHS: add new files, re-encode changed ones, drop removed ones."""
    flags = _flags(locals())
    flags.pop("rebuild")
    settings = _settings(config, **flags)
    _run_index(paths, settings, json_out, prune=True, rebuild=rebuild)


def _flags(given: dict) -> dict:
    return {k: v for k, v in given.items() if k not in ("paths", "config", "json_out")}


# -- status / delete ----------------------------------------------------------------------------
def _open_existing(db: Path | None, config: Path | None):
    from vidsearch.store import Store

    settings = _settings(config, db=db)
    try:
        return Store.open(settings.db)
    except _known_errors() as exc:
        _fail(str(exc))


@app.command()
def status(db: DbOpt = None, config: ConfigOpt = None, json_out: JsonOpt = False) -> None:
    """What is indexed: counts, hours, the model fingerprint, and every failed file with its error."""
    stats = _open_existing(db, config).stats()
    if json_out:
        _print_json(stats)
        return
    table = Table(title=f"vidsearch index {stats['db']}", show_header=False)
    for key in ("model", "fingerprint", "videos", "files", "failed", "hours", "units", "segments", "spans"):
        table.add_row(key, escape(str(stats[key])))
    out.print(table)
    if stats["failures"]:
        failed = Table(title="failed files", show_lines=False)
        failed.add_column("file", overflow="fold")
        failed.add_column("problem", overflow="fold")
        for f in stats["failures"]:
            failed.add_row(escape(f["path"]), escape(f["error"]))
        out.print(failed)


@app.command()
def delete(
    targets: Annotated[list[str], typer.Argument(help="Video ids or file paths to remove from the index.", show_default=False)],
    db: DbOpt = None,
    config: ConfigOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Remove videos (by id or path) from every table of the index."""
    store = _open_existing(db, config)
    files = store.files()
    by_path = dict(zip(files["path"].to_pylist(), files["video_id"].to_pylist()))
    indexed = store.indexed_ids()
    ids, paths, unknown = set(), set(), []
    for t in targets:
        resolved = str(Path(t).resolve())
        if t in indexed:
            ids.add(t)
        elif resolved in by_path:
            paths.add(resolved)
            if by_path[resolved]:
                ids.add(by_path[resolved])
        else:
            unknown.append(t)
    with store.write_lock():
        removed = store.delete_videos(ids)
        store.delete_files(paths)
    result = {"removed": removed, "unknown": unknown}
    if json_out:
        _print_json(result)
    else:
        out.print(f"removed {removed} video(s)" + (f"; not in the index: {', '.join(unknown)}" if unknown else ""))
    if unknown and not ids:
        raise typer.Exit(1)


def _register_optional() -> None:
    """Commands from parts that may land separately (evaluation)."""
    try:
        from .evaluation_cli import eval_moments, eval_retrieval
    except ImportError:
        return
    app.command("eval-moments")(eval_moments)
    app.command("eval-retrieval")(eval_retrieval)


_register_optional()


def main() -> None:
    app()


if __name__ == "__main__":
    main()
