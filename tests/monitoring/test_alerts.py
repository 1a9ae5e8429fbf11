"""Alert rules: stored in the registry (schema version 3, migrated in place from versions 1 and 2),
evaluated on what a deployment collected, every firing recorded with its evidence; the CLI's
``check`` exits non-zero when one fires, for a pipeline to gate on."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest
from receiver import Receiver, wait_for

import mlops_lab as ml
from mlops_lab.registry import schema
from mlops_lab.registry.store import Registry

from .conftest import write_traffic


class Summer:
    def predict(self, X):
        return X["a"].to_numpy() + X["b"].to_numpy()


def _frame(rng, n, shift=0.0):
    return pd.DataFrame({"a": rng.normal(shift, 1, n), "b": rng.normal(0, 1, n)})


@pytest.fixture
def svc(backend, collection_store, rng):
    """A live deployment of a model registered with a baseline (on SQLite and PostgreSQL, its
    collected data in a folder or on S3)."""
    base = _frame(rng, 2000)
    ml.register_model(Summer(), "m", sample_input=base.head(), baseline=base)
    d = ml.deploy("m:1", name="svc", progress=False, collect=False)
    yield d, collection_store
    d.delete()


def _traffic(store, rng, n=400, errors=0.0, shift=0.0, name="svc"):
    frame = _frame(rng, n, shift)
    status = np.where(rng.uniform(size=n) < errors, 500, 200)
    return write_traffic(store, name, frame, time.time() - rng.uniform(1, 300, n), "m:1", frame.a + frame.b, status=status)


def test_rules_are_checked_when_set_and_stored_in_the_registry(svc):
    with pytest.raises(ml.InvalidInput, match="unknown alert kind 'errors'"):
        ml.set_alerts("svc", {"errors": 0.1})
    with pytest.raises(ml.InvalidInput, match="the error_rate rule needs a number as its threshold, got 'high'"):
        ml.set_alerts("svc", [{"kind": "error_rate", "threshold": "high"}])
    with pytest.raises(ml.InvalidInput, match="cannot read the duration 'soon'"):
        ml.set_alerts("svc", [{"kind": "error_rate", "threshold": 0.1, "window": "soon"}])
    with pytest.raises(ml.InvalidInput, match="the webhook must be an http:// or https:// URL"):
        ml.set_alerts("svc", {"error_rate": 0.1}, webhook="ftp://x")
    with pytest.raises(ml.DeploymentNotFound):
        ml.set_alerts("svd", {"error_rate": 0.1})
    stored = ml.set_alerts("svc", {"error_rate": 0.05, "drift": 0}, webhook="http://127.0.0.1:9/hook")
    assert stored == [{"kind": "error_rate", "threshold": 0.05, "window": "15min"},
                      {"kind": "drift", "threshold": 0.0, "window": "1h"}]
    # another process sees the same rules
    proc = subprocess.run([sys.executable, "-c", "import json, mlops_lab as ml; print(json.dumps(ml.get_alerts('svc')))"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == {"rules": stored, "webhook": "http://127.0.0.1:9/hook", "events": []}


def test_each_kind_fires_on_what_was_collected_and_the_firing_is_recorded(svc, rng):
    _, store = svc
    ids = _traffic(store, rng, errors=0.10, shift=1.5)
    ml.record_feedback("svc", ids[:50], [0.0] * 50)  # the model is never right about these
    ml.set_alerts("svc", [{"kind": "error_rate", "threshold": 0.05}, {"kind": "latency_p99_ms", "threshold": 100},
                          {"kind": "accuracy", "threshold": 0.9}, {"kind": "drift", "threshold": 0},
                          {"kind": "dropped_rows", "threshold": 0}])
    result = ml.check_alerts("svc")
    by_kind = {r["rule"]["kind"]: r for r in result.results}
    assert by_kind["error_rate"]["fired"] and 0.05 < by_kind["error_rate"]["value"] < 0.2
    assert by_kind["error_rate"]["evidence"]["requests"] == 400
    assert not by_kind["latency_p99_ms"]["fired"] and by_kind["latency_p99_ms"]["value"] == pytest.approx(8.0)
    assert by_kind["accuracy"]["fired"] and by_kind["accuracy"]["value"] == 0.0
    assert by_kind["drift"]["fired"] and "a" in by_kind["drift"]["evidence"]["drifted"]
    assert "b" not in by_kind["drift"]["evidence"]["drifted"]
    assert not by_kind["dropped_rows"]["fired"] and by_kind["dropped_rows"]["value"] == 0
    assert not result.ok and {r["rule"]["kind"] for r in result.firings} == {"error_rate", "accuracy", "drift"}
    # traffic older than a rule's window does not count
    ml.set_alerts("svc", [{"kind": "error_rate", "threshold": 0.05, "window": "1s"}])
    assert ml.check_alerts("svc", record=False).results[0]["value"] is None
    events = ml.get_alerts("svc")["events"]
    assert sorted(e["rule"]["kind"] for e in events) == ["accuracy", "drift", "error_rate"]
    drift_event = next(e for e in events if e["rule"]["kind"] == "drift")
    assert drift_event["evidence"]["drifted"] == by_kind["drift"]["evidence"]["drifted"]
    assert "FIRING error_rate over 15min" in str(result)


def test_the_cli_exits_non_zero_on_a_firing_rule_and_zero_when_all_hold(svc, rng):
    _, store = svc
    _traffic(store, rng, errors=0.0)
    ml.set_alerts("svc", {"error_rate": 0.05, "drift": 0})

    def check():
        return subprocess.run([sys.executable, "-m", "mlops_lab.cli", "check", "svc", "--json"], capture_output=True,
                              text=True, timeout=120)

    proc = check()
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert json.loads(proc.stdout)["ok"] is True
    assert ml.get_alerts("svc")["events"] == []
    _traffic(store, rng, n=100, errors=1.0)  # every one of these failed
    proc = check()
    assert proc.returncode == 12, proc.stdout + proc.stderr
    fired = [r["rule"]["kind"] for r in json.loads(proc.stdout)["results"] if r["fired"]]
    assert fired == ["error_rate"]
    proc = subprocess.run([sys.executable, "-m", "mlops_lab.cli", "check", "nothing"], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode != 0 and proc.returncode != 12 and "nothing" in proc.stderr


def test_a_firing_is_sent_once_across_restarts_and_sent_as_resolved_when_the_rule_holds_again(svc, rng):
    """The watcher a deployment's supervisor (or ``mlops-lab watch``) makes when it starts
    (``alerts.Watcher``, as ``watch.watch_alerts`` makes it): a new one is what a restarted
    supervisor runs. Its ticks are given the time, to move a rule's window past the traffic. The
    deployment is a record only (of a Kubernetes deployment, whose rules the home's ``mlops-lab
    watch`` would evaluate; none runs here), so that no supervisor's watcher evaluates them too."""
    from mlops_lab.monitoring.alerts import Watcher, recent_firings
    from mlops_lab.workspace import current_registry

    _, store = svc
    reg = current_registry()
    reg.create_deployment("rec", "kubernetes", [{"name": "m", "version": 1, "traffic": 100}], status="healthy")
    _traffic(store, rng, errors=0.5, name="rec")  # within the last 5 minutes
    hook = Receiver()
    try:
        ml.set_alerts("rec", [{"kind": "error_rate", "threshold": 0.05, "window": "10min"}], webhook=hook.url)
        # a firing only check_alerts recorded (a pipeline's check) was never sent: the watcher sends it
        assert not ml.check_alerts("rec").ok
        now = time.time()
        (fired,) = Watcher(reg, "rec").tick(now)
        assert wait_for(lambda: len(hook.got) == 1, 20)
        assert hook.got[0]["status"] == "firing" and hook.got[0]["id"] == fired["id"]
        assert wait_for(lambda: ml.get_alerts("rec")["events"][0]["delivery"].get("status") == "delivered", 10)
        assert not ml.check_alerts("rec").ok  # a pipeline checks again: a newer firing, not sent
        # restarted, with the rule still firing: nothing recorded or sent again
        again = Watcher(reg, "rec")
        assert again.tick(now + 1) == [] and again.tick(now + 2) == []
        badge = recent_firings(reg, "rec")  # the sidebar's badge: one rule firing, its latest firing
        assert (badge["count"], badge["firings"]) == (1, 3) and badge["latest"]["id"] == fired["id"] + 1
        assert badge["resolved"] == []
        # the window has moved past the failed requests: the rule holds again
        (resolved,) = again.tick(now + 3600)
        assert wait_for(lambda: len(hook.got) == 2, 20)
        body = hook.got[1]
        assert (body["status"], body["id"], body["rule"]["kind"], body["value"]) == ("resolved", resolved["id"], "error_rate", None)
        assert [e["status"] for e in ml.get_alerts("rec")["events"]] == ["resolved", "firing", "firing", "firing"]
        # resolved stays resolved, across a restart too
        assert again.tick(now + 3601) == [] and Watcher(reg, "rec").tick(now + 3602) == []
        time.sleep(0.5)
        assert len(hook.got) == 2
        badge = recent_firings(reg, "rec")  # resolved: no rule firing, so no badge; the firings still counted
        assert (badge["count"], badge["firings"], badge["latest"]) == (0, 3, None)
        assert [(r["id"], r["rule"]["kind"]) for r in badge["resolved"]] == [(resolved["id"], "error_rate")]
        proc = subprocess.run([sys.executable, "-m", "mlops_lab.cli", "alerts", "rec"], capture_output=True, text=True,
                              timeout=60)
        assert proc.returncode == 0 and "resolved error_rate = None (delivered)" in proc.stdout, proc.stdout + proc.stderr
    finally:
        hook.close()


