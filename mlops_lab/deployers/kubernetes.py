"""Kubernetes: the manifests of a deployment, and a deployer that applies them with the official
client and the user's kubeconfig.

``render_manifests`` returns the objects ``deploy`` applies (a Secret with the key hashes, a
ConfigMap holding the revision's server spec, a Deployment, a Service, and optionally a
HorizontalPodAutoscaler and a PersistentVolumeClaim), so users and GitOps pipelines can apply them
themselves (``mlops-lab deploy REF --target kubernetes --dry-run`` writes them as YAML). The pod
runs the image that :func:`mlops_lab.packaging.package` describes: the same scoring server, with
its probes on the server's health routes, serving the spec of its revision's ConfigMap.

Models: with the registry's artifacts on object storage the spec names each version by its
files, which the server fetches from the store at start (hashes checked), so any version the
image has the requirements of is served without a new image; otherwise the image's own folders.

Collected data: with the collection store on object storage the server writes there (credentials
from the Secret ``s3_secret`` names, as environment variables). Otherwise Parquet files under
``/opt/mlops-lab/collected``: with ``collect_claim="NAME"`` (an existing PersistentVolumeClaim) or
``collect_storage="1Gi"`` (a claim created with the manifests) they outlive the pods; read them by
mounting the claim where a notebook runs, or copying them into
``$MLOPS_LAB_HOME/collected/<deployment>/`` (``kubectl cp``), after which ``collected_data`` reads
them like a local deployment's. Without either, an ``emptyDir`` keeps them only for the pod's life.
"""

from __future__ import annotations

import json
import logging
import os
import time
from typing import Any

from ..errors import DeploymentFailed, InvalidInput
from ..packaging import APP_DIR, KEYS_FILE, SERVER_PORT
from ..registry.entities import DeploymentRecord
from ..workspace import in_workspace
from .base import Deployer, DeploymentStatus
from .common import default_image, k8s_name, runtime_spec

__all__ = ["render_manifests", "build_objects", "to_yaml", "KubernetesDeployer", "k8s_name"]

log = logging.getLogger("mlops_lab.kubernetes")

MANAGED_BY = "mlops-lab"
#: Where a pod mounts its revision's spec (a ConfigMap) and unpacks the models it fetches.
SPEC_DIR = f"{APP_DIR}/revision"
FETCHED_DIR = f"{APP_DIR}/fetched"
#: Old revisions a deployment keeps on the cluster: the Deployment's ReplicaSets
#: (``revisionHistoryLimit``, for ``kubectl rollout undo``) and their specs' ConfigMaps; older
#: ones are deleted after each rollout (mlops_lab's own rollback applies a new revision).
REVISION_HISTORY = 10


