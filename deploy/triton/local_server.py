"""Run a vidsearch model repository on this machine with the tritonserver that PyTriton bundles.

    python deploy/triton/local_server.py prepare                 # its virtual environment (once)
    python deploy/triton/local_server.py serve REPO [--http-port 8000 --grpc-port 8001]

Why a virtual environment of its own: PyTriton 0.7 needs numpy<2 (under numpy 2 its outputs come back
silently empty) while vidsearch runs on numpy 2. The environment is VIDSEARCH_PYTRITON_VENV, or
~/.cache/vidsearch/pytriton-venv; `prepare` creates it (about 1.5 minutes; ./install.sh runs it) and
`serve` creates it when missing. With pyenv's Python the server's Python-backend stub needs the
interpreter's lib folder on LD_LIBRARY_PATH; `serve` sets it.

Standard library only: the test suite, the benchmark and operators import or run it with any Python.
The server binds 127.0.0.1 unless told otherwise, and stops on SIGTERM (Ctrl-C).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
SERVE_SCRIPT = HERE / "serve_onnx.py"
REQUIREMENTS = ["nvidia-pytriton==0.7.0", "numpy<2", "onnxruntime>=1.17"]
READY_TIMEOUT = 180.0


class PyTritonUnavailable(RuntimeError):
    """PyTriton's environment could not be created here (no wheel for this platform, no registry...)."""


def venv_path() -> Path:
    env = os.environ.get("VIDSEARCH_PYTRITON_VENV")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "vidsearch" / "pytriton-venv"


def _marker(venv: Path) -> Path:
    return venv / ".vidsearch-requirements"


def _wanted() -> str:
    return hashlib.sha256("\n".join(REQUIREMENTS).encode()).hexdigest()[:16]


def venv_python(venv: Path | None = None) -> Path:
    return (venv or venv_path()) / "bin" / "python"


def ensure_venv(venv: Path | None = None, quiet: bool = False, timeout: float = 1200) -> Path:
    """The PyTriton environment, created (or completed) when missing; PyTritonUnavailable says why not."""
    venv = venv or venv_path()
    marker = _marker(venv)
    if marker.is_file() and marker.read_text().strip() == _wanted() and venv_python(venv).exists():
        return venv
    t0 = time.monotonic()
    say = (lambda *_: None) if quiet else (lambda m: print(m, file=sys.stderr, flush=True))
    say(f"creating PyTriton's environment in {venv} ({', '.join(REQUIREMENTS)}); takes a minute or two")
    try:
        if not venv_python(venv).exists():
            venv.parent.mkdir(parents=True, exist_ok=True)
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, capture_output=True, text=True, timeout=300)
        done = subprocess.run(
            [str(venv_python(venv)), "-m", "pip", "install", "-q", "--disable-pip-version-check", *REQUIREMENTS],
            capture_output=True, text=True, timeout=timeout,
        )  # fmt: skip
    except (OSError, subprocess.SubprocessError) as exc:
        raise PyTritonUnavailable(f"could not create {venv}: {exc}") from exc
    if done.returncode != 0:
        lines = [ln for ln in (done.stderr or done.stdout).splitlines() if ln.strip() and "ignored: it is neither" not in ln]
        raise PyTritonUnavailable(f"pip could not install {' '.join(REQUIREMENTS)} into {venv}: " + " | ".join(lines[-3:]))
    marker.write_text(_wanted())
    say(f"PyTriton environment ready in {time.monotonic() - t0:.0f} s")
    return venv


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _base_lib(python: Path) -> str:
    out = subprocess.run([str(python), "-c", "import sys; print(sys.base_prefix)"], capture_output=True, text=True, check=True)
    return str(Path(out.stdout.strip()) / "lib")


