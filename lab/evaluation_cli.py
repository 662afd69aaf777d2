"""`eval-moments` and `eval-retrieval`: score result files from the shell with the reference rules.

Kept in their own module so the main CLI only registers them (``lab.commands.register``) and so
they can be tested alone through this module's own ``app``. Output is a table
for people or, with ``--json``, exactly one JSON object on stdout for scripts; bad input is one line
on stderr and exit code 2 (typer's usage-error code), never a traceback.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, NoReturn

import numpy as np
import typer
from rich.console import Console
from rich.table import Table

from vidsearch.metrics import (
    RETRIEVAL_KS,
    moment_metrics,
    read_ground_truth,
    read_predictions,
    retrieval_metrics,
)

MOMENT_KEYS = ("R1@0.5", "R1@0.7", "mAP@0.5", "mAP@0.75", "mAP")
RETRIEVAL_KEYS = tuple(f"R@{k}" for k in RETRIEVAL_KS) + ("MdR", "MnR")

ExistingFile = dict(exists=True, dir_okay=False, readable=True)  # typer then rejects a bad path itself
# No square brackets in help: typer renders help as rich markup, where they would vanish as tags.
PRED_HELP = "Predictions jsonl: qid and pred_relevant_windows, a list of (start, end, score), best first."
GT_HELP = "Ground truth jsonl: qid and relevant_windows, a list of (start, end)."
SIM_HELP = "Similarity matrix .npy (queries x videos); row i's true video is column i."
JsonFlag = Annotated[bool, typer.Option("--json", help="Print one JSON object instead of a table.")]


def eval_moments(
    pred: Annotated[Path, typer.Argument(help=PRED_HELP, metavar="PRED.jsonl", **ExistingFile)],
    gt: Annotated[Path, typer.Argument(help=GT_HELP, metavar="GT.jsonl", **ExistingFile)],
    json_out: JsonFlag = False,
) -> None:
    """Moment retrieval metrics (QVHighlights): R1@0.5, R1@0.7, mAP@0.5, mAP@0.75, mAP (percent)."""
    try:
        predictions = read_predictions(pred)
        ground_truth = read_ground_truth(gt)
        metrics = moment_metrics(predictions, ground_truth)
    except ValueError as e:
        _fail(str(e))
    _report("Moment retrieval", metrics, MOMENT_KEYS, len(ground_truth), json_out)


def eval_retrieval(
    sim: Annotated[Path, typer.Argument(help=SIM_HELP, metavar="SIM.npy", **ExistingFile)],
    json_out: JsonFlag = False,
) -> None:
    """Text-to-video retrieval metrics (CLIP4Clip): R@1, R@5, R@10 (percent), MdR, MnR."""
    matrix = _load_matrix(sim)
    try:
        metrics = retrieval_metrics(matrix)
    except ValueError as e:
        _fail(f"{sim}: {e}")
    _report("Text-to-video retrieval", metrics, RETRIEVAL_KEYS, matrix.shape[0], json_out)


def _load_matrix(path: Path) -> np.ndarray:
    """One plain array from a .npy file; pickles are refused because loading one runs code."""
    try:
        loaded = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        _fail(f"{path}: not a readable .npy array ({e})")
    if not isinstance(loaded, np.ndarray):
        loaded.close()
        _fail(f"{path}: expected a single .npy array, got an .npz archive")
    return loaded


def _report(
    title: str, metrics: dict[str, float], keys: tuple[str, ...], n_queries: int, json_out: bool
) -> None:
    """Two decimals, as the reference tools print: more digits than that are noise at these sizes."""
    values = {k: round(metrics[k], 2) for k in keys}
    if json_out:
        typer.echo(json.dumps({**values, "n_queries": n_queries}))
        return
    table = Table(title=title, caption=f"{n_queries} quer{'y' if n_queries == 1 else 'ies'}")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for k, v in values.items():
        table.add_row(k, f"{v:.2f}")
    Console().print(table)  # built here, not at import, so it writes to the stdout of this call


def _fail(message: str) -> NoReturn:
    typer.echo(f"Error: {message}", err=True)
    raise typer.Exit(2)


app = typer.Typer(help="Evaluate search results with the reference metrics.", no_args_is_help=True)
app.command("eval-moments")(eval_moments)
app.command("eval-retrieval")(eval_retrieval)
