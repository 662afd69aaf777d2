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
ProgressFileOpt = Annotated[Optional[Path], typer.Option("--progress-file", help="Also write progress as JSON to this file (for job runners).")]
SpeechOpt = Annotated[Optional[bool], typer.Option("--speech/--no-speech", help="Transcribe speech into timed text [default on].")]
OcrOpt = Annotated[Optional[bool], typer.Option("--ocr/--no-ocr", help="Read on-screen text [default on].")]
SpeechEngineOpt = Annotated[Optional[str], typer.Option("--speech-engine", help="whisper | pocketsphinx [default whisper].")]
SpeechModelOpt = Annotated[Optional[str], typer.Option("--speech-model", help="Whisper model name or path [default tiny.en, shipped].")]
MergingOpt = Annotated[Optional[str], typer.Option("--token-merging", help="Temporal token merging: off | recommended | a schedule [default off].")]
FollowOpt = Annotated[Optional[bool], typer.Option("--follow-symlinks/--no-follow-symlinks", help="Follow symbolic links that lead outside the folders given [default: no; they are listed as not followed].")]
RetryOpt = Annotated[Optional[bool], typer.Option("--retry-failed", help="Try again files that failed before, even if unchanged.")]
RestoreOpt = Annotated[bool, typer.Option("--restore", help="Bring back files under PATHS that were deleted from the index (a file named directly always comes back).")]
PathsArg = Annotated[list[Path], typer.Argument(help="Folders (recursive), video files, or manifest.jsonl files.", show_default=False)]


class UserError(Exception):
    """An error the user can fix; printed as one line, exit code 2."""


def _fail(message: str, code: int = 2) -> None:
    err.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
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


