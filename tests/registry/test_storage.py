"""The store's own failure modes: a full disk, a file that is not a registry, a newer schema."""

from __future__ import annotations

import numpy as np
import pytest

import mlops_lab as ml
from mlops_lab import RegistrySchemaError, StorageFull
from mlops_lab.registry import schema
from mlops_lab.registry.store import Registry


def test_full_disk_gets_a_clear_error_and_loses_nothing(small_disk, fill_disk, monkeypatch):
    """Given a registry on a full disk, registering fails with StorageFull, nothing is recorded,
    the earlier version still loads, and once space is freed the next version is gap-free."""
    monkeypatch.setenv("MLOPS_LAB_HOME", str(small_disk / "home"))
    ml.register_model(lambda x: x + 1, "m")
    filler = fill_disk(small_disk)
    big = np.random.RandomState(0).rand(64, 1024)  # 512 KiB: cannot fit

    class Big:
        def __init__(self):
            self.w = big

        def predict(self, x):
            return x

    with pytest.raises(StorageFull) as info:
        ml.register_model(Big(), "m")
    assert "no space left" in str(info.value) and "nothing was recorded" in str(info.value)
    assert "\n" not in str(info.value)
    assert [m.ref for m in ml.search_model_versions()] == ["m:1"]
    assert ml.load_model("m").predict(1) == 2
    assert not any((small_disk / "home" / "artifacts" / "tmp").iterdir())

    filler.unlink()
    assert ml.register_model(Big(), "m").version == 2
    assert ml.load_model("m:2").w.shape == (64, 1024)


def test_a_file_that_is_not_a_registry(tmp_path):
    home = tmp_path / "h"
    home.mkdir()
    (home / "registry.db").write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(RegistrySchemaError, match="is not an mlops_lab registry"):
        Registry(home)


def test_newer_schema_is_refused_and_older_is_migrated(tmp_path, monkeypatch):
    reg = Registry(tmp_path / "h")
    reg.register_model(lambda x: x, "m")
    assert reg.schema_version == schema.SCHEMA_VERSION
    reg.close()

    # a later release with one more schema version migrates the registry in place
    ran = []

    def migrate(conn):
        ran.append(True)
        conn.exec_driver_sql("CREATE TABLE extra_things (id INTEGER PRIMARY KEY)")

    monkeypatch.setattr(schema, "SCHEMA_VERSION", schema.SCHEMA_VERSION + 1)
    monkeypatch.setitem(schema.MIGRATIONS, schema.SCHEMA_VERSION, migrate)
    reg = Registry(tmp_path / "h")
    assert ran == [True] and reg.schema_version == schema.SCHEMA_VERSION
    assert reg.get_version("m").version == 1
    reg.close()
    Registry(tmp_path / "h").close()
    assert ran == [True]  # only once

    # and this release refuses the newer database instead of guessing
    monkeypatch.setattr(schema, "SCHEMA_VERSION", schema.SCHEMA_VERSION - 1)
    with pytest.raises(RegistrySchemaError, match="newer than this mlops_lab understands"):
        Registry(tmp_path / "h")


def test_home_folder_that_cannot_be_created(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(ml.StorageError, match="could not create the home folder"):
        Registry(blocker / "home")