def test_a_version_1_registry_is_migrated_and_deleting_a_deployment_removes_its_alerts(tmp_path, rng):
    reg = Registry(tmp_path / "h")
    reg.close()
    # as the previous release left it: no alert tables, schema version 1
    import sqlite3

    con = sqlite3.connect(tmp_path / "h" / "registry.db")
    con.executescript("DROP TABLE alert_events; DROP TABLE alert_rules; UPDATE mlops_lab_schema SET version = 1;")
    con.close()
    with ml.Workspace(home=tmp_path / "h", db=f"sqlite:///{tmp_path / 'h' / 'registry.db'}").activate():
        from mlops_lab.workspace import current_registry

        assert current_registry().schema_version == schema.SCHEMA_VERSION == 3
        ml.register_model(Summer(), "m", sample_input=_frame(rng, 5))
        d = ml.deploy("m:1", name="old", progress=False, collect=False)
        ml.set_alerts("old", {"error_rate": 0.1})
        current_registry().add_alert_event("old", {"kind": "error_rate"}, 0.5, {})
        d.delete()
        assert current_registry().alert_events("old") == [] and current_registry().alert_rules("old") == ([], None)


def test_a_version_2_registry_is_migrated_and_its_events_read_as_firings(backend, rng):
    from mlops_lab.workspace import close_defaults, current_registry

    reg = current_registry()
    ml.register_model(Summer(), "m", sample_input=_frame(rng, 5))
    reg.create_deployment("rec", "kubernetes", [{"name": "m", "version": 1, "traffic": 100}], status="healthy")
    reg.add_alert_event("rec", {"kind": "error_rate"}, 0.5, {})
    # as the previous release left it: events without a status, schema version 2
    with reg.engine.begin() as conn:
        conn.exec_driver_sql("ALTER TABLE alert_events DROP COLUMN status")
        conn.exec_driver_sql("UPDATE mlops_lab_schema SET version = 2")
    close_defaults()
    reg = current_registry()
    assert reg.schema_version == schema.SCHEMA_VERSION == 3
    (event,) = reg.alert_events("rec")
    assert event["status"] == "firing" and event["value"] == 0.5
    reg.add_alert_event("rec", {"kind": "error_rate"}, None, {}, status="resolved")
    assert [e["status"] for e in reg.alert_events("rec")] == ["resolved", "firing"]


