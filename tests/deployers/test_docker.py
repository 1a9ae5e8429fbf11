"""The Docker deployer against a real Docker engine (``.ci/docker.sh`` installs and starts one and
makes the base image with debootstrap: no image can be pulled here). Containers are reached on
loopback through their published ports."""

from __future__ import annotations

import json
import os
import time
import urllib.request
from collections import Counter

import httpx
import numpy as np
import pytest

import mlops_lab as ml
from mlops_lab import DeploymentFailed

from .load import score, under_load
from .test_local import Const, _register_three

BASE = os.environ.get("MLOPS_LAB_TEST_DOCKER_BASE")
docker = pytest.importorskip("docker")


@pytest.fixture(scope="module")
def engine():
    if not BASE:
        if os.environ.get("CI"):
            pytest.fail("MLOPS_LAB_TEST_DOCKER_BASE is not set: run the suite with `make test`")
        pytest.skip("no Docker engine and base image: run the suite with `make test` (.ci/docker.sh)")
    client = docker.from_env()
    client.ping()
    return client


@pytest.fixture
def models(engine, sqlite_registry):
    """m:1 answers 1.0, m:2 answers 2.0, m:3 fails its readiness check (as for the local deployer)."""
    for _ in _register_three(sqlite_registry):
        yield engine


def _containers(engine, name):
    return engine.containers.list(all=True, filters={"label": f"mlops-lab.deployment={name}"})


def test_deploy_update_under_load_rollback_logs_delete(models):
    engine = models
    # Given a version deployed to Docker
    d = ml.deploy("m:1", name="dock", target="docker", base_image=BASE, progress=False, drain_seconds=0.5,
                  collect={"flush_seconds": 0.5})
    assert d.url.startswith("http://127.0.0.1:") and d.target == "docker"
    assert d.predict([[0, 0], [1, 1]]) == [1.0, 1.0]
    st = d.status()
    assert st.state == "healthy" and st.details["image"] == "mlops-lab/m:1"
    (c1,) = _containers(engine, "dock")
    assert c1.attrs["HostConfig"]["Init"] is True
    assert c1.attrs["HostConfig"]["PortBindings"]["8080/tcp"][0]["HostIp"] == "127.0.0.1"
    assert httpx.post(f"{d.url}/score", json={"data": [[0.0, 0.0]]}).status_code == 401  # keys are required

    # When it is updated under steady load over keep-alive connections, then no request fails
    results, errors = under_load(d, lambda: d.update("m:2", progress=False))
    assert errors == []
    assert Counter(s for s, _ in results) == {200: len(results)} and len(results) > 100
    versions = [v for _, v in results]
    assert versions[0] == "m:1" and versions[-1] == "m:2"
    assert {score(d).headers["x-model-version"] for _ in range(10)} == {"m:2"}
    (c2,) = _containers(engine, "dock")  # the old container is gone
    assert c2.id != c1.id

    # A failing new version leaves the current one serving
    with pytest.raises(DeploymentFailed, match="this version is broken"):
        d.update("m:3", progress=False)
    assert d.refresh().revision == 2 and d.predict([[0, 0]]) == [2.0]
    assert [c.id for c in _containers(engine, "dock")] == [c2.id]

    # Rollback, logs
    d.rollback(progress=False)
    assert [m["version"] for m in d.refresh().models] == [1] and d.predict([[0, 0]]) == [1.0]
    assert "serving dock revision 3" in d.logs(tail=20)

    # Delete: containers and forwarder gone, the collected data readable on the host
    forwarder = d.record.state["forwarder_pid"]
    sent = len(results) + 10 + 1 + 1 + 1 + 1  # the load, the checks above
    d.delete()
    assert _containers(engine, "dock") == []
    assert not os.path.exists(f"/proc/{forwarder}") or "zombie" in open(f"/proc/{forwarder}/status").read().lower()
    data = ml.collected_data("dock")
    ok = data[data.status_code == 200]
    assert set(ok.model_version) == {"m:1", "m:2"}
    assert ok.request_id.nunique() >= sent - 5  # all but the 401 and failed ones; none lost on update
    assert (ok[ok.model_version == "m:2"].prediction.astype(float) == 2.0).all()


