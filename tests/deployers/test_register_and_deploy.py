"""Each step alone, or all in one call: deploy() and update() given a model object register it
as the next version and serve it; every face does the same; an error names the step that failed,
and a version registered before a failed deploy stays in the registry."""

from __future__ import annotations

import json
import pickle
import subprocess
import sys

import numpy as np
import pytest

import mlops_lab as ml
from mlops_lab.errors import DeploymentFailed, InvalidInput, InvalidName

from .test_local import BrokenAtStart, Const


def test_deploy_registers_a_model_object_and_serves_it(sqlite_registry):
    # Given a model object that is not registered
    sample = np.zeros((3, 2))
    # When it is deployed directly, with what register_model takes
    d = ml.deploy(Const(1.5), name="m", sample_input=sample, tags={"team": "a"}, progress=False)
    try:
        # Then it was registered as m:1, with its signature and tags, and that version serves
        assert d.registered.ref == "m:1" and d.registered.tags == {"team": "a"}
        assert ml.get_model("m:1").signature["shape"] == [-1, 2]
        assert [(m["name"], m["version"]) for m in d.models] == [("m", 1)]
        assert d.predict([[0, 0]]) == [1.5]
        # and update() with another object registers m:2 (the served model's next version)
        d.update(Const(2.5), sample_input=sample, progress=False)
        assert d.registered.ref == "m:2" and d.predict([[0, 0]]) == [2.5]
        # a reference still deploys without registering anything
        assert ml.update("m", "m:1", progress=False).registered is None
        assert len(ml.search_model_versions(name="m")) == 2
    finally:
        d.delete()


def test_errors_name_the_step_and_a_failed_deploy_keeps_the_registered_version(sqlite_registry):
    sample = np.zeros((3, 2))
    # step 1 fails: nothing is registered, nothing deployed
    with pytest.raises(InvalidInput, match="^deploy stopped at registering the model as 'x': cannot infer a signature"):
        ml.deploy(Const(1.0), name="x", sample_input=object(), progress=False)
    with pytest.raises(InvalidName, match="invalid deployment name 'bad/name'"):
        ml.deploy(Const(1.0), name="bad/name", progress=False)
    with pytest.raises(InvalidInput, match="needs name="):
        ml.deploy(Const(1.0), progress=False)
    assert ml.list_models() == []
    # step 2 fails (the model breaks at start): the version registered in step 1 stays
    with pytest.raises(DeploymentFailed) as info:
        ml.deploy(BrokenAtStart(), name="b", sample_input=sample, progress=False, startup_timeout=30)
    assert str(info.value).startswith("registered b:1, then deploying it failed:")
    assert "b:1 stays in the registry" in str(info.value)
    assert ml.get_model("b:1").version == 1 and ml.list_deployments() == []
    # a failed update after registering: the new version stays, the old revision serves
    d = ml.deploy(Const(1.0), name="c", sample_input=sample, progress=False)
    try:
        with pytest.raises(DeploymentFailed, match="registered c:2, then updating the deployment failed"):
            d.update(BrokenAtStart(), sample_input=sample, progress=False)
        assert ml.get_model("c:2").version == 2 and d.predict([[0, 0]]) == [1.0]
    finally:
        d.delete()
    # register-only arguments with a reference are a mistake, said so
    with pytest.raises(InvalidInput, match="sample_input describes a model to register"):
        ml.deploy("b:1", sample_input=sample, progress=False)


def test_magic_and_cli_register_and_deploy_in_one_command(sqlite_registry, tmp_path, iris, trained):
    from IPython.core.interactiveshell import InteractiveShell

    sh = InteractiveShell.instance()
    sh.run_line_magic("load_ext", "mlops_lab")
    sh.user_ns.update(model=Const(3.0), X=np.zeros((4, 2)))
    d = sh.run_line_magic("deploy", "model --name viamagic --sample X")
    try:
        assert d.registered.ref == "viamagic:1" and d.predict([[0, 0]]) == [3.0]
        sh.user_ns["model2"] = Const(4.0)
        d2 = sh.run_line_magic("update", "viamagic model2 --sample X")
        assert d2.registered.ref == "viamagic:2" and d2.predict([[0, 0]]) == [4.0]
    finally:
        d.delete()
    # the CLI takes a model file (a pickle of a scikit-learn model, as pipelines write them)
    (tmp_path / "model.pkl").write_bytes(pickle.dumps(trained))
    out = subprocess.run([sys.executable, "-m", "mlops_lab.cli", "deploy", str(tmp_path / "model.pkl"), "--name", "fromfile", "--json"],
                         capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    try:
        assert doc["registered"] == "fromfile:1" and doc["models"][0]["version"] == 1
        X, _ = iris
        assert ml.get_deployment("fromfile").predict(X.iloc[:2].to_numpy()) == trained.predict(X.iloc[:2].to_numpy()).tolist()
    finally:
        ml.get_deployment("fromfile").delete()


def test_a_wrong_setting_registers_nothing(sqlite_registry):
    with pytest.raises(InvalidInput, match="workers must be at least 1"):
        ml.deploy(Const(1.0), name="w", sample_input=np.zeros((2, 2)), workers=0, progress=False)
    with pytest.raises(InvalidInput, match="unknown collect setting"):
        ml.deploy(Const(1.0), name="w", collect={"nope": 1}, progress=False)
    assert ml.list_models() == []