def _send(d, frame) -> None:
    import httpx

    with httpx.Client(headers={"Authorization": f"Bearer {d.keys['primary']}"}) as http:
        for i in range(0, len(frame), 4):
            r = http.post(f"{d.url}/score", json={"data": frame.iloc[i:i + 4].to_dict("records")})
            assert r.status_code == 200, r.text


def test_the_supervisor_sends_a_drifted_deployments_firing_to_the_webhook_and_not_an_undrifted_ones(sqlite_registry, rng):
    base = _frame(rng, 2000)
    ml.register_model(Summer(), "m", sample_input=base.head(), baseline=base)
    drifty = ml.deploy("m:1", name="drifty", progress=False)
    calm = ml.deploy("m:1", name="calm", progress=False)
    hook = Receiver()
    try:
        _send(drifty, _frame(rng, 400, shift=1.5))
        _send(calm, _frame(rng, 400))
        assert wait_for(lambda: len(ml.collected_data("drifty")) == 400 and len(ml.collected_data("calm")) == 400, 30)
        for name in ("drifty", "calm"):
            ml.set_alerts(name, {"drift": 0}, webhook=hook.url, every="1s")
        assert wait_for(lambda: hook.got, 40), "no firing reached the webhook"
        time.sleep(5)  # several more evaluations of both
        assert [b["deployment"] for b in hook.got] == ["drifty"]  # once: it keeps firing, it is not sent again
        body = hook.got[0]
        assert body["rule"] == {"kind": "drift", "threshold": 0.0, "window": "1h"} and "a" in body["evidence"]["drifted"]
        (event,) = ml.get_alerts("drifty")["events"]
        assert event["id"] == body["id"] and event["delivery"]["status"] == "delivered"
        assert ml.get_alerts("calm")["events"] == []
    finally:
        hook.close()
        drifty.delete()
        calm.delete()


