"""Kubernetes: no API server can run on these machines. Every generated manifest is validated
against the official schemas of three recent Kubernetes versions (kubernetes-validate, strict);
the deployer's calls run against a real cluster only when KUBECONFIG names one."""

from __future__ import annotations

import json
import os

import pytest

import mlops_lab as ml
from mlops_lab.deployers.kubernetes import (
    build_objects,
    k8s_name,
    render_manifests,
    server_command,
    to_yaml,
)

kv = pytest.importorskip("kubernetes_validate")
yaml = pytest.importorskip("yaml")

VERSIONS = ["1.32.0", "1.35.0", "1.37.0"]
MODELS = [{"name": "iris", "version": 3, "traffic": 100}]


def variants():
    hashes = {"primary": "a" * 64, "secondary": "b" * 64}
    return {
        "minimal": build_objects("iris", MODELS, image="reg.local/iris:3"),
        "keys+autoscale+new claim": build_objects(
            "Iris_Prod.v2", MODELS + [{"name": "iris", "version": 4, "traffic": 10, "canary": True}],
            image="reg.local/iris:4", key_hashes=hashes, namespace="ml", replicas=3, autoscale={"min": 2, "max": 6, "cpu": 60},
            collect_storage="5Gi", service_type="LoadBalancer"),
        "existing claim, no limits": build_objects("iris", MODELS, image="reg.local/iris:3", collect_claim="shared-data",
                                                   cpu_limit=None, memory_limit=None, replicas=0),
    }


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("variant", list(variants()))
def test_every_manifest_is_valid_kubernetes(variant, version):
    for obj in variants()[variant]:
        kv.validate(obj, version, strict=True)  # raises ValidationError naming the field


def test_the_pod_runs_the_scoring_server_with_probes_keys_and_a_rolling_update():
    objs = {o["kind"]: o for o in variants()["keys+autoscale+new claim"]}
    assert set(objs) == {"Secret", "PersistentVolumeClaim", "Deployment", "Service", "HorizontalPodAutoscaler"}
    dep = objs["Deployment"]
    assert dep["metadata"]["name"] == "iris-prod-v2" and dep["metadata"]["namespace"] == "ml"
    pod = dep["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    assert c["command"] == server_command() and c["image"] == "reg.local/iris:4"
    assert c["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert c["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    assert dep["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": 1, "maxUnavailable": 0}
    assert dep["spec"]["template"]["metadata"]["annotations"]["mlops-lab/models"] == "iris:3,iris:4"
    mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
    assert mounts == {"keys": "/opt/mlops-lab/keys", "collected": "/opt/mlops-lab/collected"}
    assert json.loads(objs["Secret"]["stringData"]["keys.json"]) == {"primary": "a" * 64, "secondary": "b" * 64}
    assert objs["PersistentVolumeClaim"]["spec"]["accessModes"] == ["ReadWriteMany"]  # several replicas write
    assert objs["HorizontalPodAutoscaler"]["spec"]["minReplicas"] == 2
    assert objs["Service"]["spec"]["ports"][0]["targetPort"] == "http"
    assert dep["spec"]["selector"]["matchLabels"] == objs["Service"]["spec"]["selector"]


def test_yaml_round_trip_and_names():
    objs = variants()["minimal"]
    assert list(yaml.safe_load_all(to_yaml(objs))) == objs
    assert k8s_name("Churn_Model.v2") == "churn-model-v2"
    with pytest.raises(ml.InvalidInput):
        k8s_name("___")
    with pytest.raises(ml.InvalidInput, match="not both"):
        build_objects("x", MODELS, image="i", collect_claim="a", collect_storage="1Gi")
    with pytest.raises(ml.InvalidInput, match="min <= max"):
        build_objects("x", MODELS, image="i", autoscale={"min": 3, "max": 2})


def test_render_manifests_from_a_reference_keeps_the_keys_for_their_owner(sqlite_registry, iris, trained):
    X, _ = iris
    ml.register_model(trained, "iris", sample_input=X.iloc[:2])
    objs = ml.render_manifests("iris:1", replicas=2)
    dep = next(o for o in objs if o["kind"] == "Deployment")
    assert dep["spec"]["template"]["spec"]["containers"][0]["image"] == "mlops-lab/iris:1"
    secret = next(o for o in objs if o["kind"] == "Secret")
    from mlops_lab.deployers.keys import key_hash, read_keys
    from mlops_lab.workspace import current_registry as default_registry

    keys = read_keys(default_registry().home, "iris")
    assert json.loads(secret["stringData"]["keys.json"]) == {k: key_hash(v) for k, v in keys.items()}
    assert keys["primary"] not in to_yaml(objs)
    for obj in objs:
        kv.validate(obj, VERSIONS[-1], strict=True)
    assert [o["kind"] for o in render_manifests("iris", auth=False)] == ["Deployment", "Service"]


def test_deploy_without_a_cluster_fails_clearly_and_leaves_nothing(sqlite_registry, iris, trained, monkeypatch, tmp_path):
    X, _ = iris
    ml.register_model(trained, "iris", sample_input=X.iloc[:2])
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "missing-kubeconfig"))
    with pytest.raises(ml.DeploymentFailed, match="no Kubernetes cluster configured"):
        ml.deploy("iris:1", name="k", target="kubernetes", image="reg.local/iris:1", progress=False)
    assert ml.list_deployments() == []
    with pytest.raises(ml.InvalidInput, match="takes no option 'replica'"):
        ml.deploy("iris:1", name="k", target="kubernetes", replica=2, progress=False)
    with pytest.raises(ml.InvalidInput, match="needs image="):
        ml.deploy("iris:1", name="k", target="kubernetes", progress=False)
    assert ml.list_deployments() == []


