"""How failures look on a page: one clear message with what to do, never a stack trace.

`BackendError`s carry their kind (unreachable, empty index, bad query...) and are shown as such. Any
other exception is a bug: the page shows a short line and the traceback goes to the UI's log, where
an operator can read it, instead of to the user's screen.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextlib import nullcontext

import streamlit as st
from pydantic import ValidationError

from vidsearch.api_models import validation_message

from .backend import Backend, BackendError, Indexing

log = logging.getLogger("vidsearch.ui")

TITLES = {
    "unreachable": "Search API unreachable",
    "empty": "The index is empty",
    "bad_query": "This search cannot be run as asked",
    "auth": "Not allowed",
    "refused": "Not allowed",
    "not_found": "Not found",
    "unavailable": "Search is unavailable",
}


def loading(be: Backend):
    """A spinner while a local backend starts its in-process API, which loads the model and opens
    the index (the first call only)."""
    if getattr(be, "loaded", True):
        return nullcontext()
    return st.spinner("Loading the model and the index (once)…")


def show_error(err: BackendError, title: str | None = None) -> None:
    """`title`: what failed, where the kind's own title would misname it (a job form is no search)."""
    text = f"**{title or TITLES.get(err.kind, 'Error')}.** {err.message}"
    if err.hint:
        text += f"\n\n{err.hint}"
    if err.kind == "empty":
        st.info(text, icon=":material/inbox:")
    elif err.kind in ("bad_query", "refused"):
        st.warning(text, icon=":material/edit:")
    else:
        st.error(text, icon=":material/cloud_off:" if err.kind == "unreachable" else ":material/error:")


def show_indexing(run: Indexing) -> None:
    """Said instead of "the index is empty" or a store error while a run builds the index (on both
    pages), and above the results while it adds to it (they can miss the videos it has not reached)."""
    videos = "no videos in it yet" if run.videos is None else f"{run.videos} videos in it so far"
    job = f"; the job has done {run.done} of {run.total}" if run.total else ""
    then = " Results can miss the videos it has not reached yet; search again when it is done." if run.videos else \
        " Search once the first videos are in."  # fmt: skip
    st.info(f"**An index is being built or rebuilt here** ({videos}{job}).{then}", icon=":material/autorenew:")


def guarded(render: Callable[[], None]) -> None:
    """Run a page; turn what escapes it into a message (Streamlit's own rerun/stop signals are
    BaseExceptions and pass through)."""
    try:
        render()
    except BackendError as err:
        show_error(err)
    except ValidationError as exc:
        st.warning(f"**This search cannot be run as asked.** {validation_message(exc)}", icon=":material/edit:")
    except Exception as exc:  # noqa: BLE001 - the last line of defence: log it, say it briefly
        log.exception("the page failed")
        st.error(f"**Something went wrong** ({type(exc).__name__}: {exc}). The details are in the UI's log.", icon=":material/error:")
