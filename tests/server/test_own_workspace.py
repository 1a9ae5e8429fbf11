"""The server extension builds its workspace from its own traitlets and leaves the process
environment alone (the kernel and other extensions in that server read it)."""

from __future__ import annotations

import json
import os

import pytest

from mlops_lab.workspace import Workspace


@pytest.fixture
def team_home(tmp_path):
    return tmp_path / "team-home"


@pytest.fixture
def jp_server_config(team_home, tmp_path):
    return {"ServerApp": {"jpserver_extensions": {"mlops_lab.server": True}},
            "MlopsLabApp": {"home": str(team_home), "db": f"sqlite:///{tmp_path / 'team.db'}"}}


async def test_the_extension_serves_its_configured_registry(jp_fetch, team_home, tmp_path, iris, trained):
    X, _ = iris
    team = Workspace(home=team_home, db=f"sqlite:///{tmp_path / 'team.db'}")
    team.register_model(trained, "team-model", sample_input=X.iloc[:3])
    env_home = os.environ["MLOPS_LAB_HOME"]
    r = await jp_fetch("mlops-lab", "api", "models")
    assert [m["name"] for m in json.loads(r.body)["models"]] == ["team-model"]
    assert os.environ["MLOPS_LAB_HOME"] == env_home != str(team_home)
    assert "MLOPS_LAB_DB" not in os.environ
    team.close()
