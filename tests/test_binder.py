"""The Binder configuration: what repo2docker reads exists and points at real things.

repo2docker itself cannot run here (it builds a Docker image from a pulled base image); this test
checks the files it reads, and that the README badge opens a tutorial that exists."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parents[1]


def test_binder_installs_the_package_with_the_tutorial_extras():
    post = (ROOT / "binder" / "postBuild").read_text()
    assert (ROOT / "binder" / "postBuild").stat().st_mode & 0o111, "postBuild must be executable"
    subprocess.run(["bash", "-n", str(ROOT / "binder" / "postBuild")], check=True)
    extras = re.search(r'pip install [^\n]*"\.\[([a-z,]+)\]"', post).group(1).split(",")
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert set(extras) <= set(declared)
    needs = " ".join(d for e in extras for d in declared[e])
    for package in ("ipywidgets", "jupyterlab", "scikit-learn", "tritonclient"):
        assert package in needs, package
    assert (ROOT / "binder" / "runtime.txt").read_text().strip() == "python-3.11"


def test_readme_badge_opens_the_first_tutorial_in_jupyterlab():
    readme = (ROOT / "README.md").read_text()
    m = re.search(r"\(https://mybinder\.org/v2/gh/[\w.-]+/[\w.-]+/main\?urlpath=lab/tree/([\w./-]+\.ipynb)\)", readme)
    assert m, "README needs the Binder badge"
    assert (ROOT / m.group(1)).is_file() and m.group(1) == "notebooks/01_register.ipynb"
