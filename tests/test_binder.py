"""The Binder configuration: what repo2docker reads exists and points at real things, and its
``postBuild`` really installs and enables everything in a fresh virtual environment.

repo2docker itself cannot run here (it builds from a base image that cannot be pulled); what it
would run after setting up Python, ``binder/postBuild``, runs for real."""

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


def test_postbuild_installs_and_enables_the_extensions_in_a_fresh_environment(tmp_path):
    import os
    import sys

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    env = {**os.environ, "PATH": f"{venv / 'bin'}{os.pathsep}{os.environ['PATH']}", "IPYTHONDIR": str(tmp_path / "ipython"),
           "VIRTUAL_ENV": str(venv)}
    env.pop("PYTHONPATH", None)
    proc = subprocess.run(["bash", "binder/postBuild"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    jupyter = str(venv / "bin" / "jupyter")
    labext = subprocess.run([jupyter, "labextension", "list"], env=env, capture_output=True, text=True)
    line = next(ln for ln in (labext.stdout + labext.stderr).splitlines() if "mlops-lab-jupyterlab" in ln)
    assert "enabled" in line and "OK" in line
    server = subprocess.run([jupyter, "server", "extension", "list"], env=env, capture_output=True, text=True)
    assert "mlops_lab.server enabled" in re.sub(r"\x1b\[[0-9;]*m", "", server.stdout + server.stderr)
    startup = tmp_path / "ipython" / "profile_default" / "startup" / "00-mlops-lab.py"
    assert "load_ext" in startup.read_text()
