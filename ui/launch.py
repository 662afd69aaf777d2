"""`vidsearch ui`: start the Streamlit app on a host and port, pointed at the search API or a local
index.

Streamlit apps are started by `streamlit run FILE`, so this builds that command and hands the
app its settings through the environment (the app is a separate process that reads them with
`UiConfig.from_env`). The flags make it a quiet server: headless, bound where asked, no usage
statistics, no file watcher, and no tracebacks in the browser. Stopping `vidsearch ui` (Ctrl-C, or
SIGTERM from a service manager) stops Streamlit too: a UI left serving the port after its command
is gone cannot be stopped by the tools that started it.
"""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

APP = Path(__file__).resolve().with_name("app.py")


def ui_command(host: str = "127.0.0.1", port: int = 8501) -> list[str]:
    return [
        sys.executable, "-m", "streamlit", "run", str(APP),
        "--server.headless", "true",
        "--server.address", host,
        "--server.port", str(port),
        "--browser.gatherUsageStats", "false",
        "--server.fileWatcherType", "none",
        "--server.runOnSave", "false",
        "--client.showErrorDetails", "none",
        "--client.toolbarMode", "minimal",
    ]  # fmt: skip


def ui_env(
    api_url: str | None,
    db: Path | None,
    api_key: str | None = None,
    config: Path | None = None,
    base: Mapping[str, str] | None = None,
    settings: Mapping[str, object] | None = None,
) -> dict[str, str]:
    """The app's environment. An empty `VIDSEARCH_API_URL` means local mode even when a config file
    names an API (the command line chose). `settings` are flags given to `vidsearch ui` (model,
    pretrained, checkpoint...), passed on as `VIDSEARCH_<NAME>` so the in-process API of local mode
    reads them as a server started with them would."""
    env = dict(os.environ if base is None else base)
    env["VIDSEARCH_API_URL"] = api_url or ""
    if db is not None:
        env["VIDSEARCH_DB"] = str(db)
    if api_key:
        env["VIDSEARCH_API_KEY"] = api_key
    if config is not None:
        env["VIDSEARCH_CONFIG"] = str(config)
    for name, value in (settings or {}).items():
        if value is not None:
            env[f"VIDSEARCH_{name.upper()}"] = str(value)
    return env


def run_ui(
    api_url: str | None,
    db: Path | None,
    host: str,
    port: int,
    api_key: str | None,
    config: Path | None = None,
    settings: Mapping[str, object] | None = None,
) -> int:
    """Run the UI until it is stopped (Ctrl-C or SIGTERM); returns the exit code for the CLI."""
    if importlib.util.find_spec("streamlit") is None or importlib.util.find_spec("altair") is None:
        print("error: the UI needs its extra: pip install 'vidsearch[ui]'", file=sys.stderr)
        return 2
    where = f"search API {api_url}" if api_url else f"index {db}"
    print(f"vidsearch UI on http://{host}:{port} ({where}); Ctrl-C stops it", file=sys.stderr)
    proc = subprocess.Popen(ui_command(host, port), env=ui_env(api_url, db, api_key, config, settings=settings))

    def stop(signum, frame):  # SIGTERM is sent to us alone (a service manager, `kill`): pass it on
        proc.send_signal(signal.SIGTERM)

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        return proc.wait()
    except KeyboardInterrupt:  # the terminal sent SIGINT to both of us: let Streamlit shut down
        try:
            return proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGTERM)
            return proc.wait()
    finally:
        signal.signal(signal.SIGTERM, previous)
