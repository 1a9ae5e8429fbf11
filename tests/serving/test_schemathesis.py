"""Schemathesis (its CLI, as a user runs it) against a live deployment's own ``/openapi.json``,
with the deployment's key: no 5xx, no response that its document does not describe, and the
requests the document calls valid are accepted, the ones it calls invalid refused. A bounded
number of examples per operation, with a fixed seed, so the run is the same each time.

The Open Inference Protocol's request says each input's ``data`` fills its ``shape`` and names
the model's columns, which no JSON schema can express: for that operation every check runs but
``positive_data_acceptance`` (a schema-valid request that does not fill its shape is refused,
rightly, with 422)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import mlops_lab as ml

ST = shutil.which("schemathesis", path=str(Path(sys.executable).parent)) or shutil.which("schemathesis")
pytestmark = pytest.mark.skipif(ST is None, reason="schemathesis is not installed (pip install -e .[dev])")


def _run(url: str, key: str, cwd: Path, *extra: str) -> subprocess.CompletedProcess:
    # in a folder of the test's: schemathesis keeps a cache of the failures it found there, and
    # replays them in later runs
    return subprocess.run(
        [ST, "run", f"{url}/openapi.json", "-H", f"Authorization: Bearer {key}", "--max-examples", "40",
         "--seed", "20261201", "--workers", "1", "--no-color", *extra],
        capture_output=True, text=True, timeout=280, env={**os.environ, "NO_PROXY": "127.0.0.1,localhost"}, cwd=cwd,
    )


@pytest.mark.parametrize("kind", ["columns", "tensor"])
def test_schemathesis_finds_no_server_error_and_no_schema_mismatch(sqlite_registry, iris, trained, kind, tmp_path):
    import numpy as np

    X, _ = iris
    # A LogisticRegression: it cannot take NaN (a null reaching it was a 500 before)
    sample = X if kind == "columns" else X.to_numpy()
    model = trained if kind == "columns" else type(trained)(max_iter=500).fit(X.to_numpy(), np.arange(len(X)) % 3)
    ml.register_model(model, "iris", sample_input=sample)
    d = ml.deploy("iris:1", name="svc", progress=False)
    try:
        v2 = "/v2/models/iris/infer"
        everything_else = _run(d.url, d.keys["primary"], tmp_path, "--exclude-path", v2)
        assert everything_else.returncode == 0, everything_else.stdout[-6000:]
        assert "passed" in everything_else.stdout.lower() or "no issues" in everything_else.stdout.lower()
        infer = _run(d.url, d.keys["primary"], tmp_path, "--include-path", v2, "--exclude-checks", "positive_data_acceptance")
        assert infer.returncode == 0, infer.stdout[-6000:]
    finally:
        d.delete()
