"""The local deployer (``target="local"``), the embedded default.

Each deployment is a supervisor daemon (``mlops_lab.deployers.supervisor``) that outlives the
process that created it, with its scoring servers; its files live in
``$MLOPS_LAB_HOME/deployments/<name>/`` (log, key hashes, one folder per prepared revision).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import orjson

from ..errors import DeploymentFailed
from ..registry.entities import DeploymentRecord
from .base import Deployer, DeploymentStatus
from .common import deployment_dir, pid_is, read_line
from .supervisor import control_address


def prepare_revision(registry, name: str, models: list[dict[str, Any]], config: dict[str, Any], revision: int) -> str:
    """Write the spec a server runs: the models' checked files and the serving settings."""
    folder = deployment_dir(registry.home, name) / "revisions" / f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
    entries = []
    for m in models:
        ref = f"{m['name']}:{m['version']}"
        dest = folder / "models" / f"{m['name']}-{m['version']}"
        if not dest.exists():
            registry.download_model(ref, dest)
        entry = {"name": m["name"], "version": m["version"], "traffic": m.get("traffic", 100), "folder": str(dest)}
        if m.get("route"):
            entry["route"] = m["route"]
        if m.get("shadow"):
            entry["shadow"] = m["shadow"]
        entries.append(entry)
    entry_script = None
    script = config.get("entry_script")
    if script:
        src = Path(script)
        dest = folder / "entry"
        dest.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dest / src.name)
        req = src.parent / "requirements.txt"
        if req.is_file():
            shutil.copy2(req, dest / "requirements.txt")
        entry_script = {"folder": str(dest), "script": src.name}
    spec = {
        "deployment": name,
        "revision": revision,
        "models": entries,
        "entry_script": entry_script,
        "keys_file": str(deployment_dir(registry.home, name) / "keys.json") if config.get("auth", True) else None,
        # every server of every revision writes its counters here; /metrics sums them
        "metrics_dir": str(deployment_dir(registry.home, name) / "metrics"),
        "body_limit": config.get("body_limit"),
        "batching": config.get("batching", {}),
        "collect": _collect_spec(registry, config.get("collect")),
        # the revision's servers make their warm-up choices once, here (serving.server.share_choices)
        "choices_file": str(folder / "choices.json"),
    }
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "spec.json"
    path.write_bytes(orjson.dumps(spec, option=orjson.OPT_INDENT_2))
    return str(path)


def _collect_spec(registry, collect: Any) -> dict[str, Any] | None:
    if collect is False or collect is None:
        return None
    from ..monitoring.store import CollectionStore

    store = CollectionStore.of(registry.settings)
    store.check()  # a missing bucket or refused credentials: one line now, not lost rows later
    settings = dict(collect) if isinstance(collect, dict) else {}
    return {"enabled": True, **store.spec(), **settings}