def build_objects(
    name: str,
    models: list[dict[str, Any]],
    *,
    image: str,
    key_hashes: dict[str, str] | None = None,
    namespace: str = "default",
    replicas: int = 1,
    cpu: str = "500m",
    memory: str = "512Mi",
    cpu_limit: str | None = "2",
    memory_limit: str | None = "2Gi",
    autoscale: dict[str, int] | None = None,
    service_type: str = "ClusterIP",
    collect_claim: str | None = None,
    collect_storage: str | None = None,
    image_pull_policy: str = "IfNotPresent",
    revision: int = 1,
    spec: dict[str, Any] | None = None,
    s3_secret: str | None = None,
) -> list[dict[str, Any]]:
    """The Kubernetes objects of a deployment serving ``models`` (``[{"name", "version"}]``)
    from ``image`` (built from :func:`mlops_lab.packaging.package`).

    ``key_hashes`` (``{"primary": sha256 hex, ...}``) go into a Secret mounted where the server
    reads them; without them the endpoint takes no key. ``autoscale={"min": 1, "max": 5,
    "cpu": 70}`` adds a HorizontalPodAutoscaler on CPU utilisation.

    ``spec`` (the revision's server spec, :func:`~mlops_lab.deployers.common.runtime_spec`) goes
    into a ConfigMap of the revision that the pods serve instead of the image's own; models it
    names with a ``fetch`` are unpacked from the artifact store into an ``emptyDir`` at start.
    ``s3_secret`` names a Secret whose keys (``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``)
    become the pods' environment, for the object stores.

    Examples
    --------
    >>> objs = build_objects("churn", [{"name": "churn", "version": 3}], image="registry.local/churn:3")
    >>> [o["kind"] for o in objs]
    ['Deployment', 'Service']
    """
    if replicas < 0:
        raise InvalidInput(f"replicas must be 0 or more, got {replicas}")
    if collect_claim and collect_storage:
        raise InvalidInput("give collect_claim (an existing claim) or collect_storage (a new one), not both")
    if service_type not in ("ClusterIP", "NodePort", "LoadBalancer"):
        raise InvalidInput(f"service_type must be ClusterIP, NodePort or LoadBalancer, not {service_type!r}")
    app = k8s_name(name)
    labels = {
        "app.kubernetes.io/name": "mlops-lab-scoring",
        "app.kubernetes.io/instance": app,
        "app.kubernetes.io/managed-by": MANAGED_BY,
    }
    selector = {"app.kubernetes.io/name": "mlops-lab-scoring", "app.kubernetes.io/instance": app}
    served = ",".join(f"{m['name']}:{m['version']}" for m in models)
    meta = lambda obj_name: {"name": obj_name, "namespace": namespace, "labels": dict(labels)}  # noqa: E731
    objects: list[dict[str, Any]] = []
    volumes: list[dict[str, Any]] = []
    mounts: list[dict[str, Any]] = []
    if key_hashes:
        objects.append({
            "apiVersion": "v1", "kind": "Secret", "metadata": meta(f"{app}-keys"), "type": "Opaque",
            "stringData": {"keys.json": json.dumps(key_hashes)},
        })
        volumes.append({"name": "keys", "secret": {"secretName": f"{app}-keys", "defaultMode": 0o440}})
        mounts.append({"name": "keys", "mountPath": f"{APP_DIR}/keys", "readOnly": True})
    command = server_command()
    if spec is not None:
        objects.append({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {**meta(f"{app}-r{revision}"), "labels": {**labels, "mlops-lab/revision": str(revision)}},
            "data": {"spec.json": json.dumps(spec, indent=2)},
        })
        volumes.append({"name": "spec", "configMap": {"name": f"{app}-r{revision}"}})
        mounts.append({"name": "spec", "mountPath": SPEC_DIR, "readOnly": True})
        command = server_command(f"{SPEC_DIR}/spec.json")
        if any(m.get("fetch") for m in spec["models"]):
            volumes.append({"name": "fetched", "emptyDir": {}})
            mounts.append({"name": "fetched", "mountPath": FETCHED_DIR})
    claim = collect_claim or (f"{app}-collected" if collect_storage else None)
    if collect_storage:
        objects.append({
            "apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": meta(claim),
            "spec": {"accessModes": ["ReadWriteMany" if replicas > 1 or autoscale else "ReadWriteOnce"],
                     "resources": {"requests": {"storage": collect_storage}}},
        })
    volumes.append({"name": "collected", **({"persistentVolumeClaim": {"claimName": claim}} if claim else {"emptyDir": {}})})
    mounts.append({"name": "collected", "mountPath": f"{APP_DIR}/collected"})
    resources: dict[str, Any] = {"requests": {"cpu": cpu, "memory": memory}}
    limits = {k: v for k, v in (("cpu", cpu_limit), ("memory", memory_limit)) if v}
    if limits:
        resources["limits"] = limits
    container = {
        "name": "scoring-server",
        "image": image,
        "imagePullPolicy": image_pull_policy,
        "command": command,
        "ports": [{"name": "http", "containerPort": SERVER_PORT, "protocol": "TCP"}],
        "env": [{"name": "PYTHONUNBUFFERED", "value": "1"}],
        **({"envFrom": [{"secretRef": {"name": s3_secret}}]} if s3_secret else {}),
        "resources": resources,
        "readinessProbe": {"httpGet": {"path": "/v2/health/ready", "port": "http"},
                           "periodSeconds": 5, "timeoutSeconds": 2, "failureThreshold": 3},
        "livenessProbe": {"httpGet": {"path": "/v2/health/live", "port": "http"},
                          "initialDelaySeconds": 10, "periodSeconds": 10, "timeoutSeconds": 2, "failureThreshold": 6},
        "startupProbe": {"httpGet": {"path": "/v2/health/ready", "port": "http"},
                         "periodSeconds": 2, "failureThreshold": 90},
        "securityContext": {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": False},
        "volumeMounts": mounts,
    }
    objects.append({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {**meta(app), "annotations": {"mlops-lab/models": served, "mlops-lab/revision": str(revision)}},
        "spec": {
            "replicas": replicas,
            "revisionHistoryLimit": REVISION_HISTORY,
            "selector": {"matchLabels": selector},
            # an update: one new pod at a time, an old one stops only once a new one is ready
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
            "template": {
                "metadata": {"labels": dict(labels), "annotations": {"mlops-lab/models": served, "mlops-lab/revision": str(revision)}},
                "spec": {"containers": [container], "volumes": volumes, "terminationGracePeriodSeconds": 30},
            },
        },
    })
    objects.append({
        "apiVersion": "v1", "kind": "Service", "metadata": meta(app),
        "spec": {"type": service_type, "selector": selector,
                 "ports": [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}]},
    })
    if autoscale:
        lo, hi = int(autoscale.get("min", 1)), int(autoscale.get("max", max(2, replicas)))
        if not 1 <= lo <= hi:
            raise InvalidInput(f"autoscale needs 1 <= min <= max, got min={lo} max={hi}")
        objects.append({
            "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler", "metadata": meta(app),
            "spec": {
                "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": app},
                "minReplicas": lo, "maxReplicas": hi,
                "metrics": [{"type": "Resource", "resource": {"name": "cpu", "target": {
                    "type": "Utilization", "averageUtilization": int(autoscale.get("cpu", 70))}}}],
            },
        })
    return objects


