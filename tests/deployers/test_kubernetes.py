"""Kubernetes manifests: every generated object is validated against the official schemas of
three recent Kubernetes versions (kubernetes-validate, strict), which the 1.20 control plane of
the deployer's tests (test_kubernetes_cluster.py) is too old to check."""

from __future__ import annotations

import json

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
        "revision spec, fetched models, S3 secret": build_objects(
            "iris", MODELS, image="reg.local/runtime:1", revision=4, s3_secret="team-s3",
            spec={"deployment": "iris", "revision": 4, "collect": {"enabled": True, "folder": "s3://team/collected"},
                  "models": [{"name": "iris", "version": 3, "traffic": 100, "folder": "/opt/mlops-lab/fetched/iris-3",
                              "fetch": {"store": "s3://team/artifacts", "metadata": {"files": []}}}]}),
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
    # the pods serve the revision's spec (what deploy() applies), here from the image's folders
    spec = json.loads(next(o for o in objs if o["kind"] == "ConfigMap")["data"]["spec.json"])
    assert spec["models"][0]["folder"] == "/opt/mlops-lab/models/iris-1" and spec["keys_file"].endswith("keys.json")
    bare = render_manifests("iris", auth=False)
    assert [o["kind"] for o in bare] == ["ConfigMap", "Deployment", "Service"]
    assert json.loads(bare[0]["data"]["spec.json"])["keys_file"] is None
    with pytest.raises(ml.InvalidInput, match="takes no option 'replica'"):
        render_manifests("iris", replica=2)


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
