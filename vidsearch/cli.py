"""The `vidsearch` command: one entry point for operators (index, status), users and scripts.

Every command that reports something takes `--json` and then prints exactly one JSON object on
stdout (progress bars go to stderr). Errors an operator can fix print one clear line and exit 2.

The commands sit above every part (the lab's are registered from `vidsearch.lab.commands`). Each
imports the store, the model stack or the server when it runs, not at the top: `vidsearch --help`
answers in 0.8 s, where importing lancedb takes 2.5 s and torch with the search stack about 5 s
(measured here).
"""

from __future__ import annotations

import atexit
import gc
import json
import os
import time
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape
from rich.table import Table

from . import __version__
from .api_models import SearchRequest, validation_message
from .client import ApiError, VidsearchClient
from .clitools import (
    AudioModelOpt,
    BackendOpt,
    BatchOpt,
    CheckpointOpt,
    ConfigOpt,
    DbOpt,
    DeviceOpt,
    EngineOpt,
    FollowOpt,
    FpsOpt,
    JsonOpt,
    MergingOpt,
    ModelOpt,
    OcrOpt,
    PathsArg,
    PrecisionOpt,
    PretrainedOpt,
    ProgressFileOpt,
    RayAddressOpt,
    RestoreOpt,
    RetryOpt,
    ShotOpt,
    SpeechEngineOpt,
    SpeechModelOpt,
    SpeechOpt,
    StrideOpt,
    TritonUrlOpt,
    WinOpt,
    WorkersOpt,
    err,
    out,
    user_errors,
)
from .clitools import fail as _fail
from .clitools import print_json as _print_json
from .clitools import settings_from as _settings
from .config import Settings
from .timeline_export import ExportItem, ExportRequest, export_timeline, format_for
from .lab import commands as lab_commands
from .triton_cli import export_triton_command
from .ui import run_ui

def _process_age() -> float:
    """Seconds since this process started (Linux: /proc), 0 where that cannot be read: a one-shot
    command's "in all" then counts the interpreter's start and the imports before this module too."""
    try:
        with open("/proc/self/stat") as stat, open("/proc/uptime") as uptime:
            started = float(stat.read().rsplit(")", 1)[1].split()[19]) / os.sysconf("SC_CLK_TCK")
            return max(0.0, float(uptime.read().split()[0]) - started)
    except (OSError, ValueError, IndexError):
        return 0.0


_STARTED = time.monotonic() - _process_age()  # a one-shot command's time includes its start-up (heavy imports come later)
# At exit, Python's last collections walk every object the model stack made (~1.2 s of a 6 s search here,
# after the answer was printed); frozen, they are left to the process's end. Finalizers and atexit
# handlers registered earlier still run.
atexit.register(gc.freeze)

app = typer.Typer(
    name="vidsearch",
    help="Text-to-video search that finds the moment. Index a library, then search it.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # plain help: defaults in [brackets] stay visible, flags get no <bool>
)


def _version(value: bool) -> None:
    if value:
        out.print(f"vidsearch {__version__}", highlight=False)
        raise typer.Exit()


