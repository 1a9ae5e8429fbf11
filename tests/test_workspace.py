"""One settings object, built once and passed down: a workspace's calls, and the objects read from
it, act on its own database and stores whatever the environment says later."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

import mlops_lab as ml
from mlops_lab.settings import INTERNAL_VARIABLES, VARIABLES, Settings, markdown_table
from mlops_lab.workspace import Workspace

ROOT = Path(__file__).resolve().parents[1]


def test_settings_come_from_arguments_then_environment_then_the_config_file(tmp_path):
    home = tmp_path / "h"
    home.mkdir()
    (home / "config.toml").write_text('db = "sqlite:///from-file.db"\nartifacts = "blobs"\ncollection = "/srv/c"\n')
    env = {"MLOPS_LAB_HOME": str(home), "MLOPS_LAB_ARTIFACTS": "s3://team-bucket/models",
           "AWS_ENDPOINT_URL": "http://127.0.0.1:9"}
    s = Settings.load(db="sqlite:///arg.db", env=env)
    assert s.home == home.resolve()
    assert s.db == "sqlite:///arg.db" and s.sources["db"] == "argument"
    assert s.artifacts == "s3://team-bucket/models" and s.sources["artifacts"] == "MLOPS_LAB_ARTIFACTS"
    assert s.collection == "/srv/c" and s.sources["collection"].endswith("config.toml")
    assert s.s3_endpoint_url == "http://127.0.0.1:9" and s.sources["s3_endpoint_url"] == "AWS_ENDPOINT_URL"
    # A relative folder in the file is the home folder's; the file's value when nothing else is set
    s = Settings.load(env={"MLOPS_LAB_HOME": str(home)})
    assert s.artifacts == str(home.resolve() / "blobs") and s.db == "sqlite:///from-file.db"
    # Defaults under the home folder, and a child process gets exactly the same settings
    bare = Settings.load(home=tmp_path / "other", env={})
    assert bare.db == f"sqlite:///{(tmp_path / 'other').resolve() / 'registry.db'}"
    assert bare.artifacts == str((tmp_path / "other").resolve() / "artifacts")
    assert Settings.load(env=bare.to_env()) == bare


def test_a_bad_config_file_is_one_line_naming_the_file_and_the_key(tmp_path):
    home = tmp_path / "h"
    home.mkdir()
    (home / "config.toml").write_text('artefacts = "x"\n')
    with pytest.raises(ml.InvalidInput, match=r"config\.toml has unknown key\(s\) artefacts") as info:
        Settings.load(home=home, env={})
    assert "artifacts" in info.value.hint
    (home / "config.toml").write_text('db = \n')
    with pytest.raises(ml.InvalidInput, match=r"config\.toml cannot be read"):
        Settings.load(home=home, env={})
    # An argument for every key needs no file: it is not read at all
    assert Settings.load(home=home, db="sqlite://", artifacts="a", collection="c", s3_endpoint_url="http://x",
                         env={}).db == "sqlite://"


def test_two_workspaces_and_the_default_never_mix(tmp_path, monkeypatch, iris):
    """Given the environment naming a third home, when A and B register models of the same name,
    then each lists, loads and deletes its own, and a version read from A loads from A later."""
    from sklearn.dummy import DummyClassifier

    X, y = iris
    a, b = Workspace(home=tmp_path / "a"), Workspace(home=tmp_path / "b")
    one = DummyClassifier(strategy="constant", constant=1).fit(X, y)
    two = DummyClassifier(strategy="constant", constant=2).fit(X, y)
    mv_a = a.register_model(one, "m", sample_input=X.iloc[:3])
    b.register_model(two, "m")
    b.register_model(two, "m")
    assert [v.ref for v in a.search_model_versions(name="m")] == ["m:1"]
    assert [v.ref for v in b.search_model_versions(name="m")] == ["m:2", "m:1"]
    assert ml.list_models() == []  # the default workspace (the environment's) has none
    monkeypatch.setenv("MLOPS_LAB_HOME", str(tmp_path / "b"))  # the environment changes later...
    assert int(mv_a.load().predict(X.iloc[:2])[0]) == 1  # ...the version still loads from A
    assert int(a.load_model("m:1").predict(X.iloc[:1])[0]) == 1
    assert int(ml.load_model("m:2").predict(X.iloc[:1])[0]) == 2  # and the default follows it
    assert a.delete_model("m") == ["m:1"]
    assert [v.ref for v in b.search_model_versions(name="m")] == ["m:2", "m:1"]
    assert a.registry.home == (tmp_path / "a").resolve() and a.list_models() == []
    # A workspace's methods are the public functions: same signature and documentation
    assert a.register_model.__doc__ == ml.register_model.__doc__
    assert "sample_input" in str(__import__("inspect").signature(a.register_model))
    a.close()
    b.close()


def test_a_deployment_read_from_a_workspace_acts_on_it(tmp_path, monkeypatch, iris, trained):
    X, _ = iris
    ws = Workspace(home=tmp_path / "team")
    ws.register_model(trained, "iris", sample_input=X.iloc[:3])
    d = ws.deploy("iris:1", name="svc", progress=False)
    try:
        monkeypatch.setenv("MLOPS_LAB_HOME", str(tmp_path / "elsewhere"))
        assert ml.list_deployments() == []
        assert d.predict(X.iloc[:2]) is not None
        ws.register_model(trained, "iris", sample_input=X.iloc[:3])
        d.update("iris:2", progress=False)
        assert d.models[0]["version"] == 2 and d.status().healthy
        assert [x.name for x in ws.list_deployments()] == ["svc"]
        assert ws.get_model("iris:2").deployments == ["svc"]
        # What its servers collect lands in the workspace's collection store
        assert Path(ws.settings.collection).is_relative_to(tmp_path / "team")
    finally:
        d.delete()
    assert ws.list_deployments() == []
    ws.close()


def test_every_variable_the_code_reads_is_in_the_table_and_in_readme():
    """The table of variables is complete: no MLOPS_LAB_* name in the package is missing from it."""
    named = set()
    for path in (ROOT / "mlops_lab").rglob("*.py"):
        named |= set(re.findall(r"\bMLOPS_LAB_[A-Z0-9_]+\b(?!\.json)", path.read_text()))
    known = {var for var, _ in VARIABLES.values()} | set(INTERNAL_VARIABLES)
    assert named - known == set(), "document these in mlops_lab/settings.py"
    assert markdown_table() in (ROOT / "README.md").read_text(), "README's settings table is not markdown_table()"


def test_the_cli_builds_its_workspace_from_its_options(tmp_path, capsys, monkeypatch):
    from mlops_lab.cli import main

    monkeypatch.setenv("MLOPS_LAB_DB", f"sqlite:///{tmp_path / 'env.db'}")
    assert main(["config", "--json", "--home", str(tmp_path / "cli"), "--artifacts", "s3://b/p"]) == 0
    rows = {r["setting"]: r for r in __import__("json").loads(capsys.readouterr().out)}
    assert rows["home"]["value"] == str((tmp_path / "cli").resolve()) and rows["home"]["from"] == "argument"
    assert rows["artifacts"]["value"] == "s3://b/p" and rows["db"]["from"] == "MLOPS_LAB_DB"
    assert main(["models", "--home", str(tmp_path / "cli"), "--db", f"sqlite:///{tmp_path / 'cli.db'}"]) == 0
    assert capsys.readouterr().out.strip() == "no models yet"
    assert (tmp_path / "cli.db").exists() and not (tmp_path / "env.db").exists()
    assert os.environ["MLOPS_LAB_DB"].endswith("env.db")
    # A password in the database URL is never shown
    assert main(["config", "--home", str(tmp_path / "cli"), "--db", "postgresql+psycopg://ml:s3cret@db/reg"]) == 0
    shown = capsys.readouterr().out
    assert "s3cret" not in shown and "postgresql+psycopg://ml:***@db/reg" in shown
    assert "s3cret" not in repr(Workspace(home=tmp_path / "cli", db="postgresql+psycopg://ml:s3cret@db/reg"))


@pytest.mark.s3
def test_a_collection_store_that_cannot_be_written_is_refused_in_one_line(tmp_path, s3_server, monkeypatch, iris, trained):
    """A collection store in a missing bucket, or with refused credentials: a deployment says so
    in one line before anything starts, a read says so too, and the registry is untouched."""
    for k, v in s3_server.env().items():
        monkeypatch.setenv(k, v)
    X, _ = iris
    ws = Workspace(home=tmp_path / "h", collection="s3://no-such-bucket/collected")
    ws.register_model(trained, "iris", sample_input=X.iloc[:3])
    with pytest.raises(ml.StorageError, match=r"collection store s3://no-such-bucket/collected: bucket 'no-such-bucket' "
                                              r"does not exist at http://127\.0\.0\.1") as info:
        ws.deploy("iris:1", name="svc", progress=False)
    assert "MLOPS_LAB_COLLECTION" in info.value.hint and "\n" not in str(info.value)
    assert ws.list_deployments() == [] and [v.ref for v in ws.search_model_versions()] == ["iris:1"]
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong")
    other = Workspace(home=tmp_path / "h", collection=f"s3://{s3_server.bucket}/collected")
    with pytest.raises(ml.StorageError, match="refused the credentials") as info:
        other.deploy("iris:1", name="svc", progress=False)
    assert "\n" not in str(info.value) and other.list_deployments() == []
    with pytest.raises(ml.StorageError, match=f"s3://{s3_server.bucket}/collected/svc.*refused the credentials"):
        other.collected_data("svc")
    # Without collection the same deployment starts: only collection needs the store
    d = ws.deploy("iris:1", name="svc", collect=False, progress=False)
    try:
        assert d.status().healthy
    finally:
        d.delete()
    ws.close()
    other.close()


def test_an_unknown_collection_store_scheme_is_refused_by_name(tmp_path, iris, trained):
    X, _ = iris
    ws = Workspace(home=tmp_path / "h", collection="gs://bucket/collected")
    ws.register_model(trained, "iris", sample_input=X.iloc[:3])
    with pytest.raises(ml.InvalidInput, match=r"unknown collection store 'gs://bucket/collected': scheme 'gs'") as info:
        ws.deploy("iris:1", name="svc", progress=False)
    assert "s3://bucket/prefix" in info.value.hint and ws.list_deployments() == []
    with pytest.raises(ml.InvalidInput, match="unknown collection store"):
        ws.collected_data("svc")
    ws.close()

