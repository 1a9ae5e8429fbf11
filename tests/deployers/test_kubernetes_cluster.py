"""The Kubernetes deployer against a real control plane (etcd, kube-apiserver, the controller
manager and the scheduler, on loopback; tests/kube.py). No kubelet can run here: a test node
moves bound pods to Running/Ready (and leaves the pods of chosen versions unready), so the
rollouts, ReplicaSets and status are the real controllers'. No traffic goes to a pod IP.

The registry is a team's: artifacts and collected data on the S3 server, so that the pods fetch
any version and write what they collect there (the last test runs such a pod's container and
sees both happen). The deployer works through a service account bound to ``deployer_role()``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid

import pytest

import mlops_lab as ml
from mlops_lab.workspace import current_registry


def _register_two(iris, trained):
    X, _ = iris
    ml.register_model(trained, "iris", sample_input=X.iloc[:2])
    ml.register_model(trained, "iris", sample_input=X.iloc[:2])


@pytest.fixture
def kubeconfig(kube_control_plane, tmp_path, monkeypatch):
    """The deployer's kubeconfig: the token of a service account of its own, bound to
    ``deployer_role()`` and nothing else (the tests read objects back as the cluster's admin)."""
    from mlops_lab.deployers.kubernetes import deployer_role

    account = f"deployer-{uuid.uuid4().hex[:8]}"
    path = _service_account(kube_control_plane, account, deployer_role("default")["rules"], tmp_path)
    monkeypatch.setenv("KUBECONFIG", str(path))
    return path


@pytest.fixture
def cluster(kube_control_plane, kubeconfig, s3_server, monkeypatch, iris, trained):
    for k, v in s3_server.env().items():
        monkeypatch.setenv(k, v)
    run = uuid.uuid4().hex[:12]
    monkeypatch.setenv("MLOPS_LAB_ARTIFACTS", f"s3://{s3_server.bucket}/a-{run}")
    monkeypatch.setenv("MLOPS_LAB_COLLECTION", f"s3://{s3_server.bucket}/c-{run}")
    _register_two(iris, trained)
    yield kube_control_plane
    for d in ml.list_deployments():
        d.delete()


def _apps(plane):
    from kubernetes import client

    return client.AppsV1Api(plane.api())


def _served_spec(plane, name: str, revision: int) -> dict:
    """The spec the pods of ``revision`` serve: their ConfigMap, as the API server holds it."""
    from kubernetes import client

    cm = client.CoreV1Api(plane.api()).read_namespaced_config_map(f"{name}-r{revision}", "default")
    return json.loads(cm.data["spec.json"])


def _config_maps(plane, name: str) -> list[str]:
    from kubernetes import client

    items = client.CoreV1Api(plane.api()).list_namespaced_config_map(
        "default", label_selector=f"app.kubernetes.io/instance={name}").items
    return sorted(c.metadata.name for c in items)


def test_deploy_update_rollback_delete_against_the_api_server(cluster, monkeypatch):
    from mlops_lab.deployers import kubernetes

    monkeypatch.setattr(kubernetes, "REVISION_HISTORY", 1)  # keep one old revision, not ten
    d = ml.deploy("iris:1", name="k8s-iris", target="kubernetes", image="registry.test/iris:1", replicas=2,
                  namespace="default", s3_secret="team-s3", progress=False)
    st = d.status()
    assert st.healthy and st.details["ready_pods"] == 2 and st.details["replicas"] == 2
    apps = _apps(cluster)
    dep = apps.read_namespaced_deployment("k8s-iris", "default")
    (c,) = dep.spec.template.spec.containers
    assert c.image == "registry.test/iris:1" and c.env_from[0].secret_ref.name == "team-s3"
    assert c.command[c.command.index("--spec") + 1] == "/opt/mlops-lab/revision/spec.json"
    # the revision's spec: the model fetched from the team's artifact store, collection to its store
    spec = _served_spec(cluster, "k8s-iris", 1)
    (m,) = spec["models"]
    settings = current_registry().settings
    assert m["fetch"]["store"] == settings.artifacts and m["fetch"]["endpoint_url"] == settings.s3_endpoint_url
    assert [f["sha256"] for f in m["fetch"]["metadata"]["files"]] == [f.sha256 for f in ml.get_model("iris:1").files]
    assert spec["collect"]["folder"] == settings.collection and spec["keys_file"] == "/opt/mlops-lab/keys/keys.json"
    # a rolling update: a new ReplicaSet serving the new revision's spec, the old one scaled to 0
    d.update("iris:2")
    assert [m["version"] for m in d.refresh().models] == [2] and d.status().healthy
    assert [m["version"] for m in _served_spec(cluster, "k8s-iris", 2)["models"]] == [2]
    sets = apps.list_namespaced_replica_set("default", label_selector="app.kubernetes.io/instance=k8s-iris").items
    assert len(sets) == 2 and sorted(rs.status.replicas or 0 for rs in sets) == [0, 2]
    assert apps.read_namespaced_deployment("k8s-iris", "default").spec.revision_history_limit == 1
    d.rollback()
    assert [m["version"] for m in d.refresh().models] == [1] and d.status().healthy
    assert [m["version"] for m in _served_spec(cluster, "k8s-iris", 3)["models"]] == [1]
    # the old ReplicaSet kept (kubectl rollout undo) has its spec; revision 1's is gone
    assert _config_maps(cluster, "k8s-iris") == ["k8s-iris-r2", "k8s-iris-r3"]
    d.delete()
    assert apps.list_namespaced_deployment("default", label_selector="app.kubernetes.io/instance=k8s-iris").items == []
    assert _config_maps(cluster, "k8s-iris") == [] and ml.list_deployments() == []


def test_a_canary_splits_traffic_in_every_pod_then_is_promoted(cluster):
    d = ml.deploy("iris:1", name="k8s-canary", target="kubernetes", image="registry.test/iris:1", replicas=2,
                  progress=False)
    d.update("iris:2", traffic=25, progress=False)
    assert [(m["version"], m["traffic"]) for m in d.refresh().models] == [(1, 75), (2, 25)]
    # each pod serves both versions and splits its requests 75/25, as a local server does
    spec = _served_spec(cluster, "k8s-canary", 2)
    assert [(m["version"], m["traffic"], "fetch" in m) for m in spec["models"]] == [(1, 75, True), (2, 25, True)]
    dep = _apps(cluster).read_namespaced_deployment("k8s-canary", "default")
    assert dep.spec.template.metadata.annotations["mlops-lab/models"] == "iris:1,iris:2"
    assert d.status().healthy
    with pytest.raises(ml.VersionInUse):
        ml.delete_model_version("iris:2")
    d.promote(progress=False)
    assert [(m["version"], m["traffic"]) for m in d.refresh().models] == [(2, 100)] and d.status().healthy
    assert [m["version"] for m in _served_spec(cluster, "k8s-canary", 3)["models"]] == [2]
    assert _config_maps(cluster, "k8s-canary") == ["k8s-canary-r1", "k8s-canary-r2", "k8s-canary-r3"]


def _serves(plane, group_version: str) -> bool:
    from kubernetes import client

    return any(g.group_version == group_version for group in client.ApisApi(plane.api()).get_api_versions().groups
               for g in group.versions)


def test_autoscale_on_a_cluster_that_serves_autoscaling_v2(cluster):
    if not _serves(cluster, "autoscaling/v2"):
        pytest.skip("Kubernetes 1.20 serves autoscaling/v1 and v2beta2 only; the manifests use autoscaling/v2 "
                    "(1.23+), validated against the 1.32-1.37 schemas in test_kubernetes.py")
    d = ml.deploy("iris:1", name="k8s-hpa", target="kubernetes", image="registry.test/iris:1",
                  autoscale={"min": 1, "max": 3}, progress=False)
    from kubernetes import client

    hpa = client.AutoscalingV2Api(cluster.api()).read_namespaced_horizontal_pod_autoscaler("k8s-hpa", "default")
    assert hpa.spec.max_replicas == 3
    d.delete()


def test_autoscale_on_a_cluster_without_autoscaling_v2_is_one_line_and_leaves_nothing(cluster):
    if _serves(cluster, "autoscaling/v2"):
        pytest.skip("this cluster serves autoscaling/v2: the test above deploys with it")
    with pytest.raises(ml.DeploymentFailed) as info:
        ml.deploy("iris:1", name="k8s-hpa", target="kubernetes", image="registry.test/iris:1",
                  autoscale={"min": 1, "max": 3}, progress=False)
    assert info.value.message == "the cluster does not serve autoscaling/v2, which autoscale= needs"
    assert "1.23" in info.value.hint and ml.list_deployments() == []
    assert _apps(cluster).list_namespaced_deployment(
        "default", label_selector="app.kubernetes.io/instance=k8s-hpa").items == []
    assert _config_maps(cluster, "k8s-hpa") == []


def test_a_deployment_whose_pods_never_become_ready_fails_and_leaves_nothing(cluster):
    cluster.node.never_ready.add("iris:1")
    try:
        with pytest.raises(ml.DeploymentFailed, match="the rollout of k8s-never did not finish in 6 s"):
            ml.deploy("iris:1", name="k8s-never", target="kubernetes", image="registry.test/iris:1",
                      startup_timeout=6, progress=False)
    finally:
        cluster.node.never_ready.discard("iris:1")
    assert ml.list_deployments() == []
    assert _apps(cluster).list_namespaced_deployment(
        "default", label_selector="app.kubernetes.io/instance=k8s-never").items == []
    assert _config_maps(cluster, "k8s-never") == []
    ml.delete_model_version("iris:1")  # nothing protects it any more


def test_with_local_artifacts_the_pods_serve_only_what_their_image_holds(kube_control_plane, kubeconfig,
                                                                         sqlite_registry, iris, trained):
    """A registry whose artifacts are in a local folder: the cluster cannot fetch them, so a
    version the image was not built for is refused in one line and the deployment is untouched."""
    _register_two(iris, trained)
    d = ml.deploy("iris:1", name="k8s-local", target="kubernetes", image="registry.test/iris:1", progress=False)
    try:
        spec = _served_spec(kube_control_plane, "k8s-local", 1)
        assert spec["models"][0]["folder"] == "/opt/mlops-lab/models/iris-1" and "fetch" not in spec["models"][0]
        assert spec["collect"]["folder"] == "/opt/mlops-lab/collected"
        with pytest.raises(ml.InvalidInput) as info:
            d.update("iris:2", progress=False)
        assert str(info.value).startswith("the pods cannot serve iris:2: their image holds iris:1") and "\n" not in str(info.value)
        assert "s3://" in info.value.hint
        assert d.refresh().revision == 1 and d.status().healthy
        assert _config_maps(kube_control_plane, "k8s-local") == ["k8s-local-r1"]
    finally:
        d.delete()


def test_the_cli_and_the_magic_deploy_to_the_cluster(cluster, tmp_path):
    env = {**os.environ}
    proc = subprocess.run([sys.executable, "-m", "mlops_lab.cli", "deploy", "iris:1", "--name", "k8s-cli",
                           "--target", "kubernetes", "-o", "image=registry.test/iris:1", "-o", "replicas=2", "--json"],
                          capture_output=True, text=True, timeout=180, env=env)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["target"] == "kubernetes" and out["url"] == "http://k8s-cli.default.svc" and out["keys"]["primary"]
    assert _apps(cluster).read_namespaced_deployment("k8s-cli", "default").spec.replicas == 2
    proc = subprocess.run([sys.executable, "-m", "mlops_lab.cli", "status", "k8s-cli"], capture_output=True,
                          text=True, timeout=60, env=env)
    assert proc.returncode == 0 and "healthy" in proc.stdout, proc.stdout + proc.stderr
    from IPython.core.interactiveshell import InteractiveShell

    sh = InteractiveShell.instance()
    sh.run_line_magic("load_ext", "mlops_lab")
    d = sh.run_line_magic("deploy", "iris:2 --name k8s-magic --target kubernetes -o image=registry.test/iris:2")
    assert d.target == "kubernetes" and d.status().healthy
    assert _served_spec(cluster, "k8s-magic", 1)["models"][0]["version"] == 2
    sh.run_line_magic("update", "k8s-magic iris:1 --traffic 10")
    assert [(m["version"], m["traffic"]) for m in d.refresh().models] == [(2, 90), (1, 10)]
    proc = subprocess.run([sys.executable, "-m", "mlops_lab.cli", "undeploy", "k8s-cli"], capture_output=True,
                          text=True, timeout=60, env=env)
    assert proc.returncode == 0, proc.stderr
    assert [x.name for x in ml.list_deployments()] == ["k8s-magic"]


def test_a_revision_whose_pods_never_become_ready_fails_and_the_old_one_keeps_serving(cluster):
    cluster.node.never_ready.add("iris:2")
    try:
        d = ml.deploy("iris:1", name="k8s-stuck", target="kubernetes", image="registry.test/iris:1", replicas=2,
                      startup_timeout=8, progress=False)
        with pytest.raises(ml.DeploymentFailed, match="the rollout of k8s-stuck did not finish in 8 s"):
            d.update("iris:2", progress=False)
        # the record still says revision 1 (iris:1), and its two pods still serve
        st = d.refresh().status()
        assert [m["version"] for m in d.models] == [1] and d.revision == 1
        assert st.healthy and st.details["ready_pods"] == 2
    finally:
        cluster.node.never_ready.discard("iris:2")



def _service_account(plane, name: str, rules: list[dict], tmp_path):
    """A service account bound to a Role of ``rules``; a kubeconfig holding its token."""
    import time

    from kubernetes import client

    api = plane.api()
    core, rbac = client.CoreV1Api(api), client.RbacAuthorizationV1Api(api)
    core.create_namespaced_service_account("default", {"metadata": {"name": name}})
    rbac.create_namespaced_role("default", {"metadata": {"name": name}, "rules": rules})
    rbac.create_namespaced_role_binding("default", {
        "metadata": {"name": name}, "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
        "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": "default"}]})
    deadline = time.monotonic() + 30
    while True:  # 1.20's token controller makes the account's token Secret
        sa = core.read_namespaced_service_account(name, "default")
        if sa.secrets:
            break
        assert time.monotonic() < deadline, "no token for the service account"
        time.sleep(0.2)
    import base64

    token = base64.b64decode(core.read_namespaced_secret(sa.secrets[0].name, "default").data["token"]).decode()
    return plane.kubeconfig(token, tmp_path / f"{name}.kubeconfig")


