"""`vidsearch calibrate` (fit and measure a relevance calibration on labelled queries) and
`vidsearch label-synth` (labelled queries, positives and several kinds of negatives, for a corpus
made by `vidsearch synth`). The one-command recipe that re-fits the shipped model's calibration
after it is retrained is in the README ("Relevance you can trust")."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from vidsearch.clitools import CheckpointOpt, ConfigOpt, DbOpt, JsonOpt, err, out, user_errors
from vidsearch.clitools import fail as _fail
from vidsearch.clitools import print_json as _print_json
from vidsearch.clitools import settings_from as _settings

__all__ = ["calibrate_command", "label_synth_command"]


def label_synth_command(
    corpus: Annotated[Path, typer.Argument(help="Folder made by `vidsearch synth` (has synth.json).", show_default=False)],
    out_path: Annotated[Path, typer.Option("--out", help="Labelled queries to write (JSONL).")] = Path("labelled.jsonl"),
    per_kind: Annotated[int, typer.Option("--per-kind", min=10, help="Negative queries of each kind.")] = 150,
    seed: Annotated[int, typer.Option("--seed", help="Seed for the negative queries.")] = 0,
) -> None:
    """Labelled queries for a synthetic corpus: every test caption, every word said or shown, and negatives (unrelated, near misses, nonsense)."""
    from .calibration import synthetic_labels

    if not (corpus / "synth.json").is_file():
        _fail(f"{corpus} has no synth.json: give a folder made by `vidsearch synth`")
    records = synthetic_labels(corpus, per_kind=per_kind, seed=seed)
    for r in records:  # paths relative to the labels file, wherever it is written
        r["relevant"] = [os.path.relpath(Path(corpus, v).resolve(), out_path.resolve().parent) for v in r["relevant"]]
    out_path.write_text("".join(json.dumps(r) + "\n" for r in records))
    kinds: dict[str, int] = {}
    for r in records:
        kinds[r["kind"]] = kinds.get(r["kind"], 0) + 1
    out.print(f"wrote {len(records)} labelled queries to {out_path}: " + ", ".join(f"{k} {n}" for k, n in sorted(kinds.items())))


def calibrate_command(
    data: Annotated[Path, typer.Option("--data", help="Labelled queries, JSONL: {query, relevant: [video id|title|path], kind?, split?}.", show_default=False)],
    db: DbOpt = None,
    out_path: Annotated[Optional[Path], typer.Option("--out", help="Where to write the calibration [default: <db>/calibration.json, used by searches of that index].")] = None,
    held_out: Annotated[float, typer.Option("--held-out", min=0.0, max=0.9, help="Share of queries kept out of the fit to measure it (when the file gives no split).")] = 0.5,
    checkpoint: CheckpointOpt = None,
    config: ConfigOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Fit the relevance calibration of this index's model on labelled queries, and measure it on held-out ones.

    Needs at least 100 fitting queries with both answerable ones and queries for things the library
    does not hold (several hundred are better)."""
    from vidsearch.search import open_engine  # the search stack (~5 s)
    from vidsearch.search.relevance import DB_FILE, timed_text_channels

    from .calibration import collect, fit, read_labels, report

    settings = _settings(config, db=db, checkpoint=checkpoint)
    try:
        engine = open_engine(settings)
        queries = read_labels(data, engine.snapshot.videos, held_out)
    except (ValueError, *user_errors()) as exc:
        _fail(str(exc))
    with Progress(TextColumn("searching labelled queries"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(), console=err, transient=True) as bar:
        task = bar.add_task("q", total=len(queries))
        obs = collect(engine, queries, progress=lambda: bar.advance(task))
    timed = list(timed_text_channels(engine.text_channels.sources() if engine.text_channels else []))
    try:
        cal = fit(obs, engine.backbone.fingerprint, text_channels=tuple(timed))
    except ValueError as exc:
        _fail(str(exc))
    held = report(cal, obs, "held_out") if any(q.split == "held_out" for q in queries) else None
    fitted = report(cal, obs, "fit")
    cal = type(cal)(**{**cal.__dict__, "fitted_on": {"labels": str(data), "text_channels": timed, "queries": fitted["queries"], "rows": fitted["rows"], "ece_fit": fitted["ece"],
                                                      **({"ece_held_out": held["ece"]} if held else {})}})  # fmt: skip
    target = cal.save(out_path or settings.db / DB_FILE)
    result = {"calibration": str(target), "threshold": cal.threshold, "fit": fitted, "held_out": held}
    if json_out:
        _print_json(result)
        return
    out.print(f"wrote {target} (model {cal.model}); default min_relevance {cal.threshold:.2f}")
    for name, rep in (("fit", fitted), ("held-out", held)):
        if rep is None:
            continue
        table = Table(title=f"{name}: {sum(rep['queries'].values())} queries, {rep['rows']} results, ECE {rep['ece']:.3f}", title_justify="left")
        table.add_column("at min_relevance " + f"{cal.threshold:.2f}")
        table.add_column("share", justify="right")
        for k, v in rep["at_threshold"].items():
            table.add_row(k, f"{v:.3f}")
        for k, v in rep["without_threshold"].items():
            table.add_row(f"{k} (no threshold)", f"{v:.3f}")
        out.print(table)
