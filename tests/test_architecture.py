"""The walls between the parts, checked: the import contracts in pyproject.toml (import-linter) and
each subpackage's declared exports.

import-linter builds its import graph by walking a package's directory. vidsearch is one
distribution whose subpackages live in top-level folders (setuptools `package-dir`: `search/` is
`vidsearch.search`), so no directory holds the package as Python sees it. This assembles it, as
installed, from links to the source files in a temporary directory, and runs `lint-imports` there:
a wrong import (the UI reaching for the engine, search for the indexer, the core for anything
above it) fails the suite, and so CI.

By hand: `python tests/test_architecture.py` prints import-linter's report.
"""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

REPO = Path(__file__).resolve().parents[1]
SUBPACKAGES = ("indexer", "encoders", "search", "server", "ui", "lab")


def assemble(dest: Path) -> Path:
    """The package tree as installed, made of links to the repository's files; returns its root."""
    mapping = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]
    for package, folder in mapping.items():
        target = dest.joinpath(*package.split("."))
        target.mkdir(parents=True, exist_ok=True)
        for source in (REPO / folder).glob("*.py"):
            (target / source.name).symlink_to(source)
    return dest


def lint_imports() -> subprocess.CompletedProcess:
    # import-linter's own command, run by this interpreter (its `lint-imports` script may sit in another bin)
    tool = [sys.executable, "-c", "from importlinter.cli import lint_imports_command; lint_imports_command()"]
    with tempfile.TemporaryDirectory(prefix="vidsearch-layout-") as tmp:
        root = assemble(Path(tmp))
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")])}
        return subprocess.run([*tool, str(REPO / "pyproject.toml"), "--no-cache"], capture_output=True, text=True, env=env, cwd=tmp)


def test_import_contracts_are_kept():
    run = lint_imports()
    assert run.returncode == 0 and "0 broken" in run.stdout, run.stdout + run.stderr
    assert "Contracts: 3 kept" in run.stdout, run.stdout  # every contract in pyproject.toml was checked


@pytest.mark.parametrize("name", SUBPACKAGES)
def test_each_subpackage_exports_what_it_declares(name):
    package = importlib.import_module(f"vidsearch.{name}")
    assert package.__doc__ and package.__all__, f"vidsearch.{name} must say what it is and what it exports"
    missing = [attr for attr in package.__all__ if not hasattr(package, attr)]
    assert not missing, missing


if __name__ == "__main__":
    result = lint_imports()
    print(result.stdout, result.stderr, sep="")
    sys.exit(result.returncode)