def test_a_webhook_that_is_down_then_up_gets_the_firing_after_retries(sqlite_registry, rng):
    import socket

    base = _frame(rng, 500)
    ml.register_model(Summer(), "m", sample_input=base.head(), baseline=base)
    d = ml.deploy("m:1", name="flaky", progress=False)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens there yet
    hook = None
    try:
        _send(d, _frame(rng, 40))
        assert wait_for(lambda: len(ml.collected_data("flaky")) == 40, 30)
        ml.set_alerts("flaky", {"latency_p99_ms": 0}, webhook=f"http://127.0.0.1:{port}/hook", every="1s")
        assert wait_for(lambda: ml.get_alerts("flaky")["events"], 30)
        assert wait_for(lambda: ml.get_alerts("flaky")["events"][0]["delivery"].get("status") == "retrying", 10)
        delivery = ml.get_alerts("flaky")["events"][0]["delivery"]
        assert "refused" in delivery["last_error"].lower(), delivery
        hook = Receiver(port)
        assert wait_for(lambda: hook.got, 40), ml.get_alerts("flaky")["events"][0]["delivery"]
        (event,) = ml.get_alerts("flaky")["events"]
        assert event["delivery"]["status"] == "delivered" and event["delivery"]["attempts"] >= 2
        assert hook.got[0]["rule"]["kind"] == "latency_p99_ms" and hook.got[0]["id"] == event["id"]
    finally:
        if hook is not None:
            hook.close()
        d.delete()


def test_one_watcher_per_home_evaluates_the_rules_of_deployments_nothing_runs_beside(sqlite_registry, rng):
    """``mlops-lab watch`` in a process of its own: a Kubernetes deployment's pods evaluate no
    rules, so the home's watcher does and sends the drifted one's firing to a real receiver; a
    local deployment's rules are its supervisor's (this record has none running), so the watcher
    leaves them alone; a deployment recorded later is watched too. SIGTERM stops it with exit 0.
    (The Kubernetes deployments are records only: what the watcher reads is the registry and the
    collected data, never the cluster.)"""
    from mlops_lab.monitoring.store import CollectionStore
    from mlops_lab.settings import Settings

    base = _frame(rng, 2000)
    ml.register_model(Summer(), "m", sample_input=base.head(), baseline=base)
    store = CollectionStore.of(Settings.load())
    for name, target in (("k8s-drifted", "kubernetes"), ("local-drifted", "local")):
        sqlite_registry.create_deployment(name, target, [{"name": "m", "version": 1, "traffic": 100}], status="healthy")
        _traffic(store, rng, shift=1.5, name=name)
    hook = Receiver()
    for name in ("k8s-drifted", "local-drifted"):
        ml.set_alerts(name, {"drift": 0}, webhook=hook.url, every="1s")
    watcher = subprocess.Popen([sys.executable, "-m", "mlops_lab.cli", "watch", "--poll", "0.2"],
                               stderr=subprocess.PIPE, text=True)
    try:
        assert wait_for(lambda: [h["deployment"] for h in hook.got] == ["k8s-drifted"], timeout=60), hook.got
        assert hook.got[0]["rule"]["kind"] == "drift" and "a" in hook.got[0]["evidence"]["drifted"]
        # recorded later, and watched
        sqlite_registry.create_deployment("k8s-later", "kubernetes", [{"name": "m", "version": 1, "traffic": 100}],
                                          status="healthy")
        _traffic(store, rng, shift=1.5, name="k8s-later")
        ml.set_alerts("k8s-later", {"drift": 0}, webhook=hook.url, every="1s")
        assert wait_for(lambda: len(hook.got) == 2, timeout=60), hook.got
        assert hook.got[1]["deployment"] == "k8s-later"
        time.sleep(1.5)  # a rule that keeps firing is sent once
        assert len(hook.got) == 2 and ml.get_alerts("local-drifted")["events"] == []
    finally:
        watcher.terminate()
        _, err = watcher.communicate(timeout=30)
        hook.close()
    assert watcher.returncode == 0, err
    assert "watching the alert rules of k8s-drifted" in err and "local-drifted" not in err
    proc = subprocess.run([sys.executable, "-m", "mlops_lab.cli", "watch", "k8s-drifed"], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 3 and "did you mean 'k8s-drifted'" in proc.stderr