needs_cluster = pytest.mark.skipif(
    not os.environ.get("KUBECONFIG") or not os.path.exists(os.environ.get("KUBECONFIG", "")),
    reason="no Kubernetes cluster on this machine: set KUBECONFIG (and MLOPS_LAB_TEST_K8S_IMAGE) to run against one",
)


@needs_cluster
def test_deploy_update_rollback_delete_on_a_real_cluster(sqlite_registry, iris, trained):
    """Against the cluster KUBECONFIG names, with an image the cluster can pull
    (MLOPS_LAB_TEST_K8S_IMAGE, built with mlops_lab.build_image and pushed)."""
    image = os.environ.get("MLOPS_LAB_TEST_K8S_IMAGE")
    if not image:
        pytest.skip("set MLOPS_LAB_TEST_K8S_IMAGE to an image of iris:1 the cluster can pull")
    X, _ = iris
    ml.register_model(trained, "iris", sample_input=X.iloc[:2])
    ml.register_model(trained, "iris", sample_input=X.iloc[:2])
    d = ml.deploy("iris:1", name="mlops-lab-test", target="kubernetes", image=image, namespace="default")
    try:
        assert d.status().healthy
        d.update("iris:2")
        assert [m["version"] for m in d.refresh().models] == [2]
        d.rollback()
        assert [m["version"] for m in d.refresh().models] == [1] and d.status().healthy
        assert "serving" in d.logs(tail=50)
    finally:
        d.delete()


class FakeCluster:
    """An in-memory stand-in for a Kubernetes API server: objects by (kind, namespace, name);
    a Deployment's rollout completes after ``rollout_polls`` reads of its status."""

    def __init__(self, rollout_polls=1):
        from types import SimpleNamespace as NS

        from kubernetes.client.rest import ApiException

        self.objects, self.calls, self.polls, self.rollout_polls = {}, [], {}, rollout_polls
        self.NS, self.ApiException = NS, ApiException

    def _create(self, kind):
        def create(ns, body):
            key = (kind, ns, body["metadata"]["name"])
            self.calls.append(("create", key))
            if key in self.objects:
                raise self.ApiException(status=409, reason="AlreadyExists")
            self.objects[key] = {**body, "generation": 1}
        return create

    def _patch(self, kind):
        def patch(name, ns, body):
            key = (kind, ns, name)
            self.calls.append(("patch", key))
            self.objects[key] = {**body, "generation": self.objects[key]["generation"] + 1}
            self.polls[key] = 0
        return patch

    def _delete(self, kind):
        def delete(name, ns, **_options):
            key = (kind, ns, name)
            self.calls.append(("delete", key))
            if self.objects.pop(key, None) is None:
                raise self.ApiException(status=404, reason="NotFound")
        return delete

    def read_namespaced_deployment_status(self, name, ns):
        key = ("Deployment", ns, name)
        if key not in self.objects:
            raise self.ApiException(status=404, reason="NotFound")
        obj, NS = self.objects[key], self.NS
        self.polls[key] = self.polls.get(key, 0) + 1
        done = self.polls[key] >= self.rollout_polls
        want = obj["spec"]["replicas"]
        status = NS(observed_generation=obj["generation"], updated_replicas=want if done else 0,
                    available_replicas=want if done else 0, replicas=want,
                    conditions=[NS(type="Progressing", reason="NewReplicaSetAvailable", message="")])
        return NS(spec=NS(replicas=want), status=status, metadata=NS(generation=obj["generation"]))

    def list_namespaced_pod(self, ns, label_selector):
        NS = self.NS
        app = label_selector.split("=")[1]
        obj = self.objects.get(("Deployment", ns, app))
        n = obj["spec"]["replicas"] if obj else 0
        pods = [NS(metadata=NS(name=f"{app}-{i}"), status=NS(conditions=[NS(type="Ready", status="True")])) for i in range(n)]
        return NS(items=pods)

    def read_namespaced_pod_log(self, pod, ns, tail_lines=None):
        return f"serving from {pod}"

    def clients(self):
        from types import SimpleNamespace as NS

        core = NS(create_namespaced_secret=self._create("Secret"), patch_namespaced_secret=self._patch("Secret"),
                  create_namespaced_persistent_volume_claim=self._create("PersistentVolumeClaim"),
                  create_namespaced_service=self._create("Service"), patch_namespaced_service=self._patch("Service"),
                  delete_namespaced_service=self._delete("Service"), delete_namespaced_secret=self._delete("Secret"),
                  list_namespaced_pod=self.list_namespaced_pod, read_namespaced_pod_log=self.read_namespaced_pod_log)
        apps = NS(create_namespaced_deployment=self._create("Deployment"), patch_namespaced_deployment=self._patch("Deployment"),
                  delete_namespaced_deployment=self._delete("Deployment"),
                  read_namespaced_deployment_status=self.read_namespaced_deployment_status)
        autoscaling = NS(create_namespaced_horizontal_pod_autoscaler=self._create("HorizontalPodAutoscaler"),
                         patch_namespaced_horizontal_pod_autoscaler=self._patch("HorizontalPodAutoscaler"),
                         delete_namespaced_horizontal_pod_autoscaler=self._delete("HorizontalPodAutoscaler"))
        return core, apps, autoscaling