def test_no_engine_is_a_clear_error_and_leaves_nothing(sqlite_registry, monkeypatch):
    ml.register_model(Const(1.0), "m", sample_input=np.zeros((3, 2)))
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    with pytest.raises(DeploymentFailed, match="Docker is not running: start it or use target='local'"):
        ml.deploy("m:1", name="nodock", target="docker", progress=False)
    assert ml.list_deployments() == []


@pytest.mark.s3
def test_a_collection_store_on_the_hosts_loopback_is_refused_before_anything_starts(sqlite_registry, s3_server, monkeypatch):
    """A container cannot reach an S3 endpoint on the host's 127.0.0.1: said in one line, with what
    to do instead, before the engine is asked; collect=False is not affected by the store."""
    for k, v in s3_server.env().items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("MLOPS_LAB_COLLECTION", f"s3://{s3_server.bucket}/collected")
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    ml.register_model(Const(1.0), "m", sample_input=np.zeros((3, 2)))
    with pytest.raises(ml.InvalidInput, match=f"a container cannot reach the collection store at {s3_server.endpoint}") as info:
        ml.deploy("m:1", name="dock", target="docker", progress=False)
    assert "target='local'" in info.value.hint and ml.list_deployments() == []
    with pytest.raises(DeploymentFailed, match="Docker is not running"):
        ml.deploy("m:1", name="dock", target="docker", collect=False, progress=False)


def test_the_kubernetes_pod_spec_runs_and_answers_its_readiness_probe(models, tmp_path):
    """The exact image and command of the generated pod spec, under the local engine, with the
    Secret's keys.json and the collected-data volume mounted where the manifests mount them."""
    from mlops_lab.deployers.docker import build_image
    from mlops_lab.deployers.keys import key_hash
    from mlops_lab.deployers.kubernetes import build_objects

    engine = models
    image = build_image("m:2", base_image=BASE)
    objs = build_objects("m", [{"name": "m", "version": 2}], image=image, key_hashes={"primary": key_hash("k1")})
    secret = next(o for o in objs if o["kind"] == "Secret")
    pod = next(o for o in objs if o["kind"] == "Deployment")["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    keys = tmp_path / "secret"
    keys.mkdir()
    (keys / "keys.json").write_text(secret["stringData"]["keys.json"])
    collected = tmp_path / "collected"
    collected.mkdir()
    mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
    container = engine.containers.run(
        c["image"], command=c["command"], detach=True, init=True, ports={"8080/tcp": ("127.0.0.1", None)},
        volumes={str(keys): {"bind": mounts["keys"], "mode": "ro"}, str(collected): {"bind": mounts["collected"], "mode": "rw"}},
        environment={e["name"]: e["value"] for e in c["env"]},
    )
    try:
        port = None
        for _ in range(300):
            container.reload()
            bindings = container.attrs["NetworkSettings"]["Ports"].get("8080/tcp")
            if bindings:
                port = bindings[0]["HostPort"]
                try:
                    probe = c["readinessProbe"]["httpGet"]["path"]
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}{probe}", timeout=2) as r:
                        if r.status == 200:
                            break
                except OSError:
                    pass
            assert container.status == "running", container.logs().decode()[-2000:]
            time.sleep(0.2)
        else:
            pytest.fail("the readiness probe never answered 200")
        live = c["livenessProbe"]["httpGet"]["path"]
        assert urllib.request.urlopen(f"http://127.0.0.1:{port}{live}", timeout=2).status == 200
        req = urllib.request.Request(f"http://127.0.0.1:{port}/score", data=json.dumps({"data": [[0, 0]]}).encode(),
                                     headers={"Authorization": "Bearer k1", "Content-Type": "application/json"})
        assert json.loads(urllib.request.urlopen(req, timeout=10).read()) == [2.0]
    finally:
        container.remove(force=True)


