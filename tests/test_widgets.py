"""The ipywidgets panels, driven without a browser: set the widgets' values, click their buttons,
read what they render. Deployments are real local servers."""

from __future__ import annotations

import json
import time

import pytest

pytest.importorskip("ipywidgets")

import mlops_lab as ml  # noqa: E402
from mlops_lab.widgets import DeploymentPanel, MonitorPanel, RegistryPanel  # noqa: E402


@pytest.fixture
def two_models(sqlite_registry, iris, trained):
    X, _ = iris
    ml.register_model(trained, "iris", tags={"team": "growth"}, sample_input=X.iloc[:3], baseline=X)
    ml.register_model(trained, "iris", tags={"team": "risk"}, sample_input=X.iloc[:3])
    ml.register_model(trained, "churn", sample_input=X.iloc[:3])
    yield X
    for d in ml.list_deployments():
        d.delete()


def test_registry_panel_lists_filters_and_shows_a_version(two_models):
    # Given three versions, when the panel opens, then every version is in the table and the list
    p = RegistryPanel()
    assert list(p.versions.options) == ["churn:1", "iris:2", "iris:1"]
    assert "iris:2" in p.table.value and "team=risk" in p.table.value
    # When filtering by name (a substring) and by tag, then only the matches remain
    p.name_filter.value = "ir"
    assert list(p.versions.options) == ["iris:2", "iris:1"]
    p.tag_filter.value = "team=growth"
    assert list(p.versions.options) == ["iris:1"]
    p.tag_filter.value = "team=nobody"
    assert list(p.versions.options) == [] and "No model versions match this filter" in p.table.value
    p.tag_filter.value = ""
    # When a version is selected, then its signature and lineage show
    p.versions.value = "iris:1"
    assert "iris:1" in p.details.value and "sepal length (cm)" in p.details.value
    p.close()


def test_registry_panel_empty_state_says_what_to_do(sqlite_registry):
    p = RegistryPanel()
    assert "%register_model" in p.table.value and p.versions.options == ()
    p.close()


def test_registry_panel_sets_an_alias_and_deploys(two_models):
    X = two_models
    p = RegistryPanel()
    # Set alias without a selection: one line, nothing raised
    p.versions.value = None
    p.alias_button.click()
    assert "Select a version" in p.message.value
    p.versions.value = "iris:1"
    p.alias.value = "production"
    p.alias_button.click()
    assert ml.get_model("iris@production").version == 1
    assert "production" in p.table.value
    # An invalid alias is one line in the panel and changes nothing
    p.alias.value = "not valid!"
    p.alias_button.click()
    assert "alias" in p.message.value.lower() and ml.get_model("iris@production").version == 1
    # Deploy: a real server that answers
    p.deploy_name.value = "panel-svc"
    p.deploy_button.click()
    assert p.deployment is not None and p.deployment.name == "panel-svc"
    assert p.deployment.predict(X.iloc[:2]) == [0, 0]
    assert "panel-svc" in p.table.value  # the "deployed in" column
    p.close()