def test_the_deployer_drives_the_api_as_a_cluster_expects(sqlite_registry, iris, trained, monkeypatch):
    """The calls of KubernetesDeployer against an in-memory API server: it replaces
    ``KubernetesDeployer._clients`` (the official client talking to a cluster), which cannot run
    here. Every object it is sent is also validated against the Kubernetes 1.37 schema."""
    from mlops_lab.deployers import kubernetes as K

    X, _ = iris
    ml.register_model(trained, "iris", sample_input=X.iloc[:2])
    ml.register_model(trained, "iris", sample_input=X.iloc[:2])
    cluster = FakeCluster(rollout_polls=2)
    monkeypatch.setattr(K.KubernetesDeployer, "_clients", staticmethod(lambda config: cluster.clients()))
    monkeypatch.setattr(K.time, "sleep", lambda s: None)
    d = ml.deploy("iris:1", name="svc", target="kubernetes", image="reg.local/iris:1", namespace="ml",
                  replicas=2, autoscale={"min": 2, "max": 4}, progress=False)
    assert d.url == "http://svc.ml.svc" and d.status().healthy and d.status().details["ready_pods"] == 2
    for obj in cluster.objects.values():
        kv.validate({k: v for k, v in obj.items() if k != "generation"}, VERSIONS[-1], strict=True)
    assert {k[0] for k in cluster.objects} == {"Secret", "Deployment", "Service", "HorizontalPodAutoscaler"}
    # the Secret holds the hashes of the keys the owner got
    from mlops_lab.deployers.keys import key_hash

    secret = cluster.objects[("Secret", "ml", "svc-keys")]
    assert json.loads(secret["stringData"]["keys.json"])["primary"] == key_hash(d.keys["primary"])
    # update: the existing objects are patched (a rolling update), the pods carry the new models
    cluster.calls.clear()
    d.update("iris:2", progress=False)
    assert ("patch", ("Deployment", "ml", "svc")) in cluster.calls
    dep = cluster.objects[("Deployment", "ml", "svc")]
    assert dep["spec"]["template"]["metadata"]["annotations"]["mlops-lab/models"] == "iris:2"
    assert dep["generation"] == 2
    d.rollback(progress=False)
    assert cluster.objects[("Deployment", "ml", "svc")]["spec"]["template"]["metadata"]["annotations"]["mlops-lab/models"] == "iris:1"
    assert [m["version"] for m in d.refresh().models] == [1] and d.revision == 3
    assert "serving from svc-0" in d.logs(tail=10)
    # delete removes what it made; a second delete is fine
    d.delete()
    assert cluster.objects == {} and ml.list_deployments() == []
    assert ml.delete_deployment("svc") is False


def test_a_rollout_that_never_finishes_is_reported_and_leaves_nothing(sqlite_registry, iris, trained, monkeypatch):
    """As above (``KubernetesDeployer._clients`` replaced by an in-memory API server), with pods
    that never become ready."""
    from mlops_lab.deployers import kubernetes as K

    X, _ = iris
    ml.register_model(trained, "iris", sample_input=X.iloc[:2])
    cluster = FakeCluster(rollout_polls=10**9)
    monkeypatch.setattr(K.KubernetesDeployer, "_clients", staticmethod(lambda config: cluster.clients()))
    monkeypatch.setattr(K.time, "sleep", lambda s: None)
    with pytest.raises(ml.DeploymentFailed, match="did not finish"):
        ml.deploy("iris:1", name="svc", target="kubernetes", image="reg.local/iris:1", startup_timeout=0.05, progress=False)
    assert cluster.objects == {} and ml.list_deployments() == []