def test_the_forwarder_evaluates_the_alert_rules_and_sends_a_firing_to_the_webhook(models):
    """A Docker deployment has no supervisor: its forwarder, on the host, evaluates the rules on
    what the container collected (the mounted folder) and POSTs a firing to the webhook."""
    from receiver import Receiver, wait_for

    d = ml.deploy("m:1", name="dock-alerts", target="docker", base_image=BASE, progress=False,
                  collect={"flush_seconds": 0.5})
    hook = Receiver()
    try:
        for _ in range(5):
            assert score(d).status_code == 200
        assert wait_for(lambda: len(ml.collected_data("dock-alerts")) == 5, 30)
        ml.set_alerts("dock-alerts", {"latency_p99_ms": 0}, webhook=hook.url, every="1s")
        assert wait_for(lambda: hook.got, 40), "the forwarder sent no firing"
        assert hook.got[0]["deployment"] == "dock-alerts" and hook.got[0]["evidence"]["requests"] == 5
    finally:
        hook.close()
        d.delete()


def test_a_killed_forwarder_is_reported_restarted_and_delete_cleans_up(models):
    """kill -9 of the process that owns a Docker deployment's address: status says so, restart
    brings it back at the same address, delete removes the container, nothing is left running."""
    import signal

    engine = models
    d = ml.deploy("m:1", name="fwd", target="docker", base_image=BASE, progress=False)
    pid = d.record.state["forwarder_pid"]
    os.kill(pid, signal.SIGKILL)
    deadline = time.time() + 10
    while time.time() < deadline and d.status().state == "healthy":
        time.sleep(0.1)
    st = d.status()
    assert st.state == "crashed" and f"the forwarder (pid {pid}) is not running" in st.reason
    with pytest.raises(DeploymentFailed, match="its forwarder is gone"):
        d.update("m:2", progress=False)
    assert len(_containers(engine, "fwd")) == 1  # the failed update started nothing
    # restart: a new container from the same image, a new forwarder on the same port
    url = d.url
    d.restart(progress=False)
    st = d.status()
    assert st.state == "healthy" and d.url == url and d.revision == 1
    assert d.record.state["forwarder_pid"] != pid and d.predict([[0, 0]]) == [1.0]
    assert len(_containers(engine, "fwd")) == 1  # the old container is retired
    d.delete()
    assert _containers(engine, "fwd") == [] and ml.list_deployments() == []


def test_a_shadow_in_the_container_is_collected_apart_then_promoted(models):
    """The same shadow as on the local target, in the deployment's container: m:2 beside m:1 on a
    copy of every request, its answers in the collected data's shadow part (on the host), the
    callers' answers m:1's; then promoted."""
    d = ml.deploy("m:1", name="dock-shadow", target="docker", base_image=BASE, progress=False, drain_seconds=0.3,
                  collect={"flush_seconds": 0.3})
    try:
        d.update("m:2", shadow=True, progress=False)
        assert [m.get("shadow") for m in d.models] == [None, 1.0]
        ids = []
        with httpx.Client(timeout=30) as client:
            for _ in range(20):
                r = score(d, client, rows=2)
                assert r.status_code == 200 and r.json() == [1.0, 1.0] and r.headers["x-model-version"] == "m:1"
                ids.append(r.headers["x-request-id"])
        deadline = time.monotonic() + 30
        while min(len(ml.collected_data("dock-shadow")), len(ml.collected_data("dock-shadow", shadow=True))) < 40 \
                and time.monotonic() < deadline:
            time.sleep(0.3)
        shadow = ml.collected_data("dock-shadow", shadow=True)
        assert sorted(set(shadow.request_id)) == sorted(ids) and (shadow.prediction == 2.0).all()
        assert set(ml.collected_data("dock-shadow").model_version) == {"m:1"}
        readout = ml.compare("dock-shadow")
        assert (readout.kind, readout.pairs, readout.agreement) == ("classification", 40, 0.0)
        d.promote(progress=False)
        assert d.predict([[0, 0]]) == [2.0] and d.shadows == []
    finally:
        d.delete()