@app.callback()
def _options(
    version: Annotated[Optional[bool], typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")] = None,
) -> None:
    """Text-to-video search that finds the moment. Index a library, then search it."""


def _known_errors() -> tuple[type[BaseException], ...]:
    from vidsearch.encoders import ModelLoadError

    return (*user_errors(), ModelLoadError)


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


def _file_progress(path: Path):
    """Progress as a small JSON file (the fields of `JobProgress`, plus `updated_at`), rewritten
    atomically, for a job runner that starts `vidsearch index` itself."""
    import os
    import time

    from vidsearch.indexer import JobTracker

    def write(progress) -> None:
        tmp = Path(path).with_suffix(".tmp")
        tmp.write_text(json.dumps({**progress.model_dump(), "updated_at": time.time()}))
        os.replace(tmp, path)

    return JobTracker(write)


def _index_model(settings: Settings) -> dict:
    """The one rule (encoders.model_spec): an existing index keeps its model, a new one takes the settings'."""
    from vidsearch.encoders import model_spec
    from vidsearch.store import Store, StoreError

    try:
        stored = Store.open(settings.db).stored_fingerprint()
    except StoreError:  # no index yet (or not one this version reads): the settings decide
        stored = None
    return model_spec(settings, stored)


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

    from vidsearch import objectstore

    for p in paths:
        if objectstore.is_uri(p):
            continue  # listed by the run; a prefix with no videos is reported there
        if not os.path.lexists(p):
            _fail(f"{p}: no such file or folder")
        try:
            mode = os.stat(p).st_mode
        except OSError as exc:
            if os.path.islink(p):  # as a folder walk says it: where the link points
                from vidsearch.indexer.discover import link_problem

                _fail(f"{p}: {link_problem(Path(p))}")
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

    loaded = []  # whether the model was loaded, for the time line

    def load():
        from vidsearch.encoders.backbone import backend_options, load_backbone  # torch + open_clip: only when a file needs encoding

        loaded.append(True)
        return load_backbone(**_index_model(settings), precision=settings.precision, device=settings.device, **backend_options(settings))

    try:
        existing = Store.open(settings.db) if not rebuild and (Path(settings.db) / "meta.lance").exists() else None
        if existing is not None and existing.fingerprint is not None:
            store, backbone = existing, load  # loaded only if a file needs encoding (an unchanged run never does)
        else:  # a new index: load the model first, so a model that fails leaves no half-made index
            backbone = load()
            store = open_store_for(settings, backbone, rebuild=rebuild)
        progress = _RichProgress(enabled=not json_out and err.is_terminal)
        if progress_file is not None:
            progress = _BothProgress(progress, _file_progress(progress_file))
        if settings.engine == "ray":
            from vidsearch.indexer.ray_engine import RayIndexRun

            run = RayIndexRun(store, backbone, settings, progress=progress, load_backbone=load)
        else:
            run = IndexRun(store, backbone, settings, progress=progress)
        summary = run.run(paths, prune=prune, restore=restore)
    except (IndexRunError, *_known_errors()) as exc:
        _fail(str(exc))
    result = {"db": str(settings.db), "fingerprint": store.fingerprint.id, **summary.as_dict()}
    if json_out:
        _print_json(result)
        return
    speed = summary.video_seconds / summary.elapsed if summary.elapsed else 0.0
    excluded = f" · excluded {summary.excluded} (deleted; --restore brings them back)" if summary.excluded else ""
    unchanged = f"unchanged; {summary.skipped_failed} failed before: --retry-failed tries again" if summary.skipped_failed else "unchanged"
    out.print(
        f"[green]indexed {summary.indexed}[/] · skipped {summary.skipped} ({unchanged}) · linked {summary.linked} "
        f"(same content) · [red]failed {summary.failed}[/] · removed {summary.removed}{excluded} — "
        f"{summary.units} frames, {summary.video_seconds:.1f} s of video in {summary.elapsed:.1f} s "
        f"({speed:.1f} s of video/s; {time.monotonic() - _STARTED:.1f} s in all, with start-up: imports"
        f"{', loading the model' if loaded else ''})"
    )
    for f in summary.failures:
        out.print(f"  [red]✗[/] {escape(f['path'])}: {escape(f['error'])}", highlight=False)
    for w in summary.warnings:
        out.print(f"  [yellow]![/] {escape(w['path'])}: {escape(w['warning'])}", highlight=False)
    if summary.gone:
        out.print(f"  [yellow]![/] {summary.gone} indexed file(s) under these paths no longer exist and are still searchable: "
                  "`vidsearch reindex` with the same paths drops them", highlight=False)  # fmt: skip


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
    audio_model: AudioModelOpt = None,
    token_merging: MergingOpt = None,
    follow_symlinks: FollowOpt = None,
    retry_failed: RetryOpt = None,
    engine: EngineOpt = None,
    ray_address: RayAddressOpt = None,
    restore: RestoreOpt = False,
    encoder_backend: BackendOpt = None,
    triton_url: TritonUrlOpt = None,
    device: DeviceOpt = None,
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
    audio_model: AudioModelOpt = None,
    token_merging: MergingOpt = None,
    follow_symlinks: FollowOpt = None,
    retry_failed: RetryOpt = None,
    engine: EngineOpt = None,
    ray_address: RayAddressOpt = None,
    restore: RestoreOpt = False,
    encoder_backend: BackendOpt = None,
    triton_url: TritonUrlOpt = None,
    device: DeviceOpt = None,
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


@app.command("list")
def list_videos(db: DbOpt = None, config: ConfigOpt = None, json_out: JsonOpt = False) -> None:
    """Indexed videos in title order: id (what `delete` takes), title, duration and file."""
    rows = sorted(_open_existing(db, config).video_rows(), key=lambda r: (r["title"].lower(), r["video_id"]))
    videos = [{"id": r["video_id"], "title": r["title"], "duration": round(r["duration"], 3), "path": r["path"]} for r in rows]
    if json_out:
        _print_json({"videos": videos, "total": len(videos)})
        return
    table = Table(title=f"{len(videos)} indexed video(s)", title_justify="left")
    table.add_column("id", no_wrap=True, min_width=max((len(v["id"]) for v in videos), default=2))  # whole, to copy
    for col in ("title", "duration (s)", "file"):
        table.add_column(col, overflow="fold")
    for v in videos:
        table.add_row(v["id"], escape(v["title"]), f"{v['duration']:.1f}", escape(v["path"]))
    out.print(table)


@app.command()
def delete(
    targets: Annotated[list[str], typer.Argument(help="Video ids, file paths or folders (every indexed file under it) to remove from the index.", show_default=False)],
    db: DbOpt = None,
    config: ConfigOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Remove videos (by id) or files (by path) from the index; they stay out of later runs.

    A deleted file is not indexed again when its folder is: name it (`vidsearch index FILE`) or pass
    `--restore` to bring it back. Deleting a path removes that file (a folder: every file under it); its
    content stays searchable while another indexed file (a copy) still points at it.
    """
    import os

    from . import objectstore
    from .store import local_path, path_key

    store = _open_existing(db, config)
    files = store.files()
    known_paths = set(files["path"].to_pylist())
    live = [p for p, st in zip(files["path"].to_pylist(), files["status"].to_pylist()) if st != "deleted" and not objectstore.is_uri(p)]
    indexed = store.indexed_ids()
    ids, paths, unknown = set(), set(), []
    for t in targets:
        # t itself: an s3:// URI; path_key: a name that is not valid UTF-8, stored as a file:// URI
        candidates = [t, os.path.abspath(t), str(Path(t).resolve()), path_key(os.path.abspath(t))]
        # a folder (on disk or gone): the files under it, compared as paths (a name that is not UTF-8 is a URI key)
        under = tuple(dict.fromkeys(c.rstrip(os.sep) + os.sep for c in candidates[1:3]))
        if t in indexed:
            ids.add(t)
        elif any(c in known_paths for c in candidates):
            paths.add(next(c for c in candidates if c in known_paths))
        elif inside := [p for p in live if local_path(p).startswith(under)]:
            paths.update(inside)
        else:
            unknown.append(t)
    try:
        with store.write_lock():
            removed = store.delete_videos(ids) + store.delete_paths(paths)
    except (*_known_errors(), OSError) as exc:  # another process writing (WriterBusy), a read-only index
        _fail(f"cannot delete: {exc}")
    result = {"removed": removed, "files": len(paths), "unknown": unknown}
    if json_out:
        _print_json(result)
    else:
        out.print(escape(f"removed {removed} video(s), {len(paths)} file(s)" + (f"; not in the index: {', '.join(unknown)}" if unknown else "")),
                  highlight=False)  # fmt: skip
    if unknown and not (ids or paths):
        raise typer.Exit(1)


# -- search / serve -----------------------------------------------------------------------------
def _like_arg(text: str) -> dict:
    """`VIDEO_ID@START-END` (seconds), `VIDEO_ID@START-` or `VIDEO_ID` (the whole video) -> a LikeQuery's fields."""
    vid, at, span = text.partition("@")
    if not at:
        return {"video_id": vid}
    start, dash, end = span.partition("-")
    try:
        if not dash:
            raise ValueError(span)
        return {"video_id": vid, "start": float(start or 0), **({"end": float(end)} if end else {})}
    except ValueError:
        _fail(f"--like {text!r}: use VIDEO_ID@START-END in seconds (e.g. 3f2a9c@12.5-18.0), or VIDEO_ID for the whole video")


@app.command()
def search(
    query: Annotated[Optional[str], typer.Argument(help="What to find, in words (optional with --image or --like).", show_default=False)] = None,
    image: Annotated[Optional[Path], typer.Option("--image", help="Find moments that look like this picture (composes with the words).")] = None,
    like: Annotated[Optional[str], typer.Option("--like", help="More like this moment: VIDEO_ID@START-END (seconds), from its stored vectors.")] = None,
    weight: Annotated[Optional[list[str]], typer.Option("--weight", help="How much an input counts when several are given: text=2, image=1, like=1.")] = None,
    db: DbOpt = None,
    api: Annotated[Optional[str], typer.Option("--api", help="Ask a running server (URL) instead of opening --db [VIDSEARCH_API_URL].")] = None,
    api_key: Annotated[Optional[str], typer.Option("--api-key", envvar="VIDSEARCH_API_KEY", help="Key for a server that needs one.")] = None,
    top_k: Annotated[int, typer.Option("--top-k", "-k", min=1, max=200, help="Results to show.")] = 10,
    group_by: Annotated[str, typer.Option("--group-by", help="video | moment")] = "video",
    channel: Annotated[Optional[list[str]], typer.Option("--channel", help="Channel to use, optionally weighted: visual, speech=2 ...")] = None,
    min_relevance: Annotated[Optional[float], typer.Option("--min-relevance", min=0.0, max=1.0, help="Drop results less likely than this to be what you asked for [default: the model's calibration; 0 keeps all].")] = None,
    export: Annotated[Optional[Path], typer.Option("--export", help="Also write the results' moments as an edit decision list: results.otio (OpenTimelineIO) or results.edl (CMX 3600).")] = None,
    padding: Annotated[float, typer.Option("--padding", min=0.0, max=60.0, help="Seconds added before and after each exported moment.")] = 0.0,
    fps: Annotated[float, typer.Option("--fps", min=1.0, max=240.0, help="Frame rate of the exported timeline.")] = 25.0,
    checkpoint: CheckpointOpt = None,
    encoder_backend: BackendOpt = None,
    triton_url: TritonUrlOpt = None,
    device: DeviceOpt = None,
    config: ConfigOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Search the index by words, an example picture (--image) or a moment (--like), or a mix:
    videos with the moments where it happens."""
    from pydantic import ValidationError

    settings = _settings(config, db=db, api_url=api, checkpoint=checkpoint, encoder_backend=encoder_backend, triton_url=triton_url, device=device)
    channels = weights = None
    if channel:
        try:
            channels = {c.split("=")[0]: float(c.split("=")[1]) if "=" in c else 1.0 for c in channel if c.count("=") <= 1}
        except ValueError:
            channels = None
        if channels is None or sum(c.count("=") > 1 for c in channel):
            _fail("--channel takes NAME or NAME=WEIGHT, e.g. --channel visual --channel speech=2")
        if len(channels) != len(channel):
            _fail("--channel: a channel named twice; name each once")
    if weight:
        try:
            weights = {w.split("=")[0]: float(w.split("=")[1]) for w in weight if w.count("=") == 1}
        except (ValueError, IndexError):
            weights = None
        if weights is None or sum(w.count("=") != 1 for w in weight):
            _fail("--weight takes INPUT=WEIGHT, e.g. --weight text=2 --weight image=1")
        if len(weights) != len(weight):
            _fail("--weight: an input weighted twice; weigh each once")
        given = {"text": query is not None, "image": image is not None, "like": like is not None}
        unused = sorted(k for k in weights if given.get(k) is False)
        if unused:  # an input not given: its weight would be ignored without a word
            _fail(f"--weight {unused[0]}=...: no {unused[0]} input given (" + ", ".join(f"{k}: {'--' + k if k != 'text' else 'the query words'}" for k in unused) + ")")
    if image is not None and image.is_dir():
        _fail(f"--image {image}: is a folder, not a picture")
    if image is not None and not image.is_file():
        _fail(f"--image {image}: no such file")
    if image is not None and image.stat().st_size > settings.max_image_mb * 1e6:  # before the request body's own limit says it in its words
        _fail(f"--image {image}: the picture is {image.stat().st_size / 1e6:.1f} MB, over the limit of {settings.max_image_mb:g} MB (max_image_mb)")
    try:
        req = SearchRequest(query=query, image="" if image else None, like=_like_arg(like) if like else None, query_weights=weights,
                            top_k=top_k, group_by=group_by, channels=channels, min_relevance=min_relevance)  # fmt: skip
        if export is not None:  # the timeline's options checked before the search, not after it
            ExportRequest(items=[ExportItem(video_id="-", start=0.0, end=1.0)], format=format_for(export), padding=padding, fps=fps)
    except ValidationError as exc:
        _fail(validation_message(exc))
    except ValueError as exc:
        _fail(str(exc))
    if settings.api_url:
        try:
            client = VidsearchClient(settings.api_url, api_key)
        except ValueError as exc:
            _fail(f"--api: {exc}")
    else:  # the same API, in this process: the server's answers and errors, word for word
        from vidsearch.server import local_client  # the model stack (~5 s): not for every command

        client = local_client(settings)
    try:
        with client:
            resp = client.search(req.query, image=image, **req.model_dump(exclude={"query", "image"}, exclude_none=True))
            if resp.index_version == "empty":  # no engine: /readyz says why (empty index, model...)
                client.ready()
    except ApiError as exc:
        _fail(_local_reason(exc.detail, settings.db) if client.in_process else str(exc))
    if export is not None and resp.results:
        try:
            write_export(resp, export, padding=padding, fps=fps)
        except (ValueError, OSError) as exc:  # ExportError (what the writer refuses), a path that cannot be written
            _fail(f"--export {export}: {exc}")
        err.print(escape(f"wrote {len(resp.results)} moments to {export}"), highlight=False)
    if min_relevance is not None and resp.min_relevance is None and any(r.relevance is None for r in resp.results):
        err.print("note: --min-relevance applies to queries with words; a picture or a moment alone has no calibrated relevance, "
                  "so every result is kept (ranked by score)", highlight=False)  # fmt: skip
    if json_out:
        _print_json(resp.model_dump(mode="json"))
        return
    if not resp.results:
        out.print(escape(resp.message or "no results"), highlight=False)
        if export is not None:  # a script must not read the previous run's moments as this one's
            _fail(f"--export {export}: no results, nothing written (a file already there is left as it was)", code=1)
        return
    asked = escape(" + ".join(repr(query) if name == "text" else name for name in resp.inputs))
    where = "by the server" if settings.api_url else (
        f"searching; {time.monotonic() - _STARTED:.1f} s in all, with start-up: imports, opening the index, loading the model"
    )  # fmt: skip
    table = Table(title=f"{asked} — {len(resp.results)} result{'' if len(resp.results) == 1 else 's'} in {resp.took_ms:.0f} ms ({where})", title_justify="left")
    for col in ("#", "video", "relevance", "channels", "moments (start–end s)"):
        table.add_column(col, overflow="fold")
    for i, r in enumerate(resp.results, 1):
        chans = " ".join(f"{c}:{v:.3f}" for c, v in r.channel_scores.items())
        moments = ", ".join(f"{m.start:.1f}–{m.end:.1f}" for m in r.moments)
        rel = f"{r.relevance:.0%} {r.relevance_label}" if r.relevance is not None else f"score {r.score:.4f}"
        table.add_row(str(i), escape(f"{r.video.title}\n{r.video.uri}"), rel, escape(chans), moments)
    out.print(table)


def _local_reason(detail: str, db) -> str:
    """The in-process API's answer as a one-shot command says it: a server's "searches cannot be
    answered yet ... (GET /readyz says when they can)" means, here, that this index cannot be searched."""
    head, _, rest = detail.partition("searches cannot be answered yet: ")
    if head or not rest:
        return detail
    return f"cannot search {db}: " + rest.removesuffix(" (GET /readyz says when they can)")


def write_export(resp, path: Path, *, padding: float, fps: float) -> None:
    """Each result's first moment (its whole video when it has none), in result order, as an EDL file."""
    items, videos = [], {}
    for r in resp.results:
        m = r.moments[0] if r.moments else None
        items.append(ExportItem(video_id=r.video.id, start=m.start if m else 0.0, end=m.end if m else r.video.duration))
        videos[r.video.id] = {"title": r.video.title, "uri": r.video.uri, "duration": r.video.duration}
    req = ExportRequest(items=items, format=format_for(path), padding=padding, fps=fps, title=f"vidsearch: {resp.query}"[:200])
    path.write_text(export_timeline(req, videos))


@app.command()
def serve(
    db: DbOpt = None,
    host: Annotated[Optional[str], typer.Option("--host", help="Bind address [default 127.0.0.1].")] = None,
    port: Annotated[Optional[int], typer.Option("--port", help="Port [default 8080].")] = None,
    api_key: Annotated[Optional[list[str]], typer.Option("--api-key", help="Accepted API key (repeat for several) [VIDSEARCH_API_KEYS].")] = None,
    read_auth: Annotated[Optional[bool], typer.Option("--read-auth/--open-reads", help="Require a key for reads too.")] = None,
    library_root: Annotated[Optional[list[Path]], typer.Option("--library-root", help="Folder jobs may index and media is served from (repeat for several) [VIDSEARCH_LIBRARY_ROOTS]; none: no jobs over HTTP.")] = None,
    model: ModelOpt = None,
    pretrained: PretrainedOpt = None,
    checkpoint: CheckpointOpt = None,
    encoder_backend: BackendOpt = None,
    triton_url: TritonUrlOpt = None,
    device: DeviceOpt = None,
    search_processes: Annotated[Optional[int], typer.Option("--search-processes", help="Worker processes computing new searches (0: threads) [VIDSEARCH_SEARCH_PROCESSES].")] = None,
    config: ConfigOpt = None,
) -> None:
    """Start the HTTP search API (OpenAPI docs at /docs)."""
    settings = _settings(config, db=db, host=host, port=port, api_keys=api_key, read_auth=read_auth, library_roots=library_root,
                         model=model, pretrained=pretrained, checkpoint=checkpoint,
                         encoder_backend=encoder_backend, triton_url=triton_url, device=device,
                         search_processes=search_processes)  # fmt: skip
    if settings.read_auth and not settings.api_keys:  # it would start, and refuse every read but /healthz
        _fail("read_auth (--read-auth) is on but no API keys are configured, so no read could be answered: "
              "give --api-key KEY (or VIDSEARCH_API_KEYS), or serve open reads (--open-reads)")  # fmt: skip
    import uvicorn  # after the settings' checks: the server brings torch (~5 s)

    from vidsearch.server import create_app
    from vidsearch.server.connections import uvicorn_options

    application = create_app(settings, serving=True)
    err.print(f"vidsearch API on http://{settings.host}:{settings.port} (index {settings.db}; docs at /docs)")
    uvicorn.run(application, host=settings.host, port=settings.port, log_level="warning", **uvicorn_options(settings))


@app.command()
def ui(
    db: DbOpt = None,
    api: Annotated[Optional[str], typer.Option("--api", help="Search API URL [VIDSEARCH_API_URL]; else open --db locally.")] = None,
    api_key: Annotated[Optional[str], typer.Option("--api-key", envvar="VIDSEARCH_API_KEY", help="API key (needed to start index jobs).")] = None,
    host: Annotated[str, typer.Option("--host", help="Address the UI binds.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="Port the UI binds.")] = 8501,
    model: ModelOpt = None,
    pretrained: PretrainedOpt = None,
    checkpoint: CheckpointOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Start the search UI (Streamlit) against the search API or a local index."""
    settings = _settings(config, db=db, api_url=api, model=model, pretrained=pretrained, checkpoint=checkpoint)
    model_flags = {"model": model, "pretrained": pretrained, "checkpoint": checkpoint}  # for local mode's in-process API
    raise typer.Exit(run_ui(settings.api_url, settings.db, host, port, api_key, config=config, settings=model_flags))


lab_commands.register(app)
app.command("export-triton")(export_triton_command)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