class LocalTriton:
    """A tritonserver (PyTriton's) serving REPO on loopback, on free ports unless given; a context manager.

    `http_url` and `grpc_url` are what `--triton-url` takes. The log is kept in `log_path`.
    """

    def __init__(self, repository: Path, workdir: Path, http_port: int | None = None, grpc_port: int | None = None,
                 host: str = "127.0.0.1", threads: int | None = None, venv: Path | None = None):  # fmt: skip
        self.repository = Path(repository)
        self.workdir = Path(workdir)
        self.host = host
        self.http_port = http_port or free_port()
        self.grpc_port = grpc_port or free_port()
        self.metrics_port = free_port()
        self.threads = threads
        self.venv = venv
        self.log_path = self.workdir / "tritonserver.log"
        self.proc: subprocess.Popen | None = None
        self.startup_seconds = 0.0

    @property
    def http_url(self) -> str:
        return f"http://{self.host}:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"grpc://{self.host}:{self.grpc_port}"

    def start(self) -> LocalTriton:
        venv = ensure_venv(self.venv)
        python = venv_python(venv)
        self.workdir.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ)
        env["LD_LIBRARY_PATH"] = os.pathsep.join(filter(None, [_base_lib(python), env.get("LD_LIBRARY_PATH")]))
        cmd = [str(python), str(SERVE_SCRIPT), str(self.repository), "--host", self.host,
               "--http-port", str(self.http_port), "--grpc-port", str(self.grpc_port),
               "--metrics-port", str(self.metrics_port), "--workspace", str(self.workdir / "workspace")]  # fmt: skip
        if self.threads:
            cmd += ["--threads", str(self.threads)]
        t0 = time.monotonic()
        self._log = open(self.log_path, "w")
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - t0
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT
        url = f"{self.http_url}/v2/health/ready"
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"tritonserver exited with code {self.proc.returncode}: {self.log_tail()}")
            try:
                with urllib.request.urlopen(url, timeout=2) as resp:
                    if resp.status == 200 and "vidsearch-triton ready" in self.log_path.read_text(errors="replace"):
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.25)
        raise TimeoutError(f"tritonserver not ready at {url} after {READY_TIMEOUT:.0f} s: {self.log_tail()}")

    def log_tail(self, lines: int = 15) -> str:
        try:
            return " | ".join(self.log_path.read_text(errors="replace").strip().splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM (PyTriton then stops tritonserver and its stubs), SIGKILL to the group if it hangs."""
        if self.proc is None or self.proc.poll() is not None:
            self._close_log()
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        self._close_log()

    def _close_log(self) -> None:
        log = getattr(self, "_log", None)
        if log is not None and not log.closed:
            log.close()

    def __enter__(self) -> LocalTriton:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description="PyTriton's tritonserver for a vidsearch model repository, on this machine.")
    sub = parser.add_subparsers(dest="cmd", required=True)
    sub.add_parser("prepare", help="create PyTriton's virtual environment (numpy<2) if it is missing")
    serve = sub.add_parser("serve", help="serve REPO until Ctrl-C / SIGTERM")
    serve.add_argument("repository", type=Path)
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--http-port", type=int, default=8000)
    serve.add_argument("--grpc-port", type=int, default=8001)
    serve.add_argument("--threads", type=int, default=None, help="onnxruntime threads per model (default: all cores)")
    serve.add_argument("--workdir", type=Path, default=Path(".triton-local"), help="log and PyTriton workspace")
    args = parser.parse_args()
    try:
        if args.cmd == "prepare":
            print(ensure_venv())
            return 0
        if not (args.repository / "export_report.json").is_file() and not list(args.repository.glob("*/config.pbtxt")):
            print(f"error: {args.repository} is not a model repository (run `vidsearch export-triton {args.repository}`)", file=sys.stderr)
            return 2
        server = LocalTriton(args.repository, args.workdir, args.http_port, args.grpc_port, args.host, args.threads)
        stop = []
        signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
        with server:
            print(f"serving {args.repository} at {server.http_url} and {server.grpc_url} "
                  f"(ready in {server.startup_seconds:.1f} s; log {server.log_path}); Ctrl-C stops", flush=True)  # fmt: skip
            try:
                while not stop and server.proc.poll() is None:
                    time.sleep(0.5)
            except KeyboardInterrupt:
                pass
        return 0
    except PyTritonUnavailable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
