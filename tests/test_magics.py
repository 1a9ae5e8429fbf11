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
    # --allow-missing names the columns the model takes missing values in (alone: every column)
    one = shell.run_line_magic("register_model", 'clf --name gaps --sample X --allow-missing "petal length (cm)"')
    assert [c["name"] for c in one.signature["columns"] if c["missing"]] == ["petal length (cm)"]
    every = shell.run_line_magic("register_model", "clf --name gaps --sample X --allow-missing")
    assert all(c["missing"] for c in every.signature["columns"])
    import mlops_lab as ml

    ml.delete_model_version("gaps:1")
    ml.delete_model_version("gaps:2")
    assert [v.ref for v in shell.run_line_magic("models", "iris")] == ["iris:2", "iris:1"]
    d = shell.run_line_magic("deploy", "iris:1 --name svc")
    assert d.predict(X.iloc[:2]) == trained.predict(X.iloc[:2]).tolist()
    assert "<table" in d._repr_html_()
    d = shell.run_line_magic("update", "svc iris:2 --traffic 10")
    assert [(m["version"], m["traffic"]) for m in d.models] == [(1, 90), (2, 10)]
    d = shell.run_line_magic("rollback", "svc")
    assert [m["version"] for m in d.models] == [1]
    r = shell.run_line_magic("restart", "svc")
    assert r.url == d.url and r.revision == d.revision and r.status().healthy
    listing = shell.run_line_magic("deployments", "")
    assert [x.name for x in listing] == ["svc"]
    assert "<td style='text-align:left;padding-right:1em'><b>svc</b></td>" in listing._repr_html_()
    models = shell.run_line_magic("models", "")
    assert "<b>iris</b>" in models._repr_html_() and "<td style='text-align:left;padding-right:1em'>2</td>" in models._repr_html_()
    assert "<b>iris:2</b>" in shell.run_line_magic("models", "iris")._repr_html_()
    chart = shell.run_line_magic("monitor", "svc --since 1h")
    assert chart.to_dict()["title"]["text"] == "Deployment svc"
    assert shell.run_line_magic("undeploy", "svc") is True
    assert "No deployments yet" in shell.run_line_magic("deployments", "")._repr_html_()


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


def _complete(shell, line):
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PendingDeprecationWarning)  # IPython's Completer.complete
        _, found = shell.complete("", line, len(line))
    return found


def test_tab_completes_names_references_deployments_and_options(shell, iris, trained):
    import mlops_lab as ml

    X, _ = iris
    ml.register_model(trained, "iris", sample_input=X.iloc[:2])
    ml.register_model(trained, "iris")
    ml.register_model(trained, "churn")
    ml.set_alias("iris", "production", 1)
    ml.deploy("iris:1", name="svc")
    # Given models and a deployment, then the reference of %deploy completes names, aliases, versions
    assert _complete(shell, "%deploy ir") == ["iris", "iris:", "iris@production"]
    assert _complete(shell, "%deploy iris:") == ["1", "2"]  # IPython replaces the text after ':'
    assert _complete(shell, "%deploy iris@") == ["production"]
    assert _complete(shell, "%deploy --n") == ["--name", "--no-auth"]
    # The first argument of %update is a deployment, the second a reference
    assert _complete(shell, "%update s") == ["svc"]
    assert _complete(shell, "%update svc ch") == ["churn", "churn:"]
    from mlops_lab.magics import complete

    assert complete("update", "%update svc churn ", "", shell) == []  # nothing more to name
    assert _complete(shell, "%rollback ") == ["svc"]
    assert _complete(shell, "%monitor s") == ["svc"]
    assert _complete(shell, "%models c") == ["churn"]
    shell.user_ns["clf_var"] = trained
    assert "clf_var" in _complete(shell, "%register_model clf")


def test_tab_completion_never_raises(shell, monkeypatch):
    from mlops_lab.deployers import api

    def broken():
        raise RuntimeError("registry unreachable")

    from types import SimpleNamespace

    from mlops_lab.magics import _completer

    monkeypatch.setattr(api, "list_deployments", broken)
    event = SimpleNamespace(text_until_cursor="%rollback s", symbol="s")
    assert _completer("rollback")(shell, event) == []
    with pytest.raises(RuntimeError):  # the hook is what stands between the error and the tab key
        from mlops_lab.magics import complete

        complete("rollback", "%rollback s", "s", shell)


def test_deploy_shows_progress_and_monitor_refresh_returns_a_live_panel(shell, iris, trained, capfd):
    pytest.importorskip("ipywidgets")
    from IPython.core.error import UsageError

    X, _ = iris
    shell.user_ns.update(clf=trained, X=X)
    shell.run_line_magic("register_model", "clf --name iris --sample X")
    shell.run_line_magic("deploy", "iris:1 --name svc")
    err = capfd.readouterr().err
    assert "deploying iris:1 as 'svc'" in err and "ready at http://127.0.0.1:" in err
    panel = shell.run_line_magic("monitor", "svc --refresh 30 --since 1h")
    try:
        assert type(panel).__name__ == "MonitorPanel" and panel.refreshing and panel.window.value == "1h"
        assert panel.chart.to_dict()["title"]["text"] == "Deployment svc"
    finally:
        panel.close()
    assert not panel.refreshing
    with pytest.raises(UsageError, match="no deployment named 'nope'"):
        shell.run_line_magic("monitor", "nope --refresh 5")
    with pytest.raises(UsageError, match="at least 1"):
        shell.run_line_magic("monitor", "svc --refresh 0.1")


def test_a_shadow_from_magics_update_compare_chart_undeploy_shadow(shell, iris, trained):
    import time

    import mlops_lab as ml

    X, _ = iris
    shell.user_ns.update(clf=trained, X=X)
    shell.run_line_magic("register_model", "clf --name iris --sample X")
    shell.run_line_magic("register_model", "clf --name iris --sample X")
    shell.run_line_magic("deploy", "iris:1 --name svc")
    d = shell.run_line_magic("update", "svc iris:2 --shadow 0.5")
    assert d.shadows == [{"name": "iris", "version": 2, "traffic": 0, "route": "iris", "shadow": 0.5}]
    assert "iris:2 (shadow of 50%)" in d._repr_html_()
    for _ in range(20):
        d.predict(X.iloc[:5])
    deadline = time.monotonic() + 30
    while (ml.collected_data("svc").empty or ml.collected_data("svc", shadow=True).empty) and time.monotonic() < deadline:
        time.sleep(0.3)
    chart = shell.run_line_magic("compare", "svc --chart")
    assert "image/png" in chart._repr_mimebundle_() and "hconcat" in chart.vegalite()
    readout = shell.run_line_magic("compare", "svc")
    assert readout.agreement == 1.0 and "iris:2 agrees with iris:1 on 100.0%" in readout._repr_html_()
    d = shell.run_line_magic("undeploy", "svc --shadow")
    assert d.shadows == [] and [m["version"] for m in d.models] == [1]
    from IPython.core.error import UsageError

    with pytest.raises(UsageError, match="deployment 'svc' has no shadow"):
        shell.run_line_magic("undeploy", "svc --shadow")
    shell.run_line_magic("update", "svc iris:2 --shadow")
    d = shell.run_line_magic("promote", "svc")
    assert [(m["version"], m["traffic"]) for m in d.models] == [(2, 100)] and d.shadows == []
