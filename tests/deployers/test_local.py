"""The local deployer's life cycle with real supervisors, servers and signals."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections import Counter

import httpx
import numpy as np
import pytest

import mlops_lab as ml
from mlops_lab import DeploymentFailed, DeploymentNotFound, ModelNotFound, VersionInUse
from mlops_lab.deployers.base import wait_until

from .load import score, under_load


class Const:
    """Answers a constant per row: which version answered is visible in the output."""

    def __init__(self, value):
        self.value = value

    def predict(self, X):
        return np.full(len(X), self.value, dtype=float)


class BrokenAtStart:
    """Loads, but raises on its input example: the server fails its readiness check."""

    def predict(self, X):
        raise RuntimeError("this version is broken")


def _register_three(reg):
    sample = np.zeros((3, 2))
    ml.register_model(Const(1.0), "m", sample_input=sample)
    ml.register_model(Const(2.0), "m", sample_input=sample)
    ml.register_model(BrokenAtStart(), "m", sample_input=sample)
    yield reg
    for d in ml.list_deployments():
        d.delete()


@pytest.fixture
def models(sqlite_registry):
    """m:1 answers 1.0, m:2 answers 2.0, m:3 fails its readiness check; SQLite registry."""
    yield from _register_three(sqlite_registry)


@pytest.fixture
def models_both(registry):
    """The same models, on SQLite and on PostgreSQL: the deployment record works on both."""
    yield from _register_three(registry)




def test_deploy_predict_status_and_logs(models_both):
    d = ml.deploy("m:1", name="svc", progress=False, drain_seconds=0.2)
    assert d.url.startswith("http://127.0.0.1:")
    assert d.predict([[0, 0], [1, 1]]) == [1.0, 1.0]
    st = d.status()
    assert st.state == "healthy" and st.reason == "" and st.revision == 1
    assert st.details["supervisor_pid"] > 0 and len(st.details["servers"]) == 1
    assert "ready on http://127.0.0.1" in d.logs(tail=50)
    assert ml.get_deployment("svc").keys == d.keys
    assert [x.name for x in ml.list_deployments()] == ["svc"]
    with pytest.raises(VersionInUse, match="'svc'"):
        ml.delete_model_version("m:1")


def test_deployment_outlives_the_process_that_made_it(models):
    code = textwrap.dedent(
        """
        import mlops_lab as ml
        d = ml.deploy("m:2", name="orphan", progress=False)
        print(d.url, flush=True)
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    url = out.stdout.strip()
    d = ml.get_deployment("orphan")
    assert d.url == url
    assert d.status().state == "healthy"
    assert d.predict([[0, 0]]) == [2.0]


def test_killed_server_is_restarted(models):
    d = ml.deploy("m:1", name="svc", progress=False, drain_seconds=0.2)
    old_pid = d.status().details["servers"][0]["pid"]
    os.kill(old_pid, signal.SIGKILL)
    seen = []

    def restarted():
        st = d.status()
        seen.append(st.state)
        servers = st.details.get("servers", [])
        return st.state == "healthy" and servers and servers[0]["pid"] != old_pid

    assert wait_until(restarted, timeout=30), seen
    st = d.status()
    assert st.details["restarts"] == 1
    assert st.details["last_exit"] == f"server pid {old_pid} exited with signal 9"
    assert f"restarted after: server pid {old_pid} exited with signal 9" in st.reason
    assert d.predict([[0, 0]]) == [1.0]


def _servers_of(home) -> set[int]:
    """PIDs of every scoring server process started for deployments of this home folder."""
    out = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit() and not _is_zombie(int(entry)):
            try:
                cmd = open(f"/proc/{entry}/cmdline", "rb").read().split(b"\0")
            except OSError:
                continue
            if b"mlops_lab.serving.server" in cmd and any(str(home).encode() in c for c in cmd):
                out.add(int(entry))
    return out


def test_a_deployment_is_ready_with_its_first_server_and_the_others_join(models):
    """deploy() returns once one server answers; the others start after it, one at a time,
    and show in the record; delete stops them all."""
    d = ml.deploy("m:1", name="svc", progress=False, workers=3, drain_seconds=0.2)
    assert d.predict([[0, 0]]) == [1.0]

    def all_up():
        servers = d.status().details["servers"]
        return len(servers) == 3 and all(s["healthy"] for s in servers)

    assert wait_until(all_up, timeout=60), d.status().details
    pids = {s["pid"] for s in d.status().details["servers"]}
    assert len(pids) == 3 and d.status().state == "healthy"
    assert "server 3 of 3 started" in d.logs(tail=50)
    assert _servers_of(os.environ["MLOPS_LAB_HOME"]) == pids
    d.delete()
    assert wait_until(lambda: not _servers_of(os.environ["MLOPS_LAB_HOME"]), timeout=30)


