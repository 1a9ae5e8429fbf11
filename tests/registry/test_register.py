"""Registering, finding and loading models: what a user does with the registry.

Every test here runs on SQLite and on PostgreSQL (the ``backend`` fixture).
"""

from __future__ import annotations

import pickle
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import mlops_lab as ml
from mlops_lab import (
    AliasNotFound,
    InvalidInput,
    InvalidModel,
    InvalidName,
    InvalidReference,
    ModelNotFound,
    VersionNotFound,
)


def test_sklearn_round_trip_gives_same_predictions(registry, iris, trained):
    """Given a trained classifier, when registered and loaded back, then it answers the same."""
    X, _ = iris
    mv = ml.register_model(trained, "iris", sample_input=X, description="first try")
    assert (mv.name, mv.version, mv.ref, mv.flavor) == ("iris", 1, "iris:1", "python")

    loaded = ml.load_model("iris:1")
    np.testing.assert_array_equal(loaded.predict(X), trained.predict(X))
    np.testing.assert_allclose(loaded.predict_proba(X), trained.predict_proba(X))
    assert loaded.model.get_params() == trained.get_params()

    got = ml.get_model("iris")
    assert got.description == "first try"
    assert got.signature == {
        "kind": "columns",
        "columns": [{"name": c, "type": "float", "dtype": "float64", "missing": False} for c in X.columns],
    }
    assert len(got.input_example) == 5 and set(got.input_example[0]) == set(X.columns)
    # requirements name the distributions the model's classes come from, pinned
    import sklearn

    assert f"scikit-learn=={sklearn.__version__}" in got.requirements
    assert any(r.startswith("numpy==") for r in got.requirements)


