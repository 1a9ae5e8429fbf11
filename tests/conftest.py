"""Shared fixtures.

Registry tests run twice: on a SQLite file and on the real PostgreSQL server that ``.ci/run``
(through ``make test``) starts and names in ``MLOPS_LAB_TEST_PG_URL``. Each PostgreSQL test gets
a schema of its own, dropped afterwards.
"""

from __future__ import annotations

import errno
import os
import subprocess
import uuid
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


@pytest.fixture
def registry(backend):
    """The default registry of this test (home folder + backend)."""
    from mlops_lab.registry.store import default_registry

    reg = default_registry()
    assert reg.engine.dialect.name == {"sqlite": "sqlite", "postgres": "postgresql"}[backend]
    return reg


@pytest.fixture
def sqlite_registry(_isolated_home):
    """The default registry on SQLite only, for tests whose subject is not the database."""
    from mlops_lab.registry.store import default_registry

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
