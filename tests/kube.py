"""A real Kubernetes control plane on loopback for the tests (etcd, kube-apiserver with TLS, token
authentication and RBAC, kube-controller-manager, kube-scheduler; binaries from
``.ci/kubernetes.sh``) and a test node.

The test node stands in for a kubelet, which cannot run here: it registers a Ready Node, renews
its lease, and moves the pods the scheduler binds to it to Running and Ready (as kwok does), so
Deployments, ReplicaSets, rollouts and Services behave as on a cluster. It replaces the kubelet's
pod status updates only: scheduling, ReplicaSets and rollouts are the real controllers'. A pod
of a model version in ``TestNode.never_ready`` (its ``mlops-lab/models`` annotation) stays
Running but never Ready. Pod IPs are data only
(10.244.0.x): nothing sends traffic to them.
"""

from __future__ import annotations

import datetime as dt
import os
import socket
import subprocess
import threading
import time
from pathlib import Path

NODE = "mlops-lab-test-node"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(*cmd: str, cwd: Path) -> None:
    subprocess.run(cmd, cwd=cwd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


class ControlPlane:
    def __init__(self, bin_dir: Path, root: Path) -> None:
        self.bin, self.root = Path(bin_dir), Path(root)
        self.procs: list[subprocess.Popen] = []
        self.port = _free_port()
        self.server = f"https://127.0.0.1:{self.port}"
        self.admin_token = os.urandom(16).hex()

    # -- set-up ------------------------------------------------------------------------------

    def _certs(self) -> None:
        r = self.root
        _run("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt",
             "-days", "2", "-subj", "/CN=mlops-lab-test-ca", cwd=r)
        (r / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:kubernetes.default.svc\n")
        _run("openssl", "req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr",
             "-subj", "/CN=kube-apiserver", cwd=r)
        _run("openssl", "x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
             "-out", "server.crt", "-days", "2", "-extfile", "san.ext", cwd=r)
        _run("openssl", "genrsa", "-out", "sa.key", "2048", cwd=r)
        _run("openssl", "rsa", "-in", "sa.key", "-pubout", "-out", "sa.pub", cwd=r)
        (r / "tokens.csv").write_text(f"{self.admin_token},admin,admin,system:masters\n")

    def kubeconfig(self, token: str, path: Path, namespace: str = "default") -> Path:
        """A kubeconfig for this API server with a bearer token."""
        path.write_text(
            "apiVersion: v1\nkind: Config\n"
            f"clusters:\n- name: test\n  cluster:\n    server: {self.server}\n    certificate-authority: {self.root / 'ca.crt'}\n"
            f"users:\n- name: user\n  user:\n    token: {token}\n"
            f"contexts:\n- name: test\n  context:\n    cluster: test\n    user: user\n    namespace: {namespace}\n"
            "current-context: test\n")
        return path

    def _start(self, name: str, *args: str) -> None:
        log = open(self.root / f"{name}.log", "wb")
        self.procs.append(subprocess.Popen([str(self.bin / name), *args], stdout=log, stderr=subprocess.STDOUT,
                                           cwd=self.root))
        log.close()

    def start(self, timeout: float = 60.0) -> None:
        r = self.root
        self._certs()
        etcd, peer = _free_port(), _free_port()
        self._start("etcd", "--data-dir", str(r / "etcd"), "--listen-client-urls", f"http://127.0.0.1:{etcd}",
                    "--advertise-client-urls", f"http://127.0.0.1:{etcd}", "--listen-peer-urls", f"http://127.0.0.1:{peer}",
                    "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
                    "--initial-cluster", f"default=http://127.0.0.1:{peer}")
        self._start("kube-apiserver", f"--etcd-servers=http://127.0.0.1:{etcd}", "--bind-address=127.0.0.1",
                    f"--secure-port={self.port}", "--insecure-port=0", f"--tls-cert-file={r / 'server.crt'}",
                    f"--tls-private-key-file={r / 'server.key'}", f"--client-ca-file={r / 'ca.crt'}",
                    f"--token-auth-file={r / 'tokens.csv'}", "--authorization-mode=RBAC",
                    f"--service-account-key-file={r / 'sa.pub'}", f"--service-account-signing-key-file={r / 'sa.key'}",
                    "--service-account-issuer=https://kubernetes.default.svc", "--service-cluster-ip-range=10.96.0.0/16",
                    "--enable-priority-and-fairness=false")
        admin = self.kubeconfig(self.admin_token, r / "admin.kubeconfig")
        self._wait_ready(timeout)
        common = [f"--kubeconfig={admin}", "--leader-elect=false", "--port=0", "--bind-address=127.0.0.1"]
        self._start("kube-controller-manager", *common, "--secure-port=0",
                    f"--service-account-private-key-file={r / 'sa.key'}", f"--root-ca-file={r / 'ca.crt'}",
                    "--use-service-account-credentials=false")
        self._start("kube-scheduler", *common, "--secure-port=0")

    def _wait_ready(self, timeout: float) -> None:
        import ssl
        import urllib.request

        ctx = ssl.create_default_context(cafile=str(self.root / "ca.crt"))
        end = time.monotonic() + timeout
        while True:
            for p in self.procs:
                if p.poll() is not None:
                    raise RuntimeError(f"{p.args[0]} exited: " + self.log_tail(Path(p.args[0]).name))
            try:
                req = urllib.request.Request(f"{self.server}/readyz", headers={"Authorization": f"Bearer {self.admin_token}"})
                with urllib.request.urlopen(req, context=ctx, timeout=2) as resp:
                    if resp.status == 200:
                        return
            except OSError:
                pass
            if time.monotonic() > end:
                raise RuntimeError("kube-apiserver not ready: " + self.log_tail("kube-apiserver"))
            time.sleep(0.2)

    def log_tail(self, name: str, n: int = 2000) -> str:
        try:
            return (self.root / f"{name}.log").read_text(errors="replace")[-n:]
        except OSError:
            return ""

    def stop(self) -> None:
        for p in reversed(self.procs):
            p.terminate()
        for p in self.procs:
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()

    def api(self):
        """An ApiClient with the admin token."""
        from kubernetes import config

        return config.new_client_from_config(str(self.root / "admin.kubeconfig"))


class TestNode:
    """Registers a Ready Node and plays its kubelet's part in pod status (see the module's
    docstring); runs in a thread until :meth:`stop`."""

    def __init__(self, api_client) -> None:
        self.api = api_client
        self._stop = threading.Event()
        self._ips: dict[str, str] = {}
        #: Model versions (``"name:version"``) whose pods never become Ready.
        self.never_ready: set[str] = set()
        self.thread = threading.Thread(target=self._run, name="test-node", daemon=True)

    def start(self) -> None:
        from kubernetes import client

        core = client.CoreV1Api(self.api)
        core.create_node({
            "apiVersion": "v1", "kind": "Node", "metadata": {"name": NODE, "labels": {"kubernetes.io/hostname": NODE}},
        })
        self._heartbeat(core)
        self.thread.start()

    def _heartbeat(self, core) -> None:
        now = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        core.patch_node_status(NODE, {"status": {
            "capacity": {"cpu": "16", "memory": "64Gi", "pods": "110"},
            "allocatable": {"cpu": "16", "memory": "64Gi", "pods": "110"},
            # the node's address is loopback and its kubelet port closed: a log request is refused
            # at once, never sent anywhere else
            "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}, {"type": "Hostname", "address": NODE}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": _free_port()}},
            "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady", "message": "test node",
                            "lastHeartbeatTime": now, "lastTransitionTime": now}],
            "nodeInfo": {"kubeletVersion": "v1.20.2", "kubeProxyVersion": "v1.20.2", "architecture": "amd64",
                         "operatingSystem": "linux", "containerRuntimeVersion": "test://1", "osImage": "test",
                         "kernelVersion": "test", "machineID": "", "systemUUID": "", "bootID": ""},
        }})

    def _run(self) -> None:
        from kubernetes import client

        core = client.CoreV1Api(self.api)
        last_beat = time.monotonic()
        while not self._stop.is_set():
            try:
                if time.monotonic() - last_beat > 10:
                    self._heartbeat(core)
                    last_beat = time.monotonic()
                pods = core.list_pod_for_all_namespaces(field_selector=f"spec.nodeName={NODE}").items
                for pod in pods:
                    self._settle(core, pod)
            except Exception:  # noqa: BLE001 - the API server is stopping, or a pod went meanwhile
                pass
            self._stop.wait(0.2)

    def _settle(self, core, pod) -> None:
        if pod.metadata.deletion_timestamp is not None:
            # no kubelet to stop containers: the pod is gone at once
            try:
                core.delete_namespaced_pod(pod.metadata.name, pod.metadata.namespace, grace_period_seconds=0)
            except Exception:  # noqa: BLE001
                pass
            return
        ready = (pod.metadata.annotations or {}).get("mlops-lab/models") not in self.never_ready
        status = pod.status
        is_ready = any(c.type == "Ready" and c.status == "True" for c in (status.conditions or []))
        if status.phase == "Running" and is_ready == ready:
            return
        uid = pod.metadata.uid
        ip = self._ips.setdefault(uid, f"10.244.0.{len(self._ips) % 250 + 2}")
        now = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        flag = "True" if ready else "False"
        core.patch_namespaced_pod_status(pod.metadata.name, pod.metadata.namespace, {"status": {
            "phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}], "hostIP": "127.0.0.1", "startTime": now,
            "conditions": [{"type": t, "status": s, "lastTransitionTime": now} for t, s in
                           (("Initialized", "True"), ("PodScheduled", "True"), ("ContainersReady", flag), ("Ready", flag))],
            "containerStatuses": [{"name": c.name, "image": c.image, "imageID": "", "ready": ready, "restartCount": 0,
                                   "started": True, "state": {"running": {"startedAt": now}}} for c in pod.spec.containers],
        }})

    def stop(self) -> None:
        self._stop.set()
        self.thread.join(5)