def test_deployment_panel_status_request_update_rollback_delete(two_models):
    X = two_models
    ml.deploy("iris:1", name="svc")
    p = DeploymentPanel(refresh=None)
    assert p.selected.options == ("svc",)
    assert "mlops-lab-badge" in p.table.value and ">healthy<" in p.table.value
    # Send a test request and see the answer
    p.request.value = json.dumps({"data": X.iloc[:3].to_dict(orient="records")})
    p.send_button.click()
    assert p.response.value.startswith("<pre>"), (p.response.value, p.message.value)
    assert json.loads(p.response.value[5:-6]) == [0, 0, 0]
    # A malformed request body is one line naming the fault, not a traceback
    p.request.value = "{not json"
    p.send_button.click()
    assert "not JSON" in p.message.value
    p.request.value = json.dumps({"data": [{"sepal length (cm)": 1.0}]})
    p.send_button.click()
    assert "sepal width (cm)" in p.message.value
    # A shadow: ticked, the version runs beside the serving ones on a copy of the requests
    p.update_ref.value = "iris:2"
    p.shadow.value = True
    p.update_button.click()
    assert "iris:2 (shadow of 100%)" in p.message.value and "(shadow of 100%)" in p.table.value, p.message.value
    p.update_ref.value = "iris:1"
    p.update_button.click()  # a version that serves cannot be its own shadow: one line
    assert "iris:1 serves route &#x27;iris&#x27; of &#x27;svc&#x27; already" in p.message.value  # (HTML-escaped)
    p.shadow.value = False
    ml.delete_shadow("svc", progress=False)
    # Update as a canary, then promote
    p.update_ref.value = "iris:2"
    p.traffic.value = 20
    p.update_button.click()
    assert "revision 4" in p.message.value, p.message.value  # after the shadow's two
    assert [(m["version"], m["traffic"]) for m in ml.get_deployment("svc").models] == [(1, 80), (2, 20)]
    assert "(20%)" in p.table.value
    p.promote_button.click()
    assert [m["version"] for m in ml.get_deployment("svc").models] == [2]
    # Roll back
    p.rollback_button.click()
    assert [(m["version"], m["traffic"]) for m in ml.get_deployment("svc").models] == [(1, 80), (2, 20)]
    # Restart: same revision, same address, a new supervisor
    before = ml.get_deployment("svc")
    pid = before.status().details["supervisor_pid"]
    p.restart_button.click()
    assert f"svc: restart done, revision {before.revision}" in p.message.value, p.message.value
    after = ml.get_deployment("svc")
    assert after.url == before.url and after.status().healthy and after.status().details["supervisor_pid"] != pid
    # Update to a version that does not exist: one line, the deployment keeps serving
    before = ml.get_deployment("svc").revision
    p.update_ref.value = "iris:9"
    p.traffic.value = 100
    p.update_button.click()
    assert "iris" in p.message.value and "9" in p.message.value
    assert ml.get_deployment("svc").revision == before
    # Delete asks first; cancel keeps it, confirm deletes it
    p.delete_button.click()
    assert p.confirm_button.layout.display == "" and "Delete svc?" in p.message.value
    p.cancel_button.click()
    assert p.confirm_button.layout.display == "none"
    assert ml.get_deployment("svc").status().healthy
    p.delete_button.click()
    p.confirm_button.click()
    assert [d.name for d in ml.list_deployments()] == []
    assert p.selected.options == () and "No deployments yet" in p.table.value
    p.close()


def test_panels_refresh_in_the_background_and_stop_when_closed(two_models):
    # Given a panel refreshing every 0.2 s, when a deployment appears, then it shows without a call
    p = DeploymentPanel(refresh=0.2)
    assert p.refreshing and "No deployments yet" in p.table.value
    ml.deploy("churn:1", name="bg")
    deadline = time.time() + 10
    while "bg" not in p.table.value and time.time() < deadline:
        time.sleep(0.05)
    assert "bg" in p.table.value
    # When closed, then the thread ends
    p.close()
    assert not p.refreshing


def test_monitor_panel_draws_the_chart_and_changes_window(two_models):
    X = two_models
    d = ml.deploy("iris:1", name="mon")
    for i in range(5):
        d.predict(X.iloc[i : i + 2])
    d.delete()  # flushes collected data
    p = MonitorPanel("mon", since="1h", refresh=None)
    spec = p.chart.to_dict()
    assert spec["title"]["text"] == "Deployment mon"
    (out,) = p.output.outputs
    assert out["output_type"] == "display_data" and "Deployment mon" in json.dumps(out["data"])
    p.window.value = "15min"
    assert p.chart is not None and p.chart.to_dict() != {}
    p.close()


def test_monitor_panel_of_an_unknown_deployment_says_so(sqlite_registry):
    p = MonitorPanel("nope", refresh=None)
    assert "nope" in p.message.value and p.chart is None
    p.close()