def test_loaded_in_another_process(registry, iris, trained, tmp_path):
    """A model registered here loads in a fresh interpreter (the way a server will load it)."""
    X, _ = iris
    ml.register_model(trained, "iris")
    np.save(tmp_path / "X.npy", X.to_numpy())
    code = textwrap.dedent(
        f"""
        import numpy as np, mlops_lab as ml
        X = np.load({str(tmp_path / 'X.npy')!r})
        print(",".join(map(str, ml.load_model("iris").predict(X))))
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ",".join(map(str, trained.predict(X.to_numpy())))


def test_versions_increment_per_name(registry):
    refs = [ml.register_model(lambda x: x, "a").ref for _ in range(3)]
    refs.append(ml.register_model(lambda x: x, "b").ref)
    assert refs == ["a:1", "a:2", "a:3", "b:1"]
    ml.delete_model_version("a:3")
    # a deleted number is never handed out again
    assert ml.register_model(lambda x: x, "a").version == 4
    assert ml.get_model("a").version == 4


def test_plain_function_and_notebook_class(registry):
    """Objects defined in __main__ (a notebook) are stored by value and load elsewhere."""
    code = textwrap.dedent(
        """
        import mlops_lab as ml
        class Doubler:
            def predict(self, xs):
                return [2 * x for x in xs]
        def add_one(x):
            return x + 1
        class Scorer:
            def predict_proba(self, xs):
                return [[0.25, 0.75] for _ in xs]
        ml.register_model(Doubler(), "doubler")
        ml.register_model(add_one, "add-one")
        ml.register_model(Scorer(), "scorer")
        """
    )
    subprocess.run([sys.executable, "-c", code], check=True)
    assert ml.load_model("doubler").predict([1, 2]) == [2, 4]
    assert ml.load_model("add-one").predict(41) == 42
    assert ml.get_model("add-one").loader["method"] == "__call__"
    assert ml.load_model("scorer").predict([0]) == [[0.25, 0.75]]


def test_object_without_predict_is_refused(registry):
    with pytest.raises(InvalidModel, match="has no predict, predict_proba or __call__"):
        ml.register_model(object(), "nope")
    with pytest.raises(ModelNotFound):
        ml.get_model("nope")


def test_file_models_pickle_and_joblib(registry, iris, trained, tmp_path):
    import joblib

    X, _ = iris
    (tmp_path / "clf.pkl").write_bytes(pickle.dumps(trained))
    joblib.dump(trained, tmp_path / "clf.joblib")
    (tmp_path / "weights.bin").write_bytes(b"\x00\x01")
    a = ml.register_model(tmp_path / "clf.pkl", "from-pickle")
    b = ml.register_model(str(tmp_path / "clf.joblib"), "from-joblib")
    c = ml.register_model(tmp_path / "weights.bin", "opaque")
    assert (a.flavor, a.loader["format"], b.loader["format"], c.loader["format"]) == (
        "file", "pickle", "joblib", "unknown",
    )
    assert a.lineage["source_path"] == str((tmp_path / "clf.pkl").resolve())
    for ref in ("from-pickle", "from-joblib"):
        np.testing.assert_array_equal(ml.load_model(ref).predict(X), trained.predict(X))
    with pytest.raises(InvalidModel, match="does not know how to load a 'unknown' file"):
        ml.load_model("opaque")
    # ... but its bytes are there, checked, for whoever knows what to do with them
    assert (ml.model_path("opaque") / "weights.bin").read_bytes() == b"\x00\x01"


def test_folder_registered_as_is(registry, tmp_path):
    src = tmp_path / "bundle"
    (src / "sub").mkdir(parents=True)
    (src / "config.json").write_text('{"a": 1}')
    (src / "sub" / "weights.bin").write_bytes(bytes(range(256)))
    mv = ml.register_model(src, "bundle")
    assert mv.flavor == "folder"
    assert [f.path for f in mv.files] == ["config.json", "sub/weights.bin"]
    out = ml.download_model("bundle", tmp_path / "out")
    assert (out / "sub" / "weights.bin").read_bytes() == bytes(range(256))
    assert '"name": "bundle"' in (out / "MLOPS_LAB_MODEL.json").read_text()
    with pytest.raises(InvalidModel, match="folder registered as-is"):
        ml.load_model("bundle")


def test_azure_style_scoring_script(registry, tmp_path, trained, iris):
    """A folder plus score.py with init()/run(): init finds its files through AZUREML_MODEL_DIR."""
    X, _ = iris
    src = tmp_path / "svc"
    src.mkdir()
    (src / "clf.pkl").write_bytes(pickle.dumps(trained))
    (src / "score.py").write_text(
        textwrap.dedent(
            """
            import json, os, pickle
            model = None
            def init():
                global model
                with open(os.path.join(os.environ["AZUREML_MODEL_DIR"], "clf.pkl"), "rb") as f:
                    model = pickle.load(f)
            def run(raw):
                data = json.loads(raw)["data"]
                return model.predict(data).tolist()
            """
        )
    )
    mv = ml.register_model(src, "scripted", entry_script="score.py")
    assert mv.flavor == "script" and mv.loader["entry_script"] == "score.py"
    import json

    rows = X.to_numpy()[:7].tolist()
    got = ml.load_model("scripted").predict(json.dumps({"data": rows}))
    assert got == trained.predict(np.array(rows)).tolist()


def test_scoring_script_outside_the_folder_and_bad_scripts(registry, tmp_path):
    model_dir = tmp_path / "m"
    model_dir.mkdir()
    (model_dir / "table.txt").write_text("7")
    script = tmp_path / "entry.py"
    script.write_text(
        "import os\nN = None\ndef init():\n    global N\n"
        "    N = int(open(os.path.join(os.environ['MLOPS_LAB_MODEL_DIR'], 'table.txt')).read())\n"
        "def run(data):\n    return N * data\n"
    )
    ml.register_model(model_dir, "seven", entry_script=script)
    assert ml.load_model("seven").predict(6) == 42

    bad = tmp_path / "bad.py"
    bad.write_text("def init():\n    pass\n")
    with pytest.raises(InvalidModel, match=r"does not define run\(\)"):
        ml.register_model(model_dir, "bad", entry_script=bad)
    bad.write_text("def init(:\n")
    with pytest.raises(InvalidModel, match="syntax error"):
        ml.register_model(model_dir, "bad", entry_script=bad)
    with pytest.raises(InvalidModel, match="no such file or folder"):
        ml.register_model(tmp_path / "missing.pkl", "bad")
    with pytest.raises(ModelNotFound):
        ml.get_model("bad")


def test_signatures_from_each_kind_of_sample(registry):
    import pandas as pd

    df = pd.DataFrame({"age": [31, 40], "city": ["Oslo", "Lima"], "score": [0.5, 1.5], "vip": [True, False]})
    sig = ml.register_model(lambda x: x, "df", sample_input=df).signature
    assert [(c["name"], c["type"]) for c in sig["columns"]] == [
        ("age", "integer"), ("city", "string"), ("score", "float"), ("vip", "boolean"),
    ]
    sig = ml.register_model(lambda x: x, "arr", sample_input=np.zeros((3, 20), dtype=np.float32)).signature
    assert sig == {"kind": "tensor", "dtype": "float32", "shape": [-1, 20]}
    records = [{"age": 31, "income": 10}, {"age": 40, "income": 12.5}]
    sig = ml.register_model(lambda x: x, "rec", sample_input=records).signature
    assert [(c["name"], c["type"]) for c in sig["columns"]] == [("age", "integer"), ("income", "float")]
    assert ml.get_model("rec").input_example == records
    with pytest.raises(InvalidInput, match="different lengths"):
        ml.register_model(lambda x: x, "ragged", sample_input=[[1, 2], [3]])
    with pytest.raises(InvalidInput, match="cannot infer a signature"):
        ml.register_model(lambda x: x, "weird", sample_input=object())


def test_baseline_stored_as_parquet(registry, iris):
    X, _ = iris
    ml.register_model(lambda x: x, "with-baseline", baseline=X)
    back = ml.get_baseline("with-baseline")
    assert list(back.columns) == list(X.columns)
    np.testing.assert_allclose(back.to_numpy(), X.to_numpy())
    ml.register_model(lambda x: x, "no-baseline")
    with pytest.raises(InvalidInput, match="without a baseline"):
        ml.get_baseline("no-baseline")


def test_requirements_override(registry, tmp_path):
    mv = ml.register_model(lambda x: x, "r1", requirements=["scikit-learn==1.5.0", "# comment", ""])
    assert mv.requirements == ["scikit-learn==1.5.0"]
    (tmp_path / "requirements.txt").write_text("numpy>=1.24  # arrays\npandas\n")
    assert ml.register_model(lambda x: x, "r2", requirements=tmp_path / "requirements.txt").requirements == [
        "numpy>=1.24", "pandas",
    ]
    with pytest.raises(InvalidInput, match="is not a file"):
        ml.register_model(lambda x: x, "r3", requirements="nope.txt")


def test_lineage_records_git_and_environment(registry, tmp_path, monkeypatch):
    repo = tmp_path / "repo"
    repo.mkdir()
    env = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@x", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@x"}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    (repo / "train.py").write_text("print(1)\n")
    subprocess.run(["git", "-C", str(repo), "add", "."], check=True)
    subprocess.run(["git", "-C", str(repo), "commit", "-qm", "init"], check=True)
    commit = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    monkeypatch.chdir(repo)

    clean = ml.register_model(lambda x: x, "lin", lineage={"dataset": "s3://bucket/churn.parquet"})
    assert clean.lineage["git_commit"] == commit
    assert clean.lineage["git_dirty"] is False
    assert clean.lineage["dataset"] == "s3://bucket/churn.parquet"
    assert clean.lineage["python_version"] == ".".join(map(str, sys.version_info[:3]))
    for key in ("user", "host", "time"):
        assert clean.lineage[key]
    (repo / "train.py").write_text("print(2)\n")
    assert ml.register_model(lambda x: x, "lin").lineage["git_dirty"] is True
    assert ml.get_model("lin:1").lineage == clean.lineage


def test_tags_change_properties_do_not(registry):
    ml.register_model(lambda x: x, "t", tags={"stage": "dev", "owner": "ann"}, properties={"auc": 0.91})
    mv = ml.set_tags("t:1", {"stage": "prod", "reviewed": True})
    assert mv.tags == {"stage": "prod", "owner": "ann", "reviewed": "True"}
    assert ml.delete_tag("t:1", "owner").tags == {"stage": "prod", "reviewed": "True"}
    assert ml.get_model("t").properties == {"auc": "0.91"}
    assert not hasattr(ml, "set_properties")
    assert ml.set_description("t:1", "calibrated").description == "calibrated"
    with pytest.raises(InvalidName):
        ml.set_tags("t:1", {"": "x"})
    with pytest.raises(InvalidInput, match="has no value"):
        ml.set_tags("t:1", {"k": None})


def test_aliases_set_move_delete(registry):
    for _ in range(3):
        ml.register_model(lambda x: x, "churn")
    assert ml.set_alias("churn", "production", 2).aliases == ["production"]
    assert ml.get_model("churn@production").version == 2
    ml.set_alias("churn", "production", 3)  # move
    assert ml.get_model("churn@production").version == 3
    assert ml.get_model("churn:2").aliases == []
    ml.set_alias("churn", "staging", 3)
    assert ml.get_model("churn:3").aliases == ["production", "staging"]
    assert ml.list_models()[0].aliases == {"production": 3, "staging": 3}
    ml.delete_alias("churn", "staging")
    with pytest.raises(AliasNotFound, match="no alias 'staging'") as info:
        ml.get_model("churn@staging")
    assert "its aliases are 'production'" in str(info.value)
    with pytest.raises(AliasNotFound):
        ml.delete_alias("churn", "staging")
    with pytest.raises(VersionNotFound):
        ml.set_alias("churn", "production", 9)
    with pytest.raises(InvalidName):
        ml.set_alias("churn", "latest", 1)
    # the alias goes with its version
    ml.delete_model_version("churn:3")
    with pytest.raises(AliasNotFound):
        ml.get_model("churn@production")


def test_unknown_references_get_precise_errors(registry):
    ml.register_model(lambda x: x, "churn")
    ml.register_model(lambda x: x, "churn")
    ml.register_model(lambda x: x, "fraud")
    with pytest.raises(ModelNotFound) as info:
        ml.get_model("chrun")
    assert info.value.suggestions == ["churn"]
    assert str(info.value) == "no model named 'chrun' in the registry (did you mean 'churn'?)"
    with pytest.raises(VersionNotFound, match=r"has no version 5 \('churn' has versions 1-2\)"):
        ml.load_model("churn:5")
    with pytest.raises(ModelNotFound) as info:
        ml.get_model("zzzzzz")
    assert info.value.suggestions == []
    with pytest.raises(InvalidReference):
        ml.get_model("churn:v2")
    with pytest.raises(InvalidName):
        ml.register_model(lambda x: x, "../../etc/passwd")
    with pytest.raises(InvalidInput, match="needs an explicit version"):
        ml.delete_model_version("churn")
    assert [m.name for m in ml.list_models()] == ["churn", "fraud"]


def test_list_and_search(registry):
    ml.register_model(lambda x: x, "churn", tags={"team": "growth"}, properties={"data": "2024-01"})
    ml.register_model(lambda x: x, "churn", tags={"team": "growth", "stage": "prod"}, properties={"data": "2024-02"})
    ml.register_model(lambda x: x, "churn-lite", tags={"team": "growth"})
    ml.register_model(lambda x: x, "fraud", tags={"team": "risk", "stage": "prod"})

    models = ml.list_models()
    assert [(m.name, m.versions, m.latest_version) for m in models] == [
        ("churn", 2, 2), ("churn-lite", 1, 1), ("fraud", 1, 1),
    ]
    assert [m.name for m in ml.list_models("LITE")] == ["churn-lite"]

    refs = lambda found: [m.ref for m in found]  # noqa: E731
    assert refs(ml.search_model_versions(tags={"team": "growth"})) == ["churn:2", "churn:1", "churn-lite:1"]
    assert refs(ml.search_model_versions(tags={"stage": "prod"})) == ["churn:2", "fraud:1"]
    assert refs(ml.search_model_versions(tags={"team": "growth", "stage": "prod"})) == ["churn:2"]
    assert refs(ml.search_model_versions(tags={"stage": None})) == ["churn:2", "fraud:1"]
    assert refs(ml.search_model_versions(name="churn")) == ["churn:2", "churn:1"]
    assert refs(ml.search_model_versions(name="churn*")) == ["churn:2", "churn:1", "churn-lite:1"]
    assert refs(ml.search_model_versions(properties={"data": "2024-01"})) == ["churn:1"]
    assert refs(ml.search_model_versions(tags={"team": "nobody"})) == []
    assert refs(ml.search_model_versions(max_results=2)) == ["churn:2", "churn:1"]
    # a name with SQL wildcard characters matches literally
    assert refs(ml.search_model_versions(name="churn_lite")) == []


def test_identical_content_is_stored_once(registry, trained):
    a = ml.register_model(trained, "same")
    b = ml.register_model(trained, "same")
    c = ml.register_model(trained, "other-name")
    assert a.files[0].sha256 == b.files[0].sha256 == c.files[0].sha256
    assert registry.artifacts.digests() == {a.files[0].sha256}


def test_model_version_html_summary(registry, iris, trained):
    X, _ = iris
    mv = ml.register_model(trained, "html", tags={"team": "<b>"}, sample_input=X)
    html = mv._repr_html_()
    assert "html:1" in html and "&lt;b&gt;" in html and "sepal length (cm): float" in html