def test_the_deployer_role_is_all_the_deployer_needs_and_a_missing_verb_is_named(cluster, tmp_path, monkeypatch):
    from mlops_lab.deployers.kubernetes import DEPLOYER_RULES, deployer_role

    role = deployer_role("default")
    assert role["kind"] == "Role" and role["rules"] == DEPLOYER_RULES
    monkeypatch.setenv("KUBECONFIG", str(_service_account(cluster, "deployer", role["rules"], tmp_path)))
    d = ml.deploy("iris:1", name="k8s-rbac", target="kubernetes", image="registry.test/iris:1", progress=False)
    assert d.status().healthy
    d.update("iris:2", progress=False)
    d.delete()
    # without "delete" on services: the deletion stops there, in one line naming what is missing
    limited = [dict(r) for r in DEPLOYER_RULES]
    for rule in limited:
        if "services" in rule["resources"]:
            rule["verbs"] = ["create", "patch"]
    monkeypatch.setenv("KUBECONFIG", str(_service_account(cluster, "limited", limited, tmp_path)))
    d = ml.deploy("iris:1", name="k8s-limited", target="kubernetes", image="registry.test/iris:1", progress=False)
    with pytest.raises(ml.DeploymentFailed) as info:
        d.delete()
    text = str(info.value)
    assert text.startswith('Kubernetes refused to delete k8s-limited: services "k8s-limited" is forbidden: User '
                           '"system:serviceaccount:default:limited" cannot delete resource "services"'), text
    assert "\n" not in text and "deployer_role()" in info.value.hint
    # the record stays (its Service still exists): fixed permissions, the same call finishes it
    assert [x.name for x in ml.list_deployments()] == ["k8s-limited"]
    with pytest.raises(ml.VersionInUse):
        ml.delete_model_version("iris:1")
    monkeypatch.setenv("KUBECONFIG", str(cluster.kubeconfig(cluster.admin_token, tmp_path / "admin")))
    ml.get_deployment("k8s-limited").delete()
    assert ml.list_deployments() == []