class LocalDeployer(Deployer):
    target = "local"

    def __init__(self, registry) -> None:
        self.registry = registry

    # -- control channel -------------------------------------------------------------------

    def _control(self, name: str, cmd: dict[str, Any], timeout: float) -> dict[str, Any]:
        addr = control_address(self.registry.home, name)
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(timeout)
            s.connect(addr)
            s.sendall(orjson.dumps(cmd) + b"\n")
            buf = b""
            while not buf.endswith(b"\n"):
                chunk = s.recv(65536)
                if not chunk:
                    break
                buf += chunk
        return orjson.loads(buf)

    def _supervisor_alive(self, record: DeploymentRecord) -> bool:
        return pid_is(record.state.get("supervisor_pid"), f"--name {record.name} ")

    # -- Deployer --------------------------------------------------------------------------

    def deploy(self, name: str, models: list[dict[str, Any]], config: dict[str, Any], progress) -> DeploymentRecord:
        folder = deployment_dir(self.registry.home, name)
        folder.mkdir(parents=True, exist_ok=True)
        progress.step("preparing the model files")
        spec = prepare_revision(self.registry, name, models, config, 1)
        progress.step("starting the server")
        self._launch(name, spec, config, int(config.get("port") or 0), 1, "did not start")
        return self.registry.get_deployment(name)

    def _launch(self, name: str, spec: str, config: dict[str, Any], port: int, revision: int, failed: str) -> None:
        """Start a supervisor for ``spec`` (a detached process) and wait until it is ready."""
        folder = deployment_dir(self.registry.home, name)
        log_path = folder / "deployment.log"
        read_fd, write_fd = os.pipe()
        cmd = [
            sys.executable, "-m", "mlops_lab.deployers.supervisor", "--name", name, "--home", str(self.registry.home),
            "--spec", spec, "--host", config.get("host", "127.0.0.1"), "--port", str(port),
            "--workers", str(config.get("workers", 1)), "--ready-fd", str(write_fd), "--daemonize",
            "--startup-timeout", str(config.get("startup_timeout", 120)), "--drain", str(config.get("drain_seconds", 1.0)),
            "--revision", str(revision),
        ]
        env = {**os.environ, **self.registry.settings.to_env()}
        env.pop("MLOPS_LAB_CRASHPOINT", None)
        with open(log_path, "ab") as logf:
            launcher = subprocess.Popen(
                cmd, pass_fds=(write_fd,), stdin=subprocess.DEVNULL, stdout=logf, stderr=logf,
                start_new_session=True, env=env, cwd=str(folder),
            )
        os.close(write_fd)
        launcher.wait()
        line = read_line(read_fd, timeout=float(config.get("startup_timeout", 120)) + 10)
        os.close(read_fd)
        if not line.startswith("READY"):
            if line.startswith("FAILED"):
                reason = line[len("FAILED "):]
            else:
                reason = "the supervisor exited before it was ready: " + _last_error(log_path)
            # The deployment's folder (and log) goes with a failed deployment: say why here.
            raise DeploymentFailed(f"deployment {name!r} {failed}: {reason}")

    def restart(self, record: DeploymentRecord, progress) -> DeploymentRecord:
        spec = record.state.get("spec")
        if not spec or not Path(spec).is_file():
            raise DeploymentFailed(f"deployment {record.name!r} has no files for revision {record.revision}",
                                   hint="delete it and deploy again")
        if self._supervisor_alive(record):
            progress.step("stopping the running servers (collected data is flushed)")
            self._stop(record)
        self._kill_orphans(record)
        port = int(record.state.get("port") or 0)
        progress.step(f"starting revision {record.revision} on port {port}")
        self._launch(record.name, spec, dict(record.config), port, record.revision, "did not restart")
        return self.registry.get_deployment(record.name)

    def update(self, record: DeploymentRecord, models: list[dict[str, Any]], note: str, progress) -> DeploymentRecord:
        if not self._supervisor_alive(record):
            raise DeploymentFailed(
                f"deployment {record.name!r} is not running (its supervisor is gone)",
                hint="delete it and deploy again",
            )
        progress.step("preparing the model files")
        config = dict(record.config)
        spec = prepare_revision(self.registry, record.name, models, config, record.revision + 1)
        progress.step("starting the new revision beside the current one")
        reply = self._control(
            record.name,
            {"op": "switch", "spec": spec, "models": models, "note": note, "config": config, "revision": record.revision + 1},
            timeout=float(config.get("startup_timeout", 120)) + 60,
        )
        if not reply.get("ok"):
            shutil.rmtree(Path(spec).parent, ignore_errors=True)
            raise DeploymentFailed(
                f"the new revision of {record.name!r} failed: {reply.get('error')}",
                hint=f"revision {record.revision} keeps serving",
            )
        return self.registry.get_deployment(record.name)

    def status(self, record: DeploymentRecord) -> DeploymentStatus:
        def make(state: str, reason: str, details: dict | None = None) -> DeploymentStatus:
            return DeploymentStatus(state, reason, record.revision, record.models, record.endpoint, details or {})

        if not self._supervisor_alive(record):
            if record.status == "stopped":
                return make("stopped", record.status_reason or "stopped")
            pid = record.state.get("supervisor_pid")
            limit = float(record.config.get("startup_timeout", 120)) + 10
            if record.status == "starting" and time.time() - record.created_at < limit:
                return make("starting", "the supervisor is starting the servers")
            return make("crashed" if pid else "stopped",
                        f"the supervisor (pid {pid}) is not running" if pid else "it was never started")
        try:
            reply = self._control(record.name, {"op": "status"}, timeout=5)
        except OSError as exc:
            return make("unhealthy", f"the supervisor does not answer: {exc}")
        state, reason = reply["status"], reply.get("reason", "")
        if state == "healthy":
            ok, why = _probe(record.endpoint)
            if not ok:
                state, reason = "unhealthy", f"{record.endpoint}/health: {why}"
        return make(state, reason, {**reply.get("state", {}), "workers": reply.get("workers")})

    def logs(self, record: DeploymentRecord, tail: int) -> str:
        path = deployment_dir(self.registry.home, record.name) / "deployment.log"
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return ""
        lines = data.decode(errors="replace").splitlines()
        return "\n".join(lines[-tail:]) if tail else "\n".join(lines)

    def delete(self, record: DeploymentRecord) -> None:
        if self._supervisor_alive(record):
            self._stop(record)
        self._kill_orphans(record)
        shutil.rmtree(deployment_dir(self.registry.home, record.name), ignore_errors=True)

    def _stop(self, record: DeploymentRecord) -> None:
        """Stop the supervisor gracefully (its servers drain and flush), by force after 40 s."""
        try:
            self._control(record.name, {"op": "stop"}, timeout=10)
        except OSError:
            pass
        pid = record.state.get("supervisor_pid")
        end = time.monotonic() + 40
        while self._supervisor_alive(record) and time.monotonic() < end:
            time.sleep(0.05)
        if self._supervisor_alive(record):
            os.kill(pid, signal.SIGKILL)

    def _kill_orphans(self, record: DeploymentRecord) -> None:
        """Servers left by a supervisor that was killed outright (they stop by themselves when
        it dies, after draining): killed, and waited for, so that their port is free."""
        pids = [s.get("pid") for s in record.state.get("servers", [])]
        for pid in pids:
            if pid_is(pid, "mlops_lab.serving.server"):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        end = time.monotonic() + 10
        while any(pid_is(pid, "mlops_lab.serving.server") for pid in pids) and time.monotonic() < end:
            time.sleep(0.02)


def _last_error(log_path: Path) -> str:
    """The most telling line of a log's end: the last exception line, else the last line."""
    try:
        lines = log_path.read_bytes()[-20000:].decode(errors="replace").strip().splitlines()
    except OSError:
        return "(no log)"
    for line in reversed(lines):
        if line and not line.startswith((" ", "\t", "Traceback")) and ("Error" in line or "Exception" in line):
            return line.strip()
    return lines[-1].strip() if lines else "(empty log)"


def _probe(url: str, timeout: float = 3.0) -> tuple[bool, str]:
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(url.rstrip("/") + "/health", timeout=timeout) as resp:
            return resp.status == 200, f"HTTP {resp.status}"
    except urllib.error.HTTPError as exc:
        return False, f"HTTP {exc.code}"
    except (urllib.error.URLError, OSError) as exc:
        return False, str(getattr(exc, "reason", exc))
