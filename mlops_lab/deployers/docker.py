"""``target="docker"``: the scoring server in a container, on a stable address.

Each revision runs from an image built by :func:`build_image` (the package of its models, see
:mod:`mlops_lab.packaging`): the container runs with an init process, publishes on a loopback
port, and gets its revision's ``spec.json`` (deployment name, traffic split, collection), the
key hashes and the home folder's ``collected/`` as mounts, so collected data lands where
``collected_data`` reads it. A forwarder process (:mod:`.forwarder`) owns the deployment's
address; an update starts the new container beside the old, switches the forwarder once the new
one is ready, lets the old drain, then stops it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from ..errors import DeploymentFailed, InvalidInput
from ..packaging import APP_DIR, DEFAULT_BASE_IMAGE, KEYS_FILE, SERVER_PORT, package
from ..registry.entities import DeploymentRecord
from .base import Deployer, DeploymentStatus
from .common import default_image, deployment_dir, k8s_name, pid_is, read_line, runtime_spec

__all__ = ["DockerDeployer", "build_image", "docker_client"]

LABEL = "mlops-lab.deployment"


def docker_client():
    """A client of the Docker engine, or a clear error when none answers."""
    try:
        import docker
    except ImportError:
        raise DeploymentFailed("target='docker' needs the Docker SDK: pip install 'mlops-lab[docker]'") from None
    try:
        client = docker.from_env(timeout=120)
        client.ping()
    except Exception as exc:  # noqa: BLE001 - DockerException, connection errors
        raise DeploymentFailed(f"Docker is not running: start it or use target='local' ({exc})") from None
    return client


def build_image(refs: Any, tag: str | None = None, *, base_image: str = DEFAULT_BASE_IMAGE, progress=None,
                client=None) -> str:
    """Build (or reuse) the image of one or several versions; returns its tag.

    The build context is :func:`mlops_lab.packaging.package`'s folder: wheels prepared here, so
    the build needs no network. An image already built from the same versions, base and
    requirements is reused. Default tag: ``mlops-lab/NAME:VERSION`` (one version) or
    ``mlops-lab/NAME:<content hash>``.

    Examples
    --------
    >>> build_image("churn:3", base_image="python:3.11-slim")  # doctest: +SKIP
    'mlops-lab/churn:3'
    """
    from ..registry.api import get_model
    from ..workspace import current_registry

    client = client or docker_client()
    ref_list = [refs] if not isinstance(refs, (list, tuple)) else list(refs)
    versions = [get_model(r) for r in ref_list]
    from ..packaging import _dockerfile

    recipe = [[v.ref, [f.sha256 for f in v.files]] for v in versions] + [base_image, _dockerfile(base_image)]
    key = hashlib.sha256(json.dumps(recipe).encode()).hexdigest()[:16]
    if tag is None:
        tag = default_image(versions[0].name, versions[0].version) if len(versions) == 1 else \
            f"mlops-lab/{k8s_name(versions[0].name)}:{key}"
    try:
        image = client.images.get(tag)
        if image.labels.get("mlops-lab.content") == key:
            if progress:
                progress.step(f"image {tag} ({image_size(client, tag) / 1e6:.0f} MB, already built)")
            return tag
    except Exception:  # noqa: BLE001 - ImageNotFound
        pass
    home = current_registry().home
    work = Path(tempfile.mkdtemp(prefix="build-", dir=_mkdir(home / "build")))
    try:
        if progress:
            progress.step("packaging the model and its wheels")
        package([v.ref for v in versions], work / "ctx", base_image=base_image, progress=False)
        (work / "ctx" / "Dockerfile").write_text((work / "ctx" / "Dockerfile").read_text() + f'LABEL mlops-lab.content="{key}"\n')
        t0 = time.monotonic()
        for chunk in client.api.build(path=str(work / "ctx"), tag=tag, rm=True, forcerm=True, decode=True,
                                      buildargs={"BASE_IMAGE": base_image}):
            if "error" in chunk:
                raise DeploymentFailed(f"building {tag} failed: {chunk['error'].strip()}",
                                       hint=f"is the base image {base_image!r} present? (docker images)")
            line = (chunk.get("stream") or "").strip()
            if line.startswith("Step ") and progress:
                progress.step(f"building {tag}: {line[:70]} ({time.monotonic() - t0:.0f} s)")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if progress:
        progress.step(f"built {tag} ({image_size(client, tag) / 1e6:.0f} MB)")
    return tag


def image_size(client, tag: str) -> int:
    """Bytes of an image, as ``docker images`` reports them."""
    return int(client.images.get(tag).attrs.get("Size", 0))


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


class DockerDeployer(Deployer):
    target = "docker"

    def __init__(self, registry) -> None:
        self.registry = registry

    # -- pieces --------------------------------------------------------------------------------

    def _folder(self, name: str) -> Path:
        return deployment_dir(self.registry.home, name)

    def _collection_store(self):
        """The collection store, checked: a container cannot reach a store on the host's loopback."""
        from ..monitoring.store import CollectionStore

        store = CollectionStore.of(self.registry.settings)
        if not store.local:
            from urllib.parse import urlsplit

            host = urlsplit(store.endpoint_url or "").hostname or ""
            if host in ("localhost", "::1") or host.startswith("127."):
                raise InvalidInput(f"a container cannot reach the collection store at {store.endpoint_url}: that is the "
                                   "host's loopback address", hint="give an S3 endpoint the container can reach, "
                                   "collect to a folder, or deploy with target='local'")
            store.check()
        return store

    def _runtime_spec(self, name: str, models: list[dict[str, Any]], config: dict[str, Any], revision: int,
                      store: Any = None) -> Path:
        """What this revision's container serves: written on the host, mounted over the image's."""
        # where the container's collector writes: the mounted folder, or the object store itself
        spec = runtime_spec(name, models, config, revision, keys_file=KEYS_FILE,
                            collect_to=None if store is None else {"folder": "collected"} if store.local else store.spec(),
                            model_folder=lambda m: {"folder": f"models/{m['name']}-{m['version']}"})
        path = self._folder(name) / "revisions" / f"r{revision}-{int(time.time())}" / "spec.json"
        _mkdir(path.parent)
        path.write_text(json.dumps(spec, indent=2))
        return path

    def _start_container(self, client, name: str, models, config, revision: int, progress) -> dict[str, Any]:
        if config.get("entry_script"):
            raise InvalidInput("entry scripts run on target='local' only, for now")
        # checked before the image is built: a store the container cannot use fails in one line now
        store = self._collection_store() if config.get("collect") not in (False, None) else None
        image = config.get("image") or build_image([f"{m['name']}:{m['version']}" for m in models],
                                                   base_image=config.get("base_image", DEFAULT_BASE_IMAGE),
                                                   progress=progress, client=client)
        spec = self._runtime_spec(name, models, config, revision, store)
        keys_dir = _mkdir(self._folder(name))
        volumes = {str(spec): {"bind": f"{APP_DIR}/spec.json", "mode": "ro"},
                   str(keys_dir): {"bind": f"{APP_DIR}/keys", "mode": "ro"}}
        environment: dict[str, str] = {}
        if store is not None:
            if store.local:
                volumes[str(_mkdir(store.folder))] = {"bind": f"{APP_DIR}/collected", "mode": "rw"}
            else:
                environment = _s3_environment()
        cname = f"mlops-lab-{k8s_name(name)}-r{revision}-{os.urandom(3).hex()}"
        progress.step(f"starting container {cname}")
        container = client.containers.run(
            image, detach=True, init=True, name=cname,
            ports={f"{SERVER_PORT}/tcp": ("127.0.0.1", None)},
            volumes=volumes, environment=environment,
            labels={LABEL: name, "mlops-lab.revision": str(revision)},
            stop_signal="SIGTERM",
        )
        try:
            port = self._wait_ready(container, float(config.get("startup_timeout", 120)), progress)
        except BaseException:
            _remove(container)
            raise
        return {"container": cname, "id": container.id, "port": port, "image": image, "revision": revision,
                "image_size": image_size(client, image)}

    @staticmethod
    def _wait_ready(container, timeout: float, progress) -> int:
        end = time.monotonic() + timeout
        port = None
        while time.monotonic() < end:
            container.reload()
            if container.status in ("exited", "dead"):
                tail = container.logs(tail=15).decode(errors="replace").strip().splitlines()
                reason = next((ln for ln in reversed(tail) if "cannot start" in ln or "Error" in ln), tail[-1] if tail else "no log")
                raise DeploymentFailed(f"container {container.name} exited: {reason}")
            bindings = (container.attrs.get("NetworkSettings", {}).get("Ports") or {}).get(f"{SERVER_PORT}/tcp")
            if bindings:
                port = int(bindings[0]["HostPort"])
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/health/ready", timeout=2) as r:
                        if r.status == 200:
                            return port
                except (urllib.error.URLError, OSError):
                    pass
            progress.step(f"waiting for {container.name} to be ready")
            time.sleep(0.2)
        raise DeploymentFailed(f"container {container.name} was not ready within {timeout:g} s")

    def _start_forwarder(self, name: str, config: dict[str, Any], upstream_port: int) -> tuple[int, int]:
        folder = self._folder(name)
        state = folder / "upstream.json"
        _write_json(state, {"host": "127.0.0.1", "port": upstream_port})
        read_fd, write_fd = os.pipe()
        cmd = [sys.executable, "-m", "mlops_lab.deployers.forwarder", "--name", name,
               "--listen", f"{config.get('host', '127.0.0.1')}:{config.get('port') or 0}", "--state", str(state),
               "--ready-fd", str(write_fd), "--daemonize"]
        with open(folder / "forwarder.log", "ab") as logf:
            # the registry's settings: the forwarder evaluates the deployment's alert rules
            launcher = subprocess.Popen(cmd, pass_fds=(write_fd,), stdin=subprocess.DEVNULL, stdout=logf, stderr=logf,
                                        start_new_session=True, cwd=str(folder),
                                        env={**os.environ, **self.registry.settings.to_env()})
        os.close(write_fd)
        launcher.wait()
        line = read_line(read_fd, timeout=30)
        os.close(read_fd)
        if not line.startswith("READY"):
            raise DeploymentFailed(f"deployment {name!r} cannot take its address: {line.removeprefix('FAILED ')}")
        port = int(line.split()[1])
        pid = _forwarder_pid(folder)
        return port, pid

    def _switch(self, name: str, port: int) -> None:
        state = self._folder(name) / "upstream.json"
        _write_json(state, {"host": "127.0.0.1", "port": port})
        active = state.with_name(state.name + ".active")
        end = time.monotonic() + 10
        while time.monotonic() < end:
            try:
                if json.loads(active.read_text()).get("port") == port:
                    return
            except (OSError, ValueError):
                pass
            time.sleep(0.02)
        raise DeploymentFailed(f"the forwarder of {name!r} did not take the new revision")

    # -- Deployer ------------------------------------------------------------------------------

    def deploy(self, name, models, config, progress) -> DeploymentRecord:
        if config.get("collect") not in (False, None):
            self._collection_store()  # a store the container cannot use: one line, before the engine is asked
        client = docker_client()
        _mkdir(self._folder(name))
        current = self._start_container(client, name, models, config, 1, progress)
        try:
            progress.step("taking the address")
            port, pid = self._start_forwarder(name, config, current["port"])
        except BaseException:
            _remove(client.containers.get(current["id"]))
            raise
        host = config.get("host", "127.0.0.1")
        return self.registry.update_deployment(
            name, status="healthy", status_reason="", endpoint=f"http://{host}:{port}",
            state={"forwarder_pid": pid, "port": port, "current": current},
        )

    def update(self, record, models, note, progress) -> DeploymentRecord:
        client = docker_client()
        if not pid_is(record.state.get("forwarder_pid"), "mlops_lab.deployers.forwarder"):
            raise DeploymentFailed(f"deployment {record.name!r} is not running (its forwarder is gone)",
                                   hint="delete it and deploy again")
        old = record.state.get("current") or {}
        new = self._start_container(client, record.name, models, record.config, record.revision + 1, progress)
        try:
            progress.step("switching traffic to the new container")
            self._switch(record.name, new["port"])
        except BaseException:
            _remove(client.containers.get(new["id"]))
            raise
        rec = self.registry.add_deployment_revision(record.name, models, config=record.config, note=note,
                                                    state={**record.state, "current": new})
        self._retire(client, old, float(record.config.get("drain_seconds", 1.0)), progress)
        return rec

    def restart(self, record, progress) -> DeploymentRecord:
        """A new container of the current revision from the same image (no rebuild) and, if the
        forwarder is gone, a new forwarder on the recorded port. With the forwarder alive there
        is no downtime: the switch is the same as an update's."""
        client = docker_client()
        old = record.state.get("current") or {}
        config = dict(record.config)
        if old.get("image"):
            config["image"] = old["image"]
        new = self._start_container(client, record.name, record.models, config, record.revision, progress)
        pid = record.state.get("forwarder_pid")
        port = int(record.state.get("port") or 0)
        try:
            if pid_is(pid, "mlops_lab.deployers.forwarder"):
                progress.step("switching traffic to the new container")
                self._switch(record.name, new["port"])
            else:
                progress.step(f"taking the address again (port {port})")
                port, pid = self._start_forwarder(record.name, {**config, "port": port}, new["port"])
        except BaseException:
            _remove(client.containers.get(new["id"]))
            raise
        rec = self.registry.update_deployment(
            record.name, status="healthy", status_reason="",
            state={**record.state, "forwarder_pid": pid, "port": port, "current": new},
        )
        self._retire(client, old, float(record.config.get("drain_seconds", 1.0)), progress)
        return rec

    @staticmethod
    def _retire(client, old: dict[str, Any], drain: float, progress) -> None:
        if not old.get("id"):
            return
        try:
            container = client.containers.get(old["id"])
        except Exception:  # noqa: BLE001 - already gone
            return
        progress.step(f"draining {old['container']}")
        try:
            container.kill(signal="SIGUSR1")  # answers with Connection: close from now on
        except Exception:  # noqa: BLE001
            pass
        time.sleep(drain)
        _remove(container)  # SIGTERM: requests in flight finish, collected data is flushed

    def status(self, record) -> DeploymentStatus:
        def make(state, reason, details=None):
            return DeploymentStatus(state, reason, record.revision, record.models, record.endpoint, details or {})

        current = record.state.get("current") or {}
        if record.status == "starting" and not current:
            return make("starting", "building or starting the container")
        try:
            client = docker_client()
        except DeploymentFailed as exc:
            return make("unhealthy", str(exc))
        try:
            container = client.containers.get(current.get("id", ""))
            container.reload()
        except Exception:  # noqa: BLE001 - NotFound
            return make("crashed", f"container {current.get('container')} is gone")
        details = {"container": container.name, "image": current.get("image"), "image_size": current.get("image_size"),
                   "container_status": container.status}
        if container.status != "running":
            return make("crashed", f"container {container.name} is {container.status}", details)
        pid = record.state.get("forwarder_pid")
        if not pid_is(pid, "mlops_lab.deployers.forwarder"):
            return make("crashed", f"the forwarder (pid {pid}) is not running", details)
        try:
            with urllib.request.urlopen(record.endpoint.rstrip("/") + "/health", timeout=3) as r:
                ok = r.status == 200
        except (urllib.error.URLError, OSError) as exc:
            return make("unhealthy", f"{record.endpoint}/health: {getattr(exc, 'reason', exc)}", details)
        return make("healthy" if ok else "unhealthy", "" if ok else "health check failed", details)

    def logs(self, record, tail: int) -> str:
        current = record.state.get("current") or {}
        try:
            container = docker_client().containers.get(current.get("id", ""))
        except DeploymentFailed:
            raise
        except Exception:  # noqa: BLE001
            return ""
        return container.logs(tail=tail or "all").decode(errors="replace")

    def delete(self, record) -> None:
        pid = record.state.get("forwarder_pid")
        if pid_is(pid, "mlops_lab.deployers.forwarder"):
            os.kill(pid, signal.SIGTERM)
        try:
            client = docker_client()
        except DeploymentFailed:
            client = None
        if client is not None:
            for container in client.containers.list(all=True, filters={"label": f"{LABEL}={record.name}"}):
                _remove(container)
        end = time.monotonic() + 5
        while pid_is(pid, "mlops_lab.deployers.forwarder") and time.monotonic() < end:
            time.sleep(0.05)
        shutil.rmtree(self._folder(record.name), ignore_errors=True)


def _remove(container) -> None:
    try:
        container.stop(timeout=20)
    except Exception:  # noqa: BLE001
        pass
    try:
        container.remove(force=True)
    except Exception:  # noqa: BLE001
        pass


def _write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)


def _forwarder_pid(folder: Path) -> int:
    active = folder / "upstream.json.active"
    end = time.monotonic() + 5
    while time.monotonic() < end:
        try:
            return int(json.loads(active.read_text())["pid"])
        except (OSError, ValueError, KeyError):
            time.sleep(0.02)
    raise DeploymentFailed("the forwarder did not report its pid")


def _s3_environment() -> dict[str, str]:
    """The AWS variables the kernel has, for a container that writes to object storage."""
    names = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_REGION", "AWS_DEFAULT_REGION",
             "AWS_REQUEST_CHECKSUM_CALCULATION", "AWS_RESPONSE_CHECKSUM_VALIDATION")
    return {k: os.environ[k] for k in names if os.environ.get(k)}