def _engine():
    base = os.environ.get("MLOPS_LAB_TEST_DOCKER_BASE")
    if not base:
        if os.environ.get("CI"):
            pytest.fail("MLOPS_LAB_TEST_DOCKER_BASE is not set: run the suite with `make test`")
        pytest.skip("no Docker engine and base image: run the suite with `make test` (.ci/docker.sh)")
    docker = pytest.importorskip("docker")
    client = docker.from_env()
    client.ping()
    return client, base


def test_a_pod_serves_a_version_its_image_lacks_and_the_notebook_reads_its_traffic_from_s3(cluster, tmp_path):
    """A deployment made on the control plane, then updated (a rolling update to revision 2,
    same image); the container of its pod template, as the API server holds it (image, command,
    environment, and the revision's ConfigMap, the keys' Secret and the emptyDir mounted where
    the template mounts them; the ``s3_secret``'s keys as variables), run under the Docker engine
    in place of the kubelet that cannot run here. It runs on the host's network, the only way a
    container here reaches the S3 server on loopback (a pod reaches its store over the cluster's
    network), so its --host and --port are the one change: a pod has ports of its own, the host's
    network does not. The image is built for m:1; the pod serves m:2, fetched from the store."""
    import base64
    import socket
    import time
    import urllib.request

    from kubernetes import client as k8s

    from mlops_lab.deployers.docker import build_image

    from .test_local import Const

    engine, base = _engine()
    sample = [[0.0, 0.0], [1.0, 1.0]]
    ml.register_model(Const(1.0), "m", sample_input=sample)
    ml.register_model(Const(2.0), "m", sample_input=sample)
    image = build_image("m:1", base_image=base)
    d = ml.deploy("m:1", name="k8s-pod", target="kubernetes", image=image, s3_secret="team-s3", progress=False)
    d.update("m:2", progress=False)
    core = k8s.CoreV1Api(cluster.api())
    template = _apps(cluster).read_namespaced_deployment("k8s-pod", "default").spec.template.spec
    (c,) = template.containers
    assert c.image == image and c.env_from[0].secret_ref.name == "team-s3"
    contents = {}
    for v in template.volumes:
        if v.config_map is not None:
            contents[v.name] = core.read_namespaced_config_map(v.config_map.name, "default").data
        elif v.secret is not None:
            secret = core.read_namespaced_secret(v.secret.secret_name, "default").data
            contents[v.name] = {k: base64.b64decode(x).decode() for k, x in secret.items()}
        else:
            assert v.empty_dir is not None, v
            contents[v.name] = {}
    volumes = {}
    for m in c.volume_mounts:
        folder = tmp_path / m.name
        folder.mkdir()
        for file, text in contents[m.name].items():
            (folder / file).write_text(text)
        volumes[str(folder)] = {"bind": m.mount_path, "mode": "ro" if m.read_only else "rw"}
    team_s3 = {k: os.environ[k] for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}  # what team-s3 holds
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = list(c.command)
    command[command.index("--host") + 1], command[command.index("--port") + 1] = "127.0.0.1", str(port)
    container = engine.containers.run(c.image, command=command, detach=True, init=True, network_mode="host",
                                      volumes=volumes, environment={**{e.name: e.value for e in c.env}, **team_s3})
    try:
        for _ in range(300):
            container.reload()
            assert container.status in ("created", "running"), container.logs().decode()[-2000:]
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}{c.readiness_probe.http_get.path}", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                time.sleep(0.2)
        else:
            pytest.fail("the readiness probe never answered 200: " + container.logs().decode()[-2000:])
        assert "fetched m:2 from s3://" in container.logs().decode()
        for i in range(3):
            req = urllib.request.Request(f"http://127.0.0.1:{port}/score", data=json.dumps({"data": [[i, 0]]}).encode(),
                                         headers={"Authorization": f"Bearer {d.keys['primary']}",
                                                  "Content-Type": "application/json"})
            assert json.loads(urllib.request.urlopen(req, timeout=10).read()) == [2.0]
        container.stop(timeout=20)  # SIGTERM, as the kubelet sends: the server drains and writes what it holds
        container.wait(timeout=30)
    finally:
        container.remove(force=True)
    # the notebook reads the pod's traffic from the object store: no copy step
    df = ml.collected_data("k8s-pod")
    assert len(df) == 3 and set(df.model_version) == {"m:2"} and list(df.status_code) == [200] * 3
    assert ml.monitor("k8s-pod").to_dict()["vconcat"][0]["title"]["subtitle"].startswith("3 requests")
