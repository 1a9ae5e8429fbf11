"""The Kubernetes deployer against a real control plane (etcd, kube-apiserver, the controller
manager and the scheduler, on loopback; tests/kube.py). No kubelet can run here: a test node
moves bound pods to Running/Ready (and leaves the pods of chosen versions unready), so the
rollouts, ReplicaSets and status are the real controllers'. No traffic goes to a pod IP."""

from __future__ import annotations

import pytest

import mlops_lab as ml


@pytest.fixture
def cluster(kube_control_plane, sqlite_registry, tmp_path, monkeypatch, iris, trained):
    kubeconfig = kube_control_plane.kubeconfig(kube_control_plane.admin_token, tmp_path / "kubeconfig")
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    X, _ = iris
    ml.register_model(trained, "iris", sample_input=X.iloc[:2])
    ml.register_model(trained, "iris", sample_input=X.iloc[:2])
    yield kube_control_plane
    for d in ml.list_deployments():
        d.delete()


def _apps(plane):
    from kubernetes import client

    return client.AppsV1Api(plane.api())


def test_deploy_update_rollback_delete_against_the_api_server(cluster):
    d = ml.deploy("iris:1", name="k8s-iris", target="kubernetes", image="registry.test/iris:1", replicas=2,
                  namespace="default", progress=False)
    st = d.status()
    assert st.healthy and st.details["ready_pods"] == 2 and st.details["replicas"] == 2
    apps = _apps(cluster)
    dep = apps.read_namespaced_deployment("k8s-iris", "default")
    assert dep.spec.template.spec.containers[0].image == "registry.test/iris:1"
    # a rolling update: a new ReplicaSet, the old one scaled to 0 by the controller
    d.update("iris:2")
    assert [m["version"] for m in d.refresh().models] == [2] and d.status().healthy
    sets = apps.list_namespaced_replica_set("default", label_selector="app.kubernetes.io/instance=k8s-iris").items
    assert len(sets) == 2 and sorted(rs.status.replicas or 0 for rs in sets) == [0, 2]
    d.rollback()
    assert [m["version"] for m in d.refresh().models] == [1] and d.status().healthy
    d.delete()
    assert apps.list_namespaced_deployment("default", label_selector="app.kubernetes.io/instance=k8s-iris").items == []
    assert ml.list_deployments() == []


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
