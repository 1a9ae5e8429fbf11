"""The magics in a real IPython shell: they return the core's objects, and errors are one line."""

from __future__ import annotations

import subprocess
import sys

import pytest

IPython = pytest.importorskip("IPython")


@pytest.fixture
def shell(sqlite_registry):
    from IPython.core.interactiveshell import InteractiveShell

    sh = InteractiveShell.instance()
    sh.run_line_magic("load_ext", "mlops_lab")
    yield sh
    import mlops_lab as ml

    for d in ml.list_deployments():
        d.delete()


def test_load_ext_stays_cheap():
    code = (
        "import sys\n"
        "from IPython.core.interactiveshell import InteractiveShell\n"
        "before = set(sys.modules)\n"
        "InteractiveShell.instance().run_line_magic('load_ext', 'mlops_lab')\n"
        "heavy = ['pandas', 'altair', 'docker', 'kubernetes', 'uvicorn', 'starlette', 'sqlalchemy', 'pyarrow']\n"
        "print(','.join(m for m in heavy if m in sys.modules and m not in before))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_register_deploy_update_rollback_undeploy(shell, iris, trained):
    X, _ = iris
    shell.user_ns.update(clf=trained, X=X)
    mv = shell.run_line_magic("register_model", "clf --name iris --tags team=growth --sample X --baseline X")
    assert mv.ref == "iris:1" and mv.tags == {"team": "growth"} and mv.has_baseline
    assert mv.signature["kind"] == "columns"
    shell.run_line_magic("register_model", "clf --name iris")
    assert [m.name for m in shell.run_line_magic("models", "")] == ["iris"]
    assert [v.ref for v in shell.run_line_magic("models", "iris")] == ["iris:2", "iris:1"]
    d = shell.run_line_magic("deploy", "iris:1 --name svc")
    assert d.predict(X.iloc[:2]) == trained.predict(X.iloc[:2]).tolist()
    assert "<table" in d._repr_html_()
    d = shell.run_line_magic("update", "svc iris:2 --traffic 10")
    assert [(m["version"], m["traffic"]) for m in d.models] == [(1, 90), (2, 10)]
    d = shell.run_line_magic("rollback", "svc")
    assert [m["version"] for m in d.models] == [1]
    assert [x.name for x in shell.run_line_magic("deployments", "")] == ["svc"]
    chart = shell.run_line_magic("monitor", "svc --since 1h")
    assert chart.to_dict()["title"]["text"] == "Deployment svc"
    assert shell.run_line_magic("undeploy", "svc") is True


def test_errors_are_one_line_usage_errors(shell):
    from IPython.core.error import UsageError

    with pytest.raises(UsageError, match="no model named 'nope'"):
        shell.run_line_magic("deploy", "nope:1")
    with pytest.raises(UsageError, match="no variable named 'missing'"):
        shell.run_line_magic("register_model", "missing --name x")
    with pytest.raises(UsageError, match="is not KEY=VALUE"):
        shell.user_ns["f"] = lambda x: x
        shell.run_line_magic("register_model", "f --name x --tags oops")
    with pytest.raises(UsageError):
        shell.run_line_magic("deploy", "")  # missing argument: argparse's usage message
    import mlops_lab as ml

    with pytest.raises(ml.ModelNotFound):
        shell.run_line_magic("deploy", "nope:1 --debug")


def test_magics_have_real_help(shell):
    doc = shell.find_line_magic("deploy").__doc__
    assert "--no-auth" in doc and "deployment name" in doc
