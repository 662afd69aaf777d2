"""The lab's commands: `vidsearch train`, `eval`, `eval-moments`, `eval-retrieval`, `synth`,
`calibrate` and `label-synth`.

They exist to train and measure models, not to serve users, so they live in the lab wing; the main
CLI only registers them (`register(app)`), with the same names and flags as always. Each command
imports the model stack when it runs, not when the CLI starts (importing torch and the search stack
takes ~5 s here, which `vidsearch status` or `--help` must not pay).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Optional

import numpy as np
import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from vidsearch.clitools import (
    CheckpointOpt,
    ConfigOpt,
    DbOpt,
    JsonOpt,
    PretrainedOpt,
    err,
    out,
    user_errors,
)
from vidsearch.clitools import fail as _fail
from vidsearch.clitools import print_json as _print_json
from vidsearch.clitools import settings_from as _settings

from .calibration_cli import calibrate_command, label_synth_command
from .datasets import DatasetError, read_msrvtt, write_jsonl
from .evaluation_cli import eval_moments, eval_retrieval
from .synth import synth_command
from .training_data import concat_training_sets, load_training_set


def register(app: typer.Typer) -> None:
    """Add the lab's commands to the `vidsearch` command."""
    app.command()(train)
    app.command("eval")(evaluate)
    app.command("eval-moments")(eval_moments)
    app.command("eval-retrieval")(eval_retrieval)
    app.command("synth")(synth_command)
    app.command("calibrate")(calibrate_command)
    app.command("label-synth")(label_synth_command)


def _known_errors() -> tuple[type[BaseException], ...]:
    from vidsearch.encoders import ModelLoadError

    return (*user_errors(), ModelLoadError)


DataOpt = Annotated[Path, typer.Option("--data", help="JSONL ({video, captions:[{text,start,end}]}) or an MSR-VTT split CSV.", show_default=False)]
MsrvttVideosOpt = Annotated[Optional[Path], typer.Option("--videos", help="MSR-VTT: folder of <video_id>.mp4 files.")]
MsrvttAnnOpt = Annotated[Optional[Path], typer.Option("--annotations", help="MSR-VTT: MSRVTT_data.json (for id-only split CSVs).")]


def _dataset_jsonl(data: Path, videos: Path | None, annotations: Path | None) -> Path:
    """Our JSONL as is; an MSR-VTT split CSV converted to JSONL beside it."""
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