class _FileProgress:
    """Progress as a small JSON file, rewritten atomically, for whoever started us (the job API)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.state = {"total": 0, "done": 0, "frames": 0}
        self._last = 0.0

    def _write(self, force: bool = False) -> None:
        import os
        import time

        now = time.monotonic()
        if not force and now - self._last < 0.5:
            return
        self._last = now
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps({**self.state, "updated_at": time.time()}))
        os.replace(tmp, self.path)

    def start(self, total_videos: int) -> None:
        self.state["total"] = total_videos
        self._write(force=True)

    def advance(self, videos: int = 0, frames: int = 0) -> None:
        self.state["done"] += videos
        self.state["frames"] += frames
        self._write()

    def stop(self) -> None:
        self._write(force=True)


class _BothProgress:
    def __init__(self, *parts):
        self.parts = parts

    def start(self, total_videos: int) -> None:
        for p in self.parts:
            p.start(total_videos)

    def advance(self, videos: int = 0, frames: int = 0) -> None:
        for p in self.parts:
            p.advance(videos, frames)

    def stop(self) -> None:
        for p in self.parts:
            p.stop()


def _check_paths(paths: list[Path]) -> None:
    """Every path must exist and be a folder or a regular file, before anything is opened or created."""
    import os
    import stat

    for p in paths:
        if not os.path.lexists(p):
            _fail(f"{p}: no such file or folder")
        try:
            mode = os.stat(p).st_mode
        except OSError as exc:
            _fail(f"{p}: {exc.strerror or exc}")
        if not (stat.S_ISDIR(mode) or stat.S_ISREG(mode)):
            _fail(f"{p}: not a folder or a regular file (only folders, video files and manifest.jsonl files can be indexed)")


def _run_index(
    paths: list[Path], settings: Settings, json_out: bool, prune: bool, rebuild: bool, progress_file: Path | None = None,
    restore: bool = False,
) -> None:
    _check_paths(paths)  # before the (slow) model imports: a wrong path fails at once
    from vidsearch.indexer.pipeline import IndexRun, IndexRunError, open_store_for
    from vidsearch.store import Store

    def load():
        from vidsearch.encoders.backbone import load_backbone  # torch + open_clip: only when a file needs encoding

        return load_backbone(settings.model, settings.pretrained, settings.checkpoint, settings.precision, settings.device, settings.token_merging)

    try:
        existing = Store.open(settings.db) if not rebuild and (Path(settings.db) / "meta.lance").exists() else None
        if existing is not None and existing.fingerprint is not None:
            store, backbone = existing, load  # loaded only if a file needs encoding
        else:  # a new index: load the model first, so a model that fails leaves no half-made index
            backbone = load()
            store = open_store_for(settings, backbone, rebuild=rebuild)
        progress = _RichProgress(enabled=not json_out and err.is_terminal)
        if progress_file is not None:
            progress = _BothProgress(progress, _FileProgress(progress_file))
        summary = IndexRun(store, backbone, settings, progress=progress).run(paths, prune=prune, restore=restore)
    except (IndexRunError, *_known_errors()) as exc:
        _fail(str(exc))
    result = {"db": str(settings.db), "fingerprint": store.fingerprint.id, **summary.as_dict()}
    if json_out:
        _print_json(result)
        return
    speed = summary.video_seconds / summary.elapsed if summary.elapsed else 0.0
    excluded = f" · excluded {summary.excluded} (deleted; --restore brings them back)" if summary.excluded else ""
    out.print(
        f"[green]indexed {summary.indexed}[/] · skipped {summary.skipped} (unchanged) · linked {summary.linked} "
        f"(same content) · [red]failed {summary.failed}[/] · removed {summary.removed}{excluded} — "
        f"{summary.units} frames, {summary.video_seconds:.1f} s of video in {summary.elapsed:.1f} s "
        f"({speed:.1f} s of video/s)"
    )
    for f in summary.failures:
        out.print(f"  [red]✗[/] {escape(f['path'])}: {escape(f['error'])}", highlight=False)
    for w in summary.warnings:
        out.print(f"  [yellow]![/] {escape(w['path'])}: {escape(w['warning'])}", highlight=False)


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
    speech: SpeechOpt = None,
    ocr: OcrOpt = None,
    speech_engine: SpeechEngineOpt = None,
    speech_model: SpeechModelOpt = None,
    token_merging: MergingOpt = None,
    follow_symlinks: FollowOpt = None,
    retry_failed: RetryOpt = None,
    restore: RestoreOpt = False,
    config: ConfigOpt = None,
    json_out: JsonOpt = False,
    progress_file: ProgressFileOpt = None,
) -> None:
    """Index videos: new and changed files are encoded, unchanged ones skipped, bad ones listed.

    Safe to interrupt: run it again and it resumes where it stopped.
    """
    settings = _settings(config, **_flags(locals()))
    _run_index(paths, settings, json_out, prune=False, rebuild=False, progress_file=progress_file, restore=restore)


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
    speech: SpeechOpt = None,
    ocr: OcrOpt = None,
    speech_engine: SpeechEngineOpt = None,
    speech_model: SpeechModelOpt = None,
    token_merging: MergingOpt = None,
    follow_symlinks: FollowOpt = None,
    retry_failed: RetryOpt = None,
    restore: RestoreOpt = False,
    config: ConfigOpt = None,
    json_out: JsonOpt = False,
    progress_file: ProgressFileOpt = None,
) -> None:
    """Bring the index in line with PATHS: add new files, re-encode changed ones, drop removed ones."""
    flags = _flags(locals())
    flags.pop("rebuild")
    settings = _settings(config, **flags)
    _run_index(paths, settings, json_out, prune=True, rebuild=rebuild, progress_file=progress_file, restore=restore)


def _flags(given: dict) -> dict:
    return {k: v for k, v in given.items() if k not in ("paths", "config", "json_out", "progress_file", "restore")}


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
    for key in ("model", "fingerprint", "videos", "files", "failed", "deleted", "hours", "units", "segments", "spans"):
        table.add_row(key, escape(str(stats[key])))
    out.print(table)
    if stats["warnings"]:
        warned = Table(title="indexed with warnings", show_lines=False)
        warned.add_column("file", overflow="fold")
        warned.add_column("warning", overflow="fold")
        for w in stats["warnings"]:
            warned.add_row(escape(w["path"]), escape(w["warning"]))
        out.print(warned)
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
    """Remove videos (by id) or files (by path) from the index; they stay out of later runs.

    A deleted file is not indexed again when its folder is: name it (`vidsearch index FILE`) or pass
    `--restore` to bring it back. Deleting a path removes that file; its content stays searchable while
    another indexed file (a copy) still points at it.
    """
    import os

    store = _open_existing(db, config)
    files = store.files()
    known_paths = set(files["path"].to_pylist())
    indexed = store.indexed_ids()
    ids, paths, unknown = set(), set(), []
    for t in targets:
        candidates = [os.path.abspath(t), str(Path(t).resolve())]
        if t in indexed:
            ids.add(t)
        elif any(c in known_paths for c in candidates):
            paths.add(next(c for c in candidates if c in known_paths))
        else:
            unknown.append(t)
    with store.write_lock():
        removed = store.delete_videos(ids) + store.delete_paths(paths)
    result = {"removed": removed, "files": len(paths), "unknown": unknown}
    if json_out:
        _print_json(result)
    else:
        out.print(f"removed {removed} video(s), {len(paths)} file(s)" + (f"; not in the index: {', '.join(unknown)}" if unknown else ""))
    if unknown and not (ids or paths):
        raise typer.Exit(1)


# -- search / serve -----------------------------------------------------------------------------
@app.command()
def search(
    query: Annotated[str, typer.Argument(help="What to find, in words.", show_default=False)],
    db: DbOpt = None,
    api: Annotated[Optional[str], typer.Option("--api", help="Ask a running server (URL) instead of opening --db [VIDSEARCH_API_URL].")] = None,
    api_key: Annotated[Optional[str], typer.Option("--api-key", envvar="VIDSEARCH_API_KEY", help="Key for a server that needs one.")] = None,
    top_k: Annotated[int, typer.Option("--top-k", "-k", min=1, max=200, help="Results to show.")] = 10,
    group_by: Annotated[str, typer.Option("--group-by", help="video | moment")] = "video",
    channel: Annotated[Optional[list[str]], typer.Option("--channel", help="Channel to use, optionally weighted: visual, speech=2 ...")] = None,
    checkpoint: CheckpointOpt = None,
    config: ConfigOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Search the index: videos with the moments where the query happens."""
    from pydantic import ValidationError

    from .api_models import SearchRequest

    settings = _settings(config, db=db, api_url=api, checkpoint=checkpoint)
    channels = None
    if channel:
        try:
            channels = {c.split("=")[0]: float(c.split("=")[1]) if "=" in c else 1.0 for c in channel}
        except ValueError:
            _fail("--channel takes NAME or NAME=WEIGHT, e.g. --channel visual --channel speech=2")
    try:
        req = SearchRequest(query=query, top_k=top_k, group_by=group_by, channels=channels)
    except ValidationError as exc:
        _fail("; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()))
    if settings.api_url:
        from .client import ApiError, VidsearchClient

        try:
            with VidsearchClient(settings.api_url, api_key) as client:
                resp = client.search(req.query, **req.model_dump(exclude={"query"}, exclude_none=True))
        except ApiError as exc:
            _fail(str(exc))
    else:
        from vidsearch.search.engine import SearchError, open_engine

        try:
            resp = open_engine(settings).search(req)
        except (SearchError, *_known_errors()) as exc:
            _fail(str(exc))
    if json_out:
        _print_json(resp.model_dump(mode="json"))
        return
    if not resp.results:
        out.print("no results")
        return
    table = Table(title=f"{query!r} — {len(resp.results)} results in {resp.took_ms:.0f} ms", title_justify="left")
    for col in ("#", "video", "score", "channels", "moments (start–end s)"):
        table.add_column(col, overflow="fold")
    for i, r in enumerate(resp.results, 1):
        chans = " ".join(f"{c}:{v:.3f}" for c, v in r.channel_scores.items())
        moments = ", ".join(f"{m.start:.1f}–{m.end:.1f}" for m in r.moments)
        table.add_row(str(i), escape(f"{r.video.title}\n{r.video.uri}"), f"{r.score:.4f}", escape(chans), moments)
    out.print(table)


@app.command()
def serve(
    db: DbOpt = None,
    host: Annotated[Optional[str], typer.Option("--host", help="Bind address [default 127.0.0.1].")] = None,
    port: Annotated[Optional[int], typer.Option("--port", help="Port [default 8080].")] = None,
    api_key: Annotated[Optional[list[str]], typer.Option("--api-key", help="Accepted API key (repeat for several) [VIDSEARCH_API_KEYS].")] = None,
    read_auth: Annotated[Optional[bool], typer.Option("--read-auth/--open-reads", help="Require a key for reads too.")] = None,
    model: ModelOpt = None,
    pretrained: PretrainedOpt = None,
    checkpoint: CheckpointOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Start the HTTP search API (OpenAPI docs at /docs)."""
    import uvicorn

    from vidsearch.search.service import create_app

    settings = _settings(config, db=db, host=host, port=port, api_keys=api_key, read_auth=read_auth,
                         model=model, pretrained=pretrained, checkpoint=checkpoint)  # fmt: skip
    application = create_app(settings)
    err.print(f"vidsearch API on http://{settings.host}:{settings.port} (index {settings.db}; docs at /docs)")
    uvicorn.run(application, host=settings.host, port=settings.port, log_level="warning")


# -- train / eval -------------------------------------------------------------------------------
DataOpt = Annotated[Path, typer.Option("--data", help="JSONL ({video, captions:[{text,start,end}]}) or an MSR-VTT split CSV.", show_default=False)]
MsrvttVideosOpt = Annotated[Optional[Path], typer.Option("--videos", help="MSR-VTT: folder of <video_id>.mp4 files.")]
MsrvttAnnOpt = Annotated[Optional[Path], typer.Option("--annotations", help="MSR-VTT: MSRVTT_data.json (for id-only split CSVs).")]


def _dataset_jsonl(data: Path, videos: Path | None, annotations: Path | None) -> Path:
    """Our JSONL as is; an MSR-VTT split CSV converted to JSONL beside it."""
    from .datasets import DatasetError, read_msrvtt, write_jsonl

    if data.suffix.lower() != ".csv":
        return data
    if videos is None:
        _fail("an MSR-VTT split CSV needs --videos DIR (the folder of <video_id>.mp4 files)")
    try:
        items = read_msrvtt(data, videos, annotations)
    except (DatasetError, OSError, KeyError) as exc:
        _fail(f"{data}: {exc}")
    out_path = data.with_suffix(".vidsearch.jsonl")
    write_jsonl(items, out_path)
    return out_path


@app.command()
def train(
    data: DataOpt,
    out_path: Annotated[Path, typer.Option("--out", help="Checkpoint to write (and resume from).")] = Path("vidsearch-model.pt"),
    model: Annotated[str, typer.Option("--model", help="open_clip model to train: tiny (MiniLM text tower), tiny-scratch, ViT-B-32 ...")] = "tiny",
    pretrained: PretrainedOpt = "none",
    checkpoint: Annotated[Optional[Path], typer.Option("--checkpoint", help="Start from these weights.")] = None,
    epochs: Annotated[int, typer.Option("--epochs", min=1)] = 12,
    batch_size: Annotated[int, typer.Option("--batch-size", min=2, help="Videos per step.")] = 64,
    frames_per_video: Annotated[int, typer.Option("--frames-per-video", min=1)] = 16,
    lr: Annotated[float, typer.Option("--lr", help="Peak learning rate (cosine schedule after warmup); learned scalars get 50x.")] = 5e-4,
    sample_fps: Annotated[float, typer.Option("--sample-fps", help="Frames per second, as the index will sample them.")] = 1.0,
    freeze_backbone: Annotated[bool, typer.Option("--freeze-backbone/--fine-tune", help="Train only the heads (and text projection).")] = False,
    freeze_text: Annotated[bool, typer.Option("--freeze-text/--train-text", help="Keep a pretrained language-model text tower frozen.")] = True,
    audio: Annotated[bool, typer.Option("--audio/--no-audio", help="Train the audio tower and TEFAL fusion.")] = True,
    resume: Annotated[bool, typer.Option("--resume", help="Continue an interrupted run of the same --out.")] = False,
    eval_data: Annotated[Optional[list[Path]], typer.Option("--eval-data", exists=True, dir_okay=False, help="Held-out captioned videos (JSONL) to score retrieval on while training; repeat for several.")] = None,
    eval_every: Annotated[int, typer.Option("--eval-every", min=0, help="Score --eval-data every N epochs (0: after the last epoch only).")] = 0,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    workers: Annotated[int, typer.Option("--decode-workers", min=1)] = 2,
    videos: MsrvttVideosOpt = None,
    annotations: MsrvttAnnOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Train the frame/text towers, X-Pool and audio fusion with symmetric InfoNCE on captioned videos."""
    import time

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    from vidsearch.encoders.training import TrainConfig, Trainer
    from vidsearch.indexer.training_data import load_training_set

    from .datasets import DatasetError

    data = _dataset_jsonl(data, videos, annotations)
    cfg = TrainConfig(model=model, pretrained=pretrained, checkpoint=str(checkpoint) if checkpoint else None, epochs=epochs,
                      batch_size=batch_size, frames_per_video=frames_per_video, lr=lr, freeze_backbone=freeze_backbone,
                      freeze_text=freeze_text, audio=audio, seed=seed, extra={"sample_fps": sample_fps})  # fmt: skip
    show = not json_out and err.is_terminal
    t0 = time.monotonic()
    try:
        from vidsearch.encoders.backbone import load_backbone

        size = load_backbone(model, pretrained, checkpoint, precision="fp32").image_size
        with Progress(TextColumn("[bold]decoding"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(), console=err, disable=not show) as bar:
            n = sum(len(line.strip()) > 0 for line in open(data, encoding="utf-8"))
            task = bar.add_task("decode", total=n)
            ts = load_training_set(data, sample_fps, size, workers=workers, progress=lambda: bar.advance(task))
        validate = None
        if eval_data:
            held_out = {}
            for path in eval_data:
                with Progress(TextColumn(f"[bold]decoding {path.name}"), BarColumn(), MofNCompleteColumn(), console=err, disable=not show) as bar:
                    task = bar.add_task("decode", total=sum(len(line.strip()) > 0 for line in open(path, encoding="utf-8")))
                    decoded = load_training_set(path, sample_fps, size, workers=workers, progress=lambda: bar.advance(task))
                held_out[path.stem] = (decoded, _sound_dependent_flags(decoded, path))

            def validate(epoch: int) -> dict | None:
                if epoch != cfg.epochs and not (eval_every and epoch % eval_every == 0):
                    return None
                return {name: trainer.validate(decoded, sound) for name, (decoded, sound) in held_out.items()}

        rows: list[dict] = []
        trainer = Trainer(ts, cfg, out_path, log=rows.append)
        resumed = trainer.resume() if resume else False
        with Progress(TextColumn("[bold]training"), BarColumn(), MofNCompleteColumn(), TextColumn("loss {task.fields[loss]:.3f}"),
                      TimeElapsedColumn(), TimeRemainingColumn(), console=err, disable=not show) as bar:  # fmt: skip
            task = bar.add_task("train", total=trainer.total_steps, completed=trainer.step, loss=float("nan"))
            summary = trainer.train(progress=lambda step, total, loss: bar.update(task, completed=step, loss=loss), validate=validate)
    except (DatasetError, RuntimeError, *_known_errors()) as exc:
        _fail(str(exc))
    result = {"checkpoint": str(out_path), "resumed": resumed, "videos": len(ts.videos), "captions": len(ts.cap_text),
              "frames": int(len(ts.frames)), "seconds": round(time.monotonic() - t0, 1), **summary}  # fmt: skip
    if json_out:
        _print_json(result)
        return
    for row in summary["history"]:
        out.print(f"epoch {row['epoch']}: loss {row['total']:.3f} (fused {row['fused']:.3f}, xpool {row['xpool']:.3f}, event {row['event']:.3f}) at {row['seconds']:.0f} s")
        for name, methods in row.get("eval", {}).items():
            for method, m in methods.items():
                sound = f", sound-dependent R@1 {m['sound_R@1']:.2f}" if "sound_R@1" in m else ""
                out.print(f"  {name} {method:>6}: R@1 {m['R@1']:.2f}  R@5 {m['R@5']:.2f}  R@10 {m['R@10']:.2f}  MdR {m['MdR']:.1f}{sound}")
    out.print(f"wrote {out_path} ({out_path.stat().st_size / 1e6:.1f} MB) in {result['seconds']:.0f} s")


def _sound_dependent_flags(data, jsonl: Path):
    """Per caption of a decoded dataset: whether a synthetic corpus marks its event sound-dependent."""
    import numpy as np

    from vidsearch.search.evaluation import event_key, sound_dependent_map

    marks = sound_dependent_map(jsonl.parent / "events.jsonl", jsonl.parent)
    if not marks:
        return None
    return np.array([marks.get(event_key(data.videos[v], s), False) for v, s in zip(data.cap_video, data.cap_start)])


@app.command("eval")
def evaluate(
    data: DataOpt,
    db: DbOpt = None,
    out_path: Annotated[Optional[Path], typer.Option("--out", help="Also write the metrics as JSON here.")] = None,
    events: Annotated[Optional[Path], typer.Option("--events", help="events.jsonl of a synthetic corpus (sound-dependent queries); found beside --data by default.")] = None,
    engine_ranking: Annotated[bool, typer.Option("--engine/--no-engine", help="Also score the full search ranking (slower).")] = True,
    checkpoint: CheckpointOpt = None,
    videos: MsrvttVideosOpt = None,
    annotations: MsrvttAnnOpt = None,
    config: ConfigOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Retrieval (R@1/5/10, MdR, MnR) and moment (R1@0.5/0.7, mAP) metrics of an index, per method."""
    from vidsearch.search.engine import open_engine
    from vidsearch.search.evaluation import evaluate as run_eval

    from .datasets import DatasetError

    data = _dataset_jsonl(data, videos, annotations)
    settings = _settings(config, db=db, checkpoint=checkpoint)
    try:
        report = run_eval(open_engine(settings), data, events, with_engine=engine_ranking)
    except (DatasetError, *_known_errors()) as exc:
        _fail(str(exc))
    if out_path is not None:
        out_path.write_text(json.dumps(report, indent=2))
    if json_out:
        _print_json(report)
        return
    table = Table(title=f"{report['queries']} queries over {report['videos']} videos", title_justify="left")
    cols = ["R@1", "R@5", "R@10", "MdR", "MnR"] + (["sound_R@1"] if report["sound_dependent_queries"] else [])
    table.add_column("method")
    for c in cols:
        table.add_column(c, justify="right")
    for name, row in report["methods"].items():
        table.add_row(name, *[f"{row[c]:.2f}" if c in row else "-" for c in cols])
    out.print(table)
    if "moments" in report:
        out.print("moments: " + ", ".join(f"{k} {v:.2f}" for k, v in report["moments"].items()))
    if "moments_frames_only" in report:
        out.print("moments from frames alone: " + ", ".join(f"{k} {v:.2f}" for k, v in report["moments_frames_only"].items()))


@app.command()
def ui(
    db: DbOpt = None,
    api: Annotated[Optional[str], typer.Option("--api", help="Search API URL [VIDSEARCH_API_URL]; else open --db locally.")] = None,
    api_key: Annotated[Optional[str], typer.Option("--api-key", envvar="VIDSEARCH_API_KEY", help="API key (needed to start index jobs).")] = None,
    host: Annotated[str, typer.Option("--host", help="Address the UI binds.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="Port the UI binds.")] = 8501,
    config: ConfigOpt = None,
) -> None:
    """Start the search UI (Streamlit) against the search API or a local index."""
    from vidsearch.ui.launch import run_ui

    settings = _settings(config, db=db, api_url=api)
    raise typer.Exit(run_ui(settings.api_url, settings.db, host, port, api_key, config=config))


def _register_commands() -> None:
    """Commands whose code lives in their own modules (imported lazily inside each command)."""
    from .evaluation_cli import eval_moments, eval_retrieval
    from .synth import synth_command

    app.command("eval-moments")(eval_moments)
    app.command("eval-retrieval")(eval_retrieval)
    app.command("synth")(synth_command)


_register_commands()


def main() -> None:
    app()


if __name__ == "__main__":
    main()
