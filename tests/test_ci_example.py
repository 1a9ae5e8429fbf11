"""The example CI workflow's steps, run in order with the real CLI (examples/ci/workflow.yml)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def test_ci_workflow_steps_run_with_the_cli(sqlite_registry, tmp_path):
    workflow = yaml.safe_load((ROOT / "examples" / "ci" / "workflow.yml").read_text())
    steps = workflow["jobs"]["release"]["steps"]
    env = {**os.environ, "GITHUB_SHA": "abc123", "PATH": str(Path(sys.executable).parent) + os.pathsep + os.environ["PATH"]}
    (tmp_path / "examples").symlink_to(ROOT / "examples")  # the checkout, as in the workflow
    ran = []
    for step in steps:
        script = step.get("run")
        if not script or step["name"] == "Install":  # the test environment has it installed
            continue
        proc = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, (step["name"], proc.stdout, proc.stderr)
        ran.append((step["name"], proc.stdout))
    names = [n for n, _ in ran]
    assert names == ["Train", "Register", "Deploy to staging", "Smoke test", "Gate on alerts", "Promote", "Clean up staging"]
    gate = dict(ran)["Gate on alerts"]
    assert "error_rate over 15min: fires above 0.01" in gate and gate.count("ok ") == 2, gate
    assert "smoke test passed: 5 rows" in dict(ran)["Smoke test"]
    promote = dict(ran)["Promote"]
    assert promote.startswith("breast-cancer@production -> breast-cancer:1")
    versions = json.loads(promote[promote.index("["):])
    assert versions[0]["aliases"] == ["production"] and versions[0]["tags"] == {"commit": "abc123"}
