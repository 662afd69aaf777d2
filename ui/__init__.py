"""vidsearch.ui: the Streamlit app, and `vidsearch ui`, which starts it.

The app talks to the search API only, through `VidsearchClient` (its one `Backend`): over HTTP
against `vidsearch serve`, or in-process against the same app when it opens a local index. Pages
(`search_page.py`, `library_page.py`) are scripts Streamlit runs; importing this package does not
import Streamlit.
"""

from .backend import Backend, BackendError, LibraryStats, UiConfig, open_backend
from .launch import run_ui, ui_command, ui_env

__all__ = ["Backend", "BackendError", "LibraryStats", "UiConfig", "open_backend", "run_ui", "ui_command", "ui_env"]