def train(
    data: Annotated[list[Path], typer.Option("--data", help="JSONL ({video, captions:[{text,start,end}]}) or an MSR-VTT split CSV; repeat to train on several.", show_default=False)],
    out_path: Annotated[Path, typer.Option("--out", help="Checkpoint to write (and resume from).")] = Path("vidsearch-model.pt"),
    model: Annotated[str, typer.Option("--model", help="open_clip model to train: tiny (MiniLM text tower), tiny-scratch, ViT-B-32 ...")] = "tiny",
    pretrained: PretrainedOpt = "none",
    checkpoint: Annotated[Optional[Path], typer.Option("--checkpoint", help="Start from these weights.")] = None,
    epochs: Annotated[Optional[int], typer.Option("--epochs", min=1, help="Passes over the training videos [default: 12; 10 with --tune-heads].", show_default=False)] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", min=2, help="Videos per step.")] = 64,
    frames_per_video: Annotated[int, typer.Option("--frames-per-video", min=1)] = 16,
    lr: Annotated[Optional[float], typer.Option("--lr", help="Peak learning rate (cosine schedule after warmup); learned scalars get 50x [default: 5e-4; 1e-3 with --tune-heads, scalars 10x].", show_default=False)] = None,
    sample_fps: Annotated[float, typer.Option("--sample-fps", help="Frames per second, as the index will sample them.")] = 1.0,
    freeze_backbone: Annotated[bool, typer.Option("--freeze-backbone/--fine-tune", help="Train only the heads (and text projection).")] = False,
    freeze_text: Annotated[bool, typer.Option("--freeze-text/--train-text", help="Keep a pretrained language-model text tower frozen.")] = True,
    audio: Annotated[bool, typer.Option("--audio/--no-audio", help="Train the audio tower and TEFAL fusion.")] = True,
    temporal: Annotated[bool, typer.Option("--temporal/--no-temporal", help="A temporal module over unit vectors, so order and direction count.")] = True,
    direction_weight: Annotated[float, typer.Option("--direction-weight", min=0.0, help="Weight of the caption-vs-reversed-direction loss (0: off).")] = 0.5,
    shape_weight: Annotated[float, typer.Option("--shape-weight", min=0.0, help="Weight of the caption-vs-other-shapes loss (the same caption naming each other shape, on its own event; 0: off).")] = 0.5,
    motion_weight: Annotated[float, typer.Option("--motion-weight", min=0.0, help="Weight of the caption-vs-other-motions loss (left, right, up, down, still; on its own event; 0: off).")] = 0.5,
    where_cues: Annotated[bool, typer.Option("--where-cues/--no-where-cues", help="The temporal module also reads where things move, from the pixels (the centroid of change against the video's median frame).")] = True,
    temporal_lr_mult: Annotated[float, typer.Option("--temporal-lr-mult", min=0.0, help="The temporal module's learning rate as a multiple of --lr.")] = 10.0,
    augment: Annotated[bool, typer.Option("--augment/--no-augment", help="Per-video crop, brightness/contrast and noise on training frames.")] = True,
    xpool_attention: Annotated[Optional[float], typer.Option("--xpool-attention", min=0.01, help="The video X-Pool's attention logits times this: below 1 the text picks frames less sharply (default: the --checkpoint's, else 1).")] = None,
    tune_heads: Annotated[bool, typer.Option("--tune-heads", help="Only retune the --checkpoint's video X-Pool head (from its identity start, held near it by --anchor) and audio fusion's weight and gate, on the units its towers make of --data: X-Pool that generalises beyond the training look. The checkpoint's layout is kept (--focus, --temporal, --audio are ignored); --batch-size counts captions, --lr is constant, --xpool-attention defaults to 0.25.")] = False,
    anchor: Annotated[Optional[float], typer.Option("--anchor", min=0.0, help="With --tune-heads: the pull back to X-Pool's identity start (lambda of an L2-SP penalty) [default: 30].", show_default=False)] = None,
    window_weight: Annotated[Optional[float], typer.Option("--window-weight", min=0.0, help="With --tune-heads: how much search's best event window counts against the retuned head's video-level score [default: 2].", show_default=False)] = None,
    focus: Annotated[bool, typer.Option("--focus/--no-focus", help="Each frame also encoded as a crop of half its side around what moves (the where-cue), mixed in with a learned weight.")] = True,
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
    from vidsearch.encoders import load_backbone  # the model stack (torch): see the module docstring
    from vidsearch.encoders.focus import FOCUS_SCALE
    from vidsearch.encoders.head_tuning import HeadTuning
    from vidsearch.encoders.training import TrainConfig, Trainer

    if tune_heads and (checkpoint is None or resume):
        _fail("--tune-heads retunes a trained model: give its --checkpoint (and no --resume: the stage takes about a minute)")
    if not tune_heads and (anchor is not None or window_weight is not None):
        _fail("--anchor and --window-weight belong to --tune-heads")
    datasets = [_dataset_jsonl(d, videos, annotations) for d in data]
    epochs = epochs if epochs is not None else (HeadTuning.epochs if tune_heads else 12)
    lr = lr if lr is not None else (HeadTuning.lr if tune_heads else 5e-4)
    cfg = TrainConfig(model=model, pretrained=pretrained, checkpoint=str(checkpoint) if checkpoint else None, epochs=epochs,
                      batch_size=batch_size, frames_per_video=frames_per_video, lr=lr, freeze_backbone=freeze_backbone, heads_only=tune_heads,
                      freeze_text=freeze_text, audio=audio, seed=seed, temporal=temporal, direction_weight=direction_weight, shape_weight=shape_weight, motion_weight=motion_weight, where_cues=where_cues, temporal_lr_mult=temporal_lr_mult,
                      augment=augment, focus=FOCUS_SCALE if focus else 0.0, xpool_attention=xpool_attention, extra={"sample_fps": sample_fps})  # fmt: skip
    show = not json_out and err.is_terminal
    t0 = time.monotonic()
    try:
        size = load_backbone(model, pretrained, checkpoint, precision="fp32").image_size
        with Progress(TextColumn("[bold]decoding"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(), console=err, disable=not show) as bar:
            n = sum(len(line.strip()) > 0 for d in datasets for line in open(d, encoding="utf-8"))
            task = bar.add_task("decode", total=n)
            ts = concat_training_sets([load_training_set(d, sample_fps, size, workers=workers, progress=lambda: bar.advance(task)) for d in datasets])
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
            update = lambda step, total, loss: bar.update(task, completed=step, total=total, loss=loss)  # noqa: E731
            if tune_heads:
                tuning = HeadTuning(anchor=HeadTuning.anchor if anchor is None else anchor, epochs=epochs, lr=lr, batch_size=batch_size, seed=seed,
                                    **({"attention": xpool_attention} if xpool_attention else {}),
                                    **({"window_weight": window_weight} if window_weight is not None else {}))  # fmt: skip
                summary = trainer.tune_heads(tuning, progress=update)
                report = validate(epochs) if validate is not None else None
                if report is not None:
                    summary["history"][-1]["eval"] = report
            else:
                summary = trainer.train(progress=update, validate=validate)
    except (DatasetError, RuntimeError, *_known_errors()) as exc:
        _fail(str(exc))
    result = {"checkpoint": str(out_path), "resumed": resumed, "videos": len(ts.videos), "captions": len(ts.cap_text),
              "frames": int(len(ts.frames)), "seconds": round(time.monotonic() - t0, 1), **summary}  # fmt: skip
    if json_out:
        _print_json(result)
        return
    for row in summary["history"]:
        parts = ", ".join(f"{k} {v:.3f}" for k, v in row.items() if k not in ("epoch", "step", "total", "seconds", "scale", "eval"))
        out.print(f"epoch {row['epoch']}: loss {row['total']:.3f} ({parts}) at {row['seconds']:.0f} s")
        for name, methods in row.get("eval", {}).items():
            for method, m in methods.items():
                if method == "direction_accuracy":
                    out.print(f"  {name} direction accuracy ({m['queries']} captions): event mean {m['event_mean']:.2f}, X-Pool {m['xpool']:.2f}")
                    continue
                sound = f", sound-dependent R@1 {m['sound_R@1']:.2f}" if "sound_R@1" in m else ""
                out.print(f"  {name} {method:>6}: R@1 {m['R@1']:.2f}  R@5 {m['R@5']:.2f}  R@10 {m['R@10']:.2f}  MdR {m['MdR']:.1f}{sound}")
    out.print(f"wrote {out_path} ({out_path.stat().st_size / 1e6:.1f} MB) in {result['seconds']:.0f} s")


def _sound_dependent_flags(data, jsonl: Path):
    """Per caption of a decoded dataset: whether a synthetic corpus marks its event sound-dependent."""
    from .evaluation import event_key, sound_dependent_map  # imports the search stack

    marks = sound_dependent_map(jsonl.parent / "events.jsonl", jsonl.parent)
    if not marks:
        return None
    return np.array([marks.get(event_key(data.videos[v], s), False) for v, s in zip(data.cap_video, data.cap_start)])


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
    from vidsearch.search import open_engine  # the search stack: see the module docstring

    from .evaluation import evaluate as run_eval

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
    cols += [c for c in ("P@1_relevant", "P@5_relevant", "moment_P@1_iou0.5") if any(c in row for row in report["methods"].values())]
    table.add_column("method")
    for c in cols:
        table.add_column(c, justify="right")
    for name, row in report["methods"].items():
        table.add_row(name, *[f"{row[c]:.2f}" if c in row else "-" for c in cols])
    out.print(table)
    for name, row in report["methods"].items():
        if "P@1_by_attribute" in row:
            out.print(f"{name}: first result holds the caption's "
                      + ", ".join(f"{a} {v:.2f}" for a, v in row["P@1_by_attribute"].items()))
    if "attribute_chance" in report:
        out.print("... by chance (the share of videos holding it): "
                  + ", ".join(f"{a} {v:.2f}" for a, v in report["attribute_chance"].items()))
    if "R@1_ceiling" in report:
        out.print(f"R@1 ceiling (a perfect recogniser, ties among videos holding the same event): {report['R@1_ceiling']:.2f}")
    if report.get("direction"):
        d = report["direction"]
        out.print(f"direction accuracy ({d['queries']} captions vs. their reversed twin, 50 = blind to order): "
                  + ", ".join(f"{k} {v:.2f}" for k, v in d.items() if k != "queries"))
    if "moments" in report:
        out.print("moments: " + ", ".join(f"{k} {v:.2f}" for k, v in report["moments"].items()))
    if "moments_frames_only" in report:
        out.print("moments from frames alone: " + ", ".join(f"{k} {v:.2f}" for k, v in report["moments_frames_only"].items()))
    if "moments_without_direction_contrast" in report:
        out.print("moments without the direction contrast: "
                  + ", ".join(f"{k} {v:.2f}" for k, v in report["moments_without_direction_contrast"].items()))