def test_deleted_while_its_other_servers_start_leaves_no_server_behind(models):
    d = ml.deploy("m:1", name="svc", progress=False, workers=3, drain_seconds=0.2)
    assert len(d.status().details["servers"]) < 3  # the others are starting (each takes a second)
    d.delete()
    assert wait_until(lambda: not _servers_of(os.environ["MLOPS_LAB_HOME"]), timeout=30)


class SlowInFirstProcess:
    """Takes 5 ms a call in the first process that loads it and no time in the others: two
    servers timing it at warm-up would choose differently (a thread, the event loop)."""

    def __init__(self, marker):
        self.marker = marker

    def __setstate__(self, state):
        self.__dict__.update(state)
        try:
            os.close(os.open(self.marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
            self.slow = True
        except FileExistsError:
            self.slow = False

    def predict(self, X):
        if getattr(self, "slow", False):
            time.sleep(0.005)
        return np.zeros(len(X))


def test_every_server_of_a_deployment_makes_the_same_warm_up_choice(models, tmp_path):
    """Given a model that one server times as slow and the other as fast, when the deployment
    runs two servers, then both run it the same way: the first to warm up chose for both."""
    ml.register_model(SlowInFirstProcess(str(tmp_path / "first")), "uneven", sample_input=np.zeros((3, 2)))
    d = ml.deploy("uneven", name="uneven", progress=False, workers=2, drain_seconds=0.2)
    assert wait_until(lambda: len(d.status().details["servers"]) == 2, timeout=60)
    log = d.logs(tail=200)
    mode = "inline|threaded unless alone|threaded"
    timed = dict(re.findall(rf"pid=(\d+) INFO mlops_lab.serving: uneven:1 warmed up: .*, ({mode})$", log, re.M))
    taken = dict(re.findall(rf"pid=(\d+) INFO mlops_lab.serving: uneven:1: ({mode}), as the revision's first server chose", log, re.M))
    assert len(timed) == 2 and set(timed.values()) == {"inline", "threaded unless alone"}, log  # they timed it differently
    final = {pid: taken.get(pid, choice) for pid, choice in timed.items()}
    assert len(set(final.values())) == 1 and len(taken) == 1, log
    assert d.predict([[0, 0]]) == [0.0]


def test_update_right_after_deploy_waits_for_the_servers_starting(models):
    d = ml.deploy("m:1", name="svc", progress=False, workers=2, drain_seconds=0.2)
    d.update("m:2", progress=False)
    servers = d.status().details["servers"]
    assert len(servers) == 2 and d.predict([[0, 0]]) == [2.0]
    assert wait_until(lambda: _servers_of(os.environ["MLOPS_LAB_HOME"]) == {s["pid"] for s in servers}, timeout=30)


def test_update_under_load_fails_no_request(models_both):
    """Given steady concurrent load over keep-alive connections, when the deployment is updated,
    then every request succeeds, and answers move from version 1 to version 2."""
    d = ml.deploy("m:1", name="svc", progress=False, workers=2, drain_seconds=0.5)
    results, errors = under_load(d, lambda: d.update("m:2", progress=False))
    assert errors == []
    statuses = Counter(s for s, _ in results)
    assert statuses == {200: len(results)} and len(results) > 200
    versions = [v for _, v in results]
    assert versions[0] == "m:1" and versions[-1] == "m:2"
    assert d.revision == 2 and d.models[0]["version"] == 2
    # after update() returns, only the new version answers
    assert {score(d).headers["x-model-version"] for _ in range(20)} == {"m:2"}


def test_failing_new_version_leaves_the_old_one_serving(models):
    d = ml.deploy("m:1", name="svc", progress=False, drain_seconds=0.2)
    before = ml.get_deployment("svc").record
    with pytest.raises(DeploymentFailed) as info:
        d.update("m:3", progress=False)
    assert "this version is broken" in str(info.value)
    assert "revision 1 keeps serving" in str(info.value)
    after = ml.get_deployment("svc").record
    assert (after.revision, after.models, after.endpoint) == (before.revision, before.models, before.endpoint)
    assert len(d.revisions()) == 1
    assert d.predict([[0, 0]]) == [1.0]
    assert d.status().state == "healthy"


def test_rollback_returns_to_the_previous_revision(models):
    d = ml.deploy("m:1", name="svc", progress=False, drain_seconds=0.2)
    with pytest.raises(ml.InvalidInput, match="no earlier revision"):
        d.rollback(progress=False)
    d.update("m:2", progress=False)
    assert d.predict([[0, 0]]) == [2.0]
    d.rollback(progress=False)
    assert d.predict([[0, 0]]) == [1.0]
    assert d.revision == 3
    assert [(r.revision, r.models[0]["version"], r.note) for r in d.revisions()] == [
        (1, 1, "deploy"), (2, 2, "update to m:2"), (3, 1, "rollback to revision 1"),
    ]
    # the version no longer served can be deleted; the served one cannot
    ml.delete_model_version("m:2")
    with pytest.raises(VersionInUse):
        ml.delete_model_version("m:1")


def test_canary_split_and_promote(models):
    d = ml.deploy("m:1", name="svc", progress=False, drain_seconds=0.2)
    d.update("m:2", traffic=20, progress=False)
    assert [(m["version"], m["traffic"]) for m in d.models] == [(1, 80), (2, 20)]
    counts: Counter[str] = Counter()
    with httpx.Client(timeout=30) as client:
        for _ in range(2000):
            r = score(d, client)
            assert r.status_code == 200
            counts[r.headers["x-model-version"]] += 1
    share = counts["m:2"] / 2000
    assert 0.15 <= share <= 0.25, counts
    metrics = d.call("metrics", method="GET")["models"]
    assert metrics["m:1"]["requests"] + metrics["m:2"]["requests"] >= 2000
    assert metrics["m:2"]["requests"] == counts["m:2"]
    d.promote(progress=False)
    assert [(m["version"], m["traffic"]) for m in d.models] == [(2, 100)]
    assert {score(d).headers["x-model-version"] for _ in range(10)} == {"m:2"}
    with pytest.raises(ml.InvalidInput, match="no canary"):
        d.promote(progress=False)


def test_delete_is_idempotent_and_frees_port_and_version(models):
    d = ml.deploy("m:1", name="svc", progress=False, drain_seconds=0.2)
    port = int(d.url.rsplit(":", 1)[1])
    pids = [s["pid"] for s in d.status().details["servers"]] + [d.status().details["supervisor_pid"]]
    d.delete()
    assert ml.delete_deployment("svc") is False
    with pytest.raises(DeploymentNotFound):
        ml.get_deployment("svc")
    for pid in pids:
        assert wait_until(lambda pid=pid: not os.path.exists(f"/proc/{pid}") or _is_zombie(pid), timeout=10)
    with socket.create_server(("127.0.0.1", port)):
        pass  # the port is free again
    assert ml.delete_model_version("m:1") == "m:1"


def test_no_process_of_a_deleted_deployment_outlives_it_by_2_s_on_a_busy_machine(models):
    """Given a deployment whose servers have collected data, and every CPU kept busy (a
    compactor otherwise waits for idle CPU before it compacts what its server staged), when it
    is deleted, then within 2 s no process of it is left (servers, supervisor, compactors), and
    every collected row still reads back."""
    home = os.environ["MLOPS_LAB_HOME"]
    d = ml.deploy("m:1", name="svc", progress=False, workers=2, drain_seconds=0.2)
    with httpx.Client(timeout=30) as client:
        for _ in range(300):
            assert score(d, client).status_code == 200
    burners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(os.cpu_count() or 2)]
    try:
        d.delete()
        t0 = time.monotonic()
        assert wait_until(lambda: not _processes_of(home), timeout=30)
        assert time.monotonic() - t0 <= 2.0, "a process of the deployment outlived it"
    finally:
        for b in burners:
            b.kill()
            b.wait()
    rows = ml.collected_data("svc")
    assert len(rows) == 300 and set(rows["prediction"]) == {1.0}


def test_a_deployment_whose_folder_is_removed_stops(models):
    """Given a deployment of two servers, when its folder (spec, keys, versions) is removed
    behind its back, as when a home folder is deleted, then its supervisor and servers stop
    within seconds instead of serving on where no face can reach them, and the record says why."""
    import shutil

    home = os.environ["MLOPS_LAB_HOME"]
    d = ml.deploy("m:1", name="gone", progress=False, workers=2, drain_seconds=0.2)
    assert wait_until(lambda: len(d.status().details["servers"]) == 2, timeout=60)
    assert len(_processes_of(home)) >= 3  # the supervisor and its two servers
    shutil.rmtree(os.path.join(home, "deployments", "gone"))
    assert wait_until(lambda: not _processes_of(home), timeout=15), _processes_of(home)
    st = ml.get_deployment("gone").status()
    assert st.state == "stopped" and "was removed" in st.reason, (st.state, st.reason)


def _processes_of(home, module: bytes = b"mlops_lab.") -> set[int]:
    """PIDs of the processes of this home folder's deployments whose command names ``module``."""
    out = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != os.getpid() and not _is_zombie(int(entry)):
            try:
                cmd = open(f"/proc/{entry}/cmdline", "rb").read().split(b"\0")
            except OSError:
                continue
            if any(module in c for c in cmd) and any(str(home).encode() in c for c in cmd):
                out.add(int(entry))
    return out


def _is_zombie(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] == "Z"
    except FileNotFoundError:
        return True


def test_supervisor_killed_is_reported_and_cleaned_up(models):
    d = ml.deploy("m:1", name="svc", progress=False, drain_seconds=0.2)
    st = d.status()
    os.kill(st.details["supervisor_pid"], signal.SIGKILL)
    assert wait_until(lambda: d.status().state == "crashed", timeout=10)
    assert "supervisor" in d.status().reason
    with pytest.raises(DeploymentFailed, match="not running"):
        d.update("m:2", progress=False)
    d.delete()
    assert ml.list_deployments() == []


def test_restart_brings_a_crashed_deployment_back_at_the_same_address(models, capsys):
    d = ml.deploy("m:1", name="svc", progress=False, drain_seconds=0.2)
    d.update("m:2", progress=False)  # revision 2 serves m:2
    url, before = d.url, d.status()
    os.kill(before.details["supervisor_pid"], signal.SIGKILL)
    assert wait_until(lambda: d.status().state == "crashed", timeout=10)
    assert wait_until(lambda: not _answers(url), timeout=30)  # its servers stop without it
    d.restart()  # with progress: the steps are printed
    assert "restarting 'svc': revision 2 serving at " + url in capsys.readouterr().err
    st = d.status()
    assert st.state == "healthy" and d.url == url and d.revision == 2
    assert st.details["supervisor_pid"] != before.details["supervisor_pid"]
    assert d.predict([[0, 0]]) == [2.0]  # the current revision, not the first
    assert [r.revision for r in d.revisions()] == [1, 2]  # a restart is not a new revision
    # a running deployment restarts too (stopped gracefully first), and any process sees it
    pid = st.details["supervisor_pid"]
    ml.restart("svc", progress=False)
    st = ml.get_deployment("svc").status()
    assert st.state == "healthy" and st.details["supervisor_pid"] != pid and d.predict([[0, 0]]) == [2.0]
    # at once after a kill -9, while its servers may still be draining: they are stopped first
    os.kill(st.details["supervisor_pid"], signal.SIGKILL)
    assert wait_until(lambda: d.status().state == "crashed", timeout=10)
    d.restart(progress=False)
    assert d.status().state == "healthy" and d.predict([[0, 0]]) == [2.0]
    d.rollback(progress=False)  # and it still updates and rolls back
    assert d.predict([[0, 0]]) == [1.0]
    with pytest.raises(DeploymentNotFound):
        ml.restart("nope", progress=False)


def test_restart_reports_a_taken_port(models):
    d = ml.deploy("m:1", name="svc", progress=False, drain_seconds=0.2)
    port = int(d.url.rsplit(":", 1)[1])
    os.kill(d.status().details["supervisor_pid"], signal.SIGKILL)
    assert wait_until(lambda: d.status().state == "crashed", timeout=10)
    assert wait_until(lambda: _port_free(port), timeout=10)
    with socket.create_server(("127.0.0.1", port)):
        with pytest.raises(DeploymentFailed, match=f"did not restart: cannot listen on 127.0.0.1:{port}"):
            d.restart(progress=False)
    assert d.status().state == "crashed"
    d.restart(progress=False)
    assert d.status().state == "healthy"


def _answers(url):
    try:
        return httpx.get(f"{url}/health", timeout=2).status_code == 200
    except httpx.TransportError:
        return False


def _port_free(port):
    try:
        socket.create_server(("127.0.0.1", port)).close()
        return True
    except OSError:
        return False


def test_deploy_errors_leave_nothing_behind(models):
    with pytest.raises(ModelNotFound):
        ml.deploy("nope:1", progress=False)
    with socket.create_server(("127.0.0.1", 0)) as busy:
        port = busy.getsockname()[1]
        with pytest.raises(DeploymentFailed, match=f"cannot listen on 127.0.0.1:{port}"):
            ml.deploy("m:1", name="svc", port=port, progress=False)
    with pytest.raises(DeploymentFailed, match="this version is broken"):
        ml.deploy("m:3", name="broken", progress=False)
    assert ml.list_deployments() == []
    assert not (models.home / "deployments" / "svc").exists()
    assert ml.delete_model_version("m:3") == "m:3"
    d = ml.deploy("m:1", name="svc", progress=False)
    with pytest.raises(ml.AlreadyExists):
        ml.deploy("m:2", name="svc", progress=False)
    assert d.predict([[0, 0]]) == [1.0]


def test_several_models_on_one_server_and_an_ensemble_script(models, tmp_path):
    ml.register_model(Const(7.0), "other", sample_input=np.zeros((2, 2)))
    d = ml.deploy(["m:1", "other:1"], name="multi", progress=False)
    h = {"Authorization": f"Bearer {d.keys['primary']}"}
    body = {"data": [[0, 0]]}
    assert httpx.post(f"{d.url}/models/m/score", json=body, headers=h).json() == [1.0]
    assert httpx.post(f"{d.url}/models/other/score", json=body, headers=h).json() == [7.0]
    assert httpx.post(f"{d.url}/score", json=body, headers=h).json() == [1.0]
    assert httpx.post(f"{d.url}/models/zzz/score", json=body, headers=h).status_code == 404

    script = tmp_path / "score.py"
    script.write_text(textwrap.dedent(
        """
        import json, mlops_lab
        models = {}
        def init():
            for ref in ("m:1", "other:1"):
                models[ref] = mlops_lab.load_model_from(mlops_lab.model_path(ref))
        def run(raw):
            rows = json.loads(raw)["data"]
            a = models["m:1"].predict(rows)
            b = models["other:1"].predict(rows)
            return {"mean": [(x + y) / 2 for x, y in zip(a, b)]}
        """
    ))
    e = ml.deploy(["m:1", "other:1"], name="ensemble", entry_script=script, progress=False)
    r = httpx.post(f"{e.url}/score", json={"data": [[0, 0], [1, 1]]}, headers={"Authorization": f"Bearer {e.keys['primary']}"})
    assert r.status_code == 200, r.text
    assert r.json() == {"mean": [4.0, 4.0]}


def _server_of_connections(pids: set[int], port: int, client_ports: list[int]) -> Counter:
    """How many of these client connections (by local port) each server process holds, read
    from /proc: the server side of each is the socket whose remote port is the client's."""
    inode_of = {}
    for line in open("/proc/net/tcp").read().splitlines()[1:]:
        f = line.split()
        local, remote, inode = f[1], f[2], f[9]
        if int(local.split(":")[1], 16) == port:
            inode_of[int(remote.split(":")[1], 16)] = inode
    owner = {}
    for pid in pids:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if target.startswith("socket:["):
                owner[target[8:-1]] = pid
    return Counter(owner.get(inode_of.get(p)) for p in client_ports)


def test_connections_opened_together_are_shared_by_the_servers(models):
    """16 keep-alive connections opened at once: each of the 2 servers takes some of them, each
    through its acceptor on the shared socket (under uvloop), and answers on it. How many each
    takes depends on which process the kernel wakes first (14 against 2 was seen on a loaded CI
    machine), so this asserts only that neither is left out. A client here does not open
    connections as fast as wrk, so this passes with the event loop's own accept too;
    tests/serving/test_accept.py shows the one-connection-per-turn behaviour itself."""
    d = ml.deploy("m:1", name="svc", progress=False, workers=2, drain_seconds=0.2)
    assert wait_until(lambda: len(d.status().details["servers"]) == 2, timeout=60)
    pids = {s["pid"] for s in d.status().details["servers"]}
    port = int(d.url.rsplit(":", 1)[1].split("/")[0])
    socks = [socket.socket() for _ in range(16)]
    for s in socks:
        s.setblocking(False)
        s.connect_ex(("127.0.0.1", port))
    request = (f"POST /score HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {d.keys['primary']}\r\n"
               "Content-Type: application/json\r\nContent-Length: 17\r\n\r\n{\"data\": [[0,0]]}").encode()
    try:
        for s in socks:
            s.setblocking(True)
            s.sendall(request)
        for s in socks:
            assert b" 200 " in s.recv(4096).split(b"\r\n", 1)[0]
        held = _server_of_connections(pids, port, [s.getsockname()[1] for s in socks])
        assert set(held) == pids and sum(held.values()) == 16, held
    finally:
        for s in socks:
            s.close()
