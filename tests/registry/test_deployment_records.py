"""The deployments table every deployer shares, and the rule it enforces: a version served by a
deployment cannot be deleted.

The deployers themselves arrive with the serving issue; here the records are written through the
store's own deployment functions, which the deployers call.
"""

from __future__ import annotations

import pytest
import sqlalchemy as sa

import mlops_lab as ml
from mlops_lab import AlreadyExists, DeploymentNotFound, InvalidName, VersionInUse, VersionNotFound


@pytest.fixture
def three_versions(registry):
    for _ in range(3):
        ml.register_model(lambda x: x, "churn")
    return registry


def test_deployed_version_cannot_be_deleted(three_versions):
    reg = three_versions
    reg.create_deployment("churn-svc", "local", [{"ref": "churn:1", "traffic": 100}], endpoint="http://127.0.0.1:5001")
    with pytest.raises(VersionInUse) as info:
        ml.delete_model_version("churn:1")
    assert info.value.deployments == ["churn-svc"]
    assert str(info.value) == (
        "model version churn:1 is used by deployment 'churn-svc' (update or delete that deployment first)"
    )
    with pytest.raises(VersionInUse):
        ml.delete_model("churn")
    assert ml.get_model("churn:1").deployments == ["churn-svc"]
    # other versions are free
    assert ml.delete_model_version("churn:3") == "churn:3"


def test_database_itself_refuses_to_drop_a_served_version(three_versions):
    reg = three_versions
    reg.create_deployment("svc", "local", [{"ref": "churn:2"}])
    with pytest.raises(sa.exc.IntegrityError):
        with reg.engine.begin() as conn:
            conn.execute(sa.text("DELETE FROM model_versions WHERE name='churn' AND version=2"))
    assert ml.get_model("churn:2").version == 2


def test_revisions_move_the_lock_and_keep_history(three_versions):
    reg = three_versions
    reg.create_deployment("svc", "local", [{"ref": "churn:1"}], note="first")
    reg.add_deployment_revision("svc", [{"ref": "churn:1", "traffic": 90}, {"ref": "churn:2", "traffic": 10}], note="canary")
    for ref in ("churn:1", "churn:2"):
        with pytest.raises(VersionInUse):
            ml.delete_model_version(ref)
    rec = reg.add_deployment_revision("svc", [{"ref": "churn@latest"}], note="promote", status="healthy")
    assert rec.revision == 3 and rec.status == "healthy"
    assert rec.models == [{"name": "churn", "version": 3}]
    assert ml.get_model("churn:1").deployments == []  # no longer served
    rec = reg.set_deployment_revision("svc", 2, note="rollback")
    assert rec.revision == 4
    assert [(m["name"], m["version"], m["traffic"]) for m in rec.models] == [("churn", 1, 90), ("churn", 2, 10)]
    assert ml.get_model("churn:1").deployments == ["svc"]
    history = reg.deployment_revisions("svc")
    assert [(h.revision, h.note) for h in history] == [(1, "first"), (2, "canary"), (3, "promote"), (4, "rollback")]


def test_rollback_to_a_deleted_version_fails_and_changes_nothing(three_versions):
    reg = three_versions
    reg.create_deployment("svc", "local", [{"ref": "churn:1"}])
    reg.add_deployment_revision("svc", [{"ref": "churn:2"}])
    ml.delete_model_version("churn:1")
    with pytest.raises(VersionNotFound, match="no version 1"):
        reg.set_deployment_revision("svc", 1)
    rec = reg.get_deployment("svc")
    assert rec.revision == 2 and rec.models == [{"name": "churn", "version": 2}]


def test_delete_is_idempotent_and_frees_the_version(three_versions):
    reg = three_versions
    reg.create_deployment("svc", "local", [{"ref": "churn:2"}], state={"pid": 123, "port": 5001})
    rec = reg.update_deployment("svc", status="unhealthy", status_reason="health probe timed out")
    assert (rec.status, rec.status_reason, rec.state) == ("unhealthy", "health probe timed out", {"pid": 123, "port": 5001})
    assert [d.name for d in reg.list_deployments()] == ["svc"]
    assert reg.delete_deployment("svc") is True
    assert reg.delete_deployment("svc") is False
    assert ml.delete_model_version("churn:2") == "churn:2"
    assert reg.list_deployments() == []


def test_deployment_errors(three_versions):
    reg = three_versions
    reg.create_deployment("svc", "local", [{"ref": "churn:1"}])
    with pytest.raises(AlreadyExists):
        reg.create_deployment("svc", "local", [{"ref": "churn:2"}])
    with pytest.raises(DeploymentNotFound, match="did you mean 'svc'"):
        reg.get_deployment("scv")
    with pytest.raises(InvalidName):
        reg.create_deployment("bad/name", "local", [{"ref": "churn:1"}])
    with pytest.raises(VersionNotFound):
        reg.create_deployment("other", "local", [{"ref": "churn:9"}])
    assert [d.name for d in reg.list_deployments()] == ["svc"]