@in_workspace
def render_manifests(ref: Any, name: str | None = None, *, image: str | None = None, auth: bool = True,
                     **options: Any) -> list[dict[str, Any]]:
    """The Kubernetes objects that would serve ``ref`` (a reference or a list), for users and
    GitOps pipelines that apply manifests themselves; :func:`to_yaml` writes them out.

    ``image`` defaults to the tag :func:`mlops_lab.build_image` gives (``mlops-lab/NAME:VERSION``).
    With ``auth`` (the default) a primary and a secondary key are made: their hashes go into the
    Secret, the keys themselves into ``$MLOPS_LAB_HOME/keys/<name>.json`` for their owner.
    Other options: those of ``deploy(..., target="kubernetes")`` (``namespace``, ``replicas``,
    ``autoscale``, ``s3_secret``, ...). The objects are those :func:`mlops_lab.deploy` applies:
    with the registry's artifacts on object storage the pods fetch their versions from it, so one
    image serves any version whose requirements it has.

    Examples
    --------
    >>> print(to_yaml(render_manifests("churn:3", image="registry.local/churn:3", replicas=2)))  # doctest: +SKIP
    """
    from ..refs import check_name, parse_ref
    from ..workspace import current_registry
    from .keys import SLOTS, key_file, key_hash, new_key, write_private

    reg = current_registry()
    refs = list(ref) if isinstance(ref, (list, tuple)) else [ref]
    resolved = [parse_ref(reg.resolve(r)) for r in refs]
    name = check_name(name or resolved[0].name, "deployment name")
    models = [{"name": r.name, "version": r.version, "traffic": 100, **({"route": r.name} if len(resolved) > 1 else {})}
              for r in resolved]
    hashes = None
    if auth:
        keys = {slot: new_key() for slot in SLOTS}
        write_private(key_file(reg.home, name), keys)
        hashes = {slot: key_hash(k) for slot, k in keys.items()}
    image = image or default_image(resolved[0].name, resolved[0].version)
    from .targets import check_options

    check_options("kubernetes", options)
    # what deploy() would apply: the revision's spec in a ConfigMap, the models fetched from an
    # artifact store on object storage, collection to the configured store
    config = {**options, "image": image, "auth": auth, "key_hashes": hashes}
    return KubernetesDeployer(reg)._objects(name, models, config, 1, [f"{r.name}:{r.version}" for r in resolved])


