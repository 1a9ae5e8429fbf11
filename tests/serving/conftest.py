"""Deployments shared by the serving tests: real supervisors and servers over loopback.

They live in a home folder of the module's own (module scope: starting a server takes about a
second), reached through their URL and keys, never through the per-test home.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

import mlops_lab as ml


class Flaky:
    """Raises on a row whose first value is negative: a model that crashes on some input."""

    def predict(self, X):
        X = np.asarray(X)
        if (X[:, 0] < 0).any():
            raise ValueError("negative input")
        return X[:, 0] * 2


class RowEcho:
    """Returns each row's first value: lets a test see which rows each caller got back."""

    def predict(self, X):
        return np.asarray(X)[:, 0].copy()


@pytest.fixture(scope="module")
def module_home(tmp_path_factory):
    home = tmp_path_factory.mktemp("served") / "home"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLOPS_LAB_HOME", str(home))
        mp.delenv("MLOPS_LAB_DB", raising=False)
        yield home
        from mlops_lab.workspace import close_defaults

        for d in ml.list_deployments():
            d.delete()
        close_defaults()


@pytest.fixture(scope="module")
def iris_data():
    from sklearn.datasets import load_iris

    data = load_iris(as_frame=True)
    return data.data, data.target


@pytest.fixture(scope="module")
def served(module_home, iris_data):
    """An iris classifier (columns signature), a 20-feature array model (tensor signature), a
    model that raises, and an echo model, each deployed on its own."""
    from sklearn.linear_model import LogisticRegression

    X, y = iris_data
    clf = LogisticRegression(max_iter=500).fit(X, y)
    ml.register_model(clf, "iris", sample_input=X)
    rng = np.random.RandomState(0)
    A = rng.rand(300, 20)
    lr = LogisticRegression().fit(A, (A[:, 0] > 0.5).astype(int))
    ml.register_model(lr, "arr", sample_input=A[:5])
    ml.register_model(Flaky(), "flaky", sample_input=np.ones((2, 3)))
    ml.register_model(RowEcho(), "echo", sample_input=np.zeros((2, 4)))
    out = {
        "iris": ml.deploy("iris", progress=False, body_limit=64 * 1024),
        "arr": ml.deploy("arr", progress=False),
        "flaky": ml.deploy("flaky", progress=False),
        "echo": ml.deploy("echo", progress=False, workers=1),
        "clf": clf,
        "lr": lr,
        "X": X,
        "A": A,
    }
    yield out


@pytest.fixture
def http():
    import httpx

    with httpx.Client(timeout=30) as client:
        yield client


def auth(d) -> dict[str, str]:
    return {"Authorization": f"Bearer {d.keys['primary']}"}


os.environ.setdefault("NO_PROXY", "127.0.0.1,localhost")