#: What the deployer does to the API, verb by verb: the rules of :func:`deployer_role`.
DEPLOYER_RULES: list[dict[str, Any]] = [
    {"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["get", "create", "patch", "delete"]},
    {"apiGroups": ["apps"], "resources": ["deployments/status"], "verbs": ["get"]},
    {"apiGroups": [""], "resources": ["secrets", "services"], "verbs": ["create", "patch", "delete"]},
    {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["create", "patch", "deletecollection"]},
    {"apiGroups": [""], "resources": ["persistentvolumeclaims"], "verbs": ["create"]},
    {"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]},
    {"apiGroups": [""], "resources": ["pods/log"], "verbs": ["get"]},
    {"apiGroups": ["autoscaling"], "resources": ["horizontalpodautoscalers"], "verbs": ["create", "patch", "delete"]},
]


def deployer_role(namespace: str = "default", name: str = "mlops-lab-deployer") -> dict[str, Any]:
    """The RBAC Role that grants what ``target="kubernetes"`` needs in ``namespace`` and nothing
    more (bind it to the service account or user whose kubeconfig the deployer uses)."""
    return {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
            "metadata": {"name": name, "namespace": namespace, "labels": {"app.kubernetes.io/managed-by": "mlops-lab"}},
            "rules": [dict(rule) for rule in DEPLOYER_RULES]}


def _refused(exc: Any, doing: str) -> DeploymentFailed:
    """An ApiException as one line: for a 403, the permission that is missing."""
    message = exc.reason or ""
    try:
        message = json.loads(exc.body).get("message") or message
    except (TypeError, ValueError, AttributeError):
        pass
    message = " ".join(str(message).split())
    if exc.status == 403:
        return DeploymentFailed(f"Kubernetes refused to {doing}: {message}",
                                hint="grant it in the deployer's Role (mlops_lab.deployers.kubernetes.deployer_role())")
    return DeploymentFailed(f"Kubernetes refused to {doing}: {message}")


def server_command(spec: str = f"{APP_DIR}/spec.json") -> list[str]:
    """The container command of the scoring server (the Dockerfile's CMD, spelled out), serving
    the image's spec or the revision's."""
    return [f"{APP_DIR}/venv/bin/python", "-m", "mlops_lab.serving.server", "--spec", spec,
            "--host", "0.0.0.0", "--port", str(SERVER_PORT)]


def to_yaml(objects: list[dict[str, Any]]) -> str:
    """The objects as one multi-document YAML stream (``kubectl apply -f``)."""
    import yaml

    return "".join("---\n" + yaml.safe_dump(o, sort_keys=False) for o in objects)


class KubernetesDeployer(Deployer):
    """``target="kubernetes"``: applies the manifests with the ``kubernetes`` client.

    Config: ``image`` (required: pushed where the cluster pulls from), ``namespace``,
    ``context`` (kubeconfig context), ``replicas``, ``cpu``/``memory`` and limits, ``autoscale``,
    ``service_type``, ``collect_claim``/``collect_storage``, ``s3_secret``. An update (a canary
    too) applies the new revision's ConfigMap and patches the Deployment, which Kubernetes rolls
    out with no unready pod taking traffic; rollback re-applies the previous revision's models.
    """

    target = "kubernetes"

    def __init__(self, registry) -> None:
        self.registry = registry

    # -- client ------------------------------------------------------------------------------

    @staticmethod
    def _clients(config: dict[str, Any]):
        try:
            from kubernetes import client
            from kubernetes import config as kconfig
        except ImportError:
            raise DeploymentFailed("target='kubernetes' needs the kubernetes client: pip install 'mlops-lab[kubernetes]'") from None
        try:
            # KUBECONFIG read now (the client reads it once, when it is imported), into a client
            # of this call's own: no process-wide default configuration is changed
            api = kconfig.new_client_from_config(config_file=os.environ.get("KUBECONFIG") or None,
                                                 context=config.get("context"))
        except Exception as exc:  # noqa: BLE001 - the client raises several types for "no config"
            try:
                kconfig.load_incluster_config()
                api = client.ApiClient()
            except Exception:  # noqa: BLE001
                raise DeploymentFailed(f"no Kubernetes cluster configured: {exc}",
                                       hint="set KUBECONFIG (or use target='local' / render_manifests)") from None
        return client.CoreV1Api(api), client.AppsV1Api(api), client.AutoscalingV2Api(api)

    def _objects(self, name: str, models: list[dict[str, Any]], config: dict[str, Any], revision: int,
                 image_models: list[str]) -> list[dict[str, Any]]:
        if not config.get("image"):
            raise InvalidInput("target='kubernetes' needs image='REGISTRY/NAME:TAG' (build it with mlops_lab.build_image)")
        keys = config.get("key_hashes") if config.get("auth", True) else None
        opts = {k: config[k] for k in ("namespace", "replicas", "cpu", "memory", "cpu_limit", "memory_limit", "autoscale",
                                      "service_type", "collect_claim", "collect_storage", "image_pull_policy",
                                      "s3_secret") if k in config}
        spec = runtime_spec(name, models, config, revision, keys_file=f"{APP_DIR}/{KEYS_FILE}",
                            collect_to=self._collect_to(config), model_folder=self._model_folder(image_models))
        return build_objects(name, models, image=config["image"], key_hashes=keys, revision=revision, spec=spec, **opts)

    def _collect_to(self, config: dict[str, Any]) -> dict[str, Any] | None:
        """Where the pods write collected data: the object store itself, or the claim (or
        ``emptyDir``) mounted at ``collected/``."""
        if config.get("collect") is False:
            return None
        from ..monitoring.store import CollectionStore

        store = CollectionStore.of(self.registry.settings)
        if store.local:
            return {"folder": f"{APP_DIR}/collected"}
        store.check()
        return store.spec()

    def _model_folder(self, image_models: list[str]):
        """Where a pod finds each model: fetched from the artifact store when that is object
        storage (any version, so updates and canaries need no new image), else in the image,
        which holds the versions it was built for and no other."""
        settings = self.registry.settings
        if settings.artifacts.startswith("s3://"):
            from ..registry.cache import version_metadata

            def fetched(m: dict[str, Any]) -> dict[str, Any]:
                meta = version_metadata(self.registry.get_version(f"{m['name']}:{m['version']}"))
                return {"folder": f"{FETCHED_DIR}/{m['name']}-{m['version']}",
                        "fetch": {"store": settings.artifacts, "endpoint_url": settings.s3_endpoint_url, "metadata": meta}}
            return fetched

        def in_image(m: dict[str, Any]) -> dict[str, Any]:
            ref = f"{m['name']}:{m['version']}"
            if ref not in image_models:
                raise InvalidInput(
                    f"the pods cannot serve {ref}: their image holds {', '.join(image_models)} and the registry's "
                    "artifacts are in a local folder the cluster cannot read",
                    hint="put the artifacts on object storage (artifacts = \"s3://...\"), or deploy again with an "
                         "image built for it (mlops_lab.build_image)")
            return {"folder": f"{APP_DIR}/models/{m['name']}-{m['version']}"}
        return in_image

    def _apply(self, objects: list[dict[str, Any]], config: dict[str, Any]) -> None:
        from kubernetes.client.rest import ApiException

        core, apps, autoscaling = self._clients(config)
        for obj in objects:
            kind, meta = obj["kind"], obj["metadata"]
            ns, nm = meta["namespace"], meta["name"]
            create, patch = {
                "Secret": (core.create_namespaced_secret, core.patch_namespaced_secret),
                "ConfigMap": (core.create_namespaced_config_map, core.patch_namespaced_config_map),
                "PersistentVolumeClaim": (core.create_namespaced_persistent_volume_claim, None),
                "Deployment": (apps.create_namespaced_deployment, apps.patch_namespaced_deployment),
                "Service": (core.create_namespaced_service, core.patch_namespaced_service),
                "HorizontalPodAutoscaler": (autoscaling.create_namespaced_horizontal_pod_autoscaler,
                                            autoscaling.patch_namespaced_horizontal_pod_autoscaler),
            }[kind]
            try:
                create(ns, obj)
            except ApiException as exc:
                if exc.status == 404 and kind == "HorizontalPodAutoscaler":
                    raise DeploymentFailed(f"the cluster does not serve {obj['apiVersion']}, which autoscale= needs",
                                           hint="Kubernetes 1.23 or later serves it; deploy without autoscale= "
                                                "(or with replicas=)") from None
                if exc.status != 409:
                    raise _refused(exc, f"create the {kind} {nm}") from None
                if patch is not None:
                    try:
                        patch(nm, ns, obj)
                    except ApiException as exc2:
                        raise _refused(exc2, f"patch the {kind} {nm}") from None

    def _wait_rollout(self, name: str, config: dict[str, Any], progress, timeout: float) -> None:
        _, apps, _ = self._clients(config)
        ns, app = config.get("namespace", "default"), k8s_name(name)
        end = time.monotonic() + timeout
        from kubernetes.client.rest import ApiException

        while time.monotonic() < end:
            try:
                d = apps.read_namespaced_deployment_status(app, ns)
            except ApiException as exc:
                raise _refused(exc, f"read the rollout of {app}") from None
            st = d.status
            want = d.spec.replicas or 0
            if (st.observed_generation or 0) >= d.metadata.generation and (st.updated_replicas or 0) >= want \
                    and (st.available_replicas or 0) >= want and (st.replicas or 0) <= want:
                return
            progress.step(f"rolling out: {st.updated_replicas or 0}/{want} updated, {st.available_replicas or 0} available")
            time.sleep(2)
        raise DeploymentFailed(f"the rollout of {app} did not finish in {timeout:g} s", hint="kubectl rollout status deployment/" + app)

    # -- the interface -----------------------------------------------------------------------

    def deploy(self, name, models, config, progress) -> DeploymentRecord:
        # the image holds the versions it was built for (build_image); others are fetched, or refused
        image_models = [f"{m['name']}:{m['version']}" for m in models]
        objects = self._objects(name, models, config, 1, image_models)
        progress.step("applying manifests")
        self._apply(objects, config)
        self._wait_rollout(name, config, progress, float(config.get("startup_timeout", 600)))
        ns, app = config.get("namespace", "default"), k8s_name(name)
        return self.registry.update_deployment(name, status="healthy", endpoint=f"http://{app}.{ns}.svc",
                                               state={"namespace": ns, "image_models": image_models})

    def update(self, record, models, note, progress) -> DeploymentRecord:
        objects = self._objects(record.name, models, record.config, record.revision + 1,
                                record.state.get("image_models", []))
        progress.step("patching the Deployment (rolling update)")
        self._apply(objects, record.config)
        self._wait_rollout(record.name, record.config, progress, float(record.config.get("startup_timeout", 600)))
        updated = self.registry.add_deployment_revision(record.name, models, config=record.config, note=note)
        self._prune_specs(updated)
        return updated

    def _prune_specs(self, record) -> None:
        """Delete the ConfigMaps of revisions older than the ReplicaSets the Deployment keeps
        (one per update and rollback would pile up for the deployment's lifetime). The update
        has happened: a refusal is logged, and the next update or ``delete`` tries again."""
        from kubernetes.client.rest import ApiException

        core, _, _ = self._clients(record.config)
        ns, app = record.state.get("namespace", "default"), k8s_name(record.name)
        keep = ",".join(str(r) for r in range(max(1, record.revision - REVISION_HISTORY), record.revision + 1))
        try:
            core.delete_collection_namespaced_config_map(
                ns, label_selector=f"app.kubernetes.io/instance={app},mlops-lab/revision,mlops-lab/revision notin ({keep})",
                _preload_content=False)
        except ApiException as exc:
            log.warning("%s", _refused(exc, f"delete the old revisions' ConfigMaps of {app}"))

    def status(self, record) -> DeploymentStatus:
        def make(state, reason, details=None):
            return DeploymentStatus(state, reason, record.revision, record.models, record.endpoint, details or {})

        try:
            core, apps, _ = self._clients(record.config)
            ns, app = record.state.get("namespace", "default"), k8s_name(record.name)
            d = apps.read_namespaced_deployment_status(app, ns)
        except DeploymentFailed as exc:
            return make("unhealthy", str(exc))
        except Exception as exc:  # noqa: BLE001 - ApiException and transport errors
            return make("unhealthy", f"cannot read deployment {record.name}: {exc}")
        conditions = {c.type: c for c in (d.status.conditions or [])}
        pods = core.list_namespaced_pod(ns, label_selector=f"app.kubernetes.io/instance={app}").items
        ready = sum(1 for p in pods if any(c.type == "Ready" and c.status == "True" for c in (p.status.conditions or [])))
        details = {"replicas": d.spec.replicas, "ready_pods": ready, "pods": len(pods)}
        progressing = conditions.get("Progressing")
        if progressing is not None and progressing.reason == "ProgressDeadlineExceeded":
            return make("unhealthy", f"rollout stuck: {progressing.message}", details)
        if ready >= (d.spec.replicas or 0) and ready > 0:
            return make("healthy", "", details)
        if (d.spec.replicas or 0) == 0:
            return make("stopped", "scaled to 0 replicas", details)
        return make("starting", f"{ready}/{d.spec.replicas} pods ready", details)

    def logs(self, record, tail: int) -> str:
        core, _, _ = self._clients(record.config)
        ns, app = record.state.get("namespace", "default"), k8s_name(record.name)
        out = []
        for pod in core.list_namespaced_pod(ns, label_selector=f"app.kubernetes.io/instance={app}").items:
            text = core.read_namespaced_pod_log(pod.metadata.name, ns, tail_lines=tail or None)
            out.append(f"==> {pod.metadata.name} <==\n{text}")
        return "\n".join(out)

    def delete(self, record) -> None:
        from kubernetes.client.rest import ApiException

        core, apps, autoscaling = self._clients(record.config)
        ns, app = record.state.get("namespace", "default"), k8s_name(record.name)
        # The answers are not decoded (_preload_content=False): servers before 1.21 answer a
        # Service's deletion with a Status, which the client (37) fails to read as a Service.
        for call in (lambda: autoscaling.delete_namespaced_horizontal_pod_autoscaler(app, ns, _preload_content=False),
                     lambda: apps.delete_namespaced_deployment(app, ns, _preload_content=False),
                     lambda: core.delete_namespaced_service(app, ns, _preload_content=False),
                     lambda: core.delete_namespaced_secret(f"{app}-keys", ns, _preload_content=False),
                     lambda: core.delete_collection_namespaced_config_map(
                         ns, label_selector=f"app.kubernetes.io/instance={app}", _preload_content=False)):
            try:
                call()
            except ApiException as exc:
                if exc.status != 404:
                    raise _refused(exc, f"delete {app}") from None
