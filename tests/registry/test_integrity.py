"""Artifacts are checked on every load; gc frees what nothing references."""

from __future__ import annotations

import os
import time

import pytest

import mlops_lab as ml
from mlops_lab import ArtifactCorrupted


def _tamper(path, data=b"evil"):
    os.chmod(path, 0o644)
    path.write_bytes(data)


def test_tampered_artifact_is_detected_and_not_loaded(registry, trained, blob_file):
    """Given a registered model whose file was changed on disk, loading names file and hashes."""
    mv = ml.register_model(trained, "iris")
    blob = blob_file(registry, mv.files[0].sha256)
    _tamper(blob, b"cos\nsystem\n(S'echo pwned'\ntR.")
    blob_file.settle()
    with pytest.raises(ArtifactCorrupted) as info:
        ml.load_model("iris")
    err = info.value
    assert err.expected == mv.files[0].sha256
    assert err.actual is not None and err.actual != err.expected
    assert registry.artifacts.where(mv.files[0].sha256) in str(err) and "model.pkl" in str(err) and "iris:1" in str(err)
    assert err.expected in str(err) and err.actual in str(err)
    assert registry.check() and "iris:1" in registry.check()[0]
    with pytest.raises(ArtifactCorrupted):
        ml.download_model("iris", registry.home.parent / "dl")


def test_missing_artifact_is_reported(registry, trained, blob_file):
    mv = ml.register_model(trained, "iris")
    blob_file(registry, mv.files[0].sha256).unlink()
    blob_file.settle()
    with pytest.raises(ArtifactCorrupted, match="is missing") as info:
        ml.load_model("iris")
    assert registry.artifacts.where(mv.files[0].sha256) in str(info.value) and "iris:1" in str(info.value)


def test_unpacked_copy_is_not_trusted(registry, tmp_path, blob_file):
    """A changed file in the unpacked folder is replaced from the checked blob store."""
    src = tmp_path / "m"
    src.mkdir()
    (src / "w.txt").write_text("weights")
    ml.register_model(src, "folder")
    path = ml.model_path("folder")
    (path / "w.txt").write_text("changed")
    assert (ml.model_path("folder") / "w.txt").read_text() == "weights"
    # but if the blob itself changed, nothing is handed out
    blob = blob_file(registry, ml.get_model("folder").files[0].sha256)
    _tamper(blob)
    blob_file.settle()
    (path / "w.txt").write_text("changed again")
    with pytest.raises(ArtifactCorrupted):
        ml.model_path("folder")


def test_gc_removes_only_unreferenced_blobs(registry, trained, tmp_path, blob_file):
    keep = ml.register_model(trained, "keep")
    shared = ml.register_model(trained, "shared")  # same content as keep
    (tmp_path / "x.bin").write_bytes(b"only here")
    gone = ml.register_model(tmp_path / "x.bin", "gone", baseline=[[1.0], [2.0]])
    ml.model_path("gone")
    ml.delete_model_version("gone:1")
    ml.delete_model_version("shared:1")

    # a young unreferenced blob may belong to a registration in flight: kept
    assert registry.gc(grace_seconds=3600)["blobs_removed"] == 0
    blob_file.settle()
    stats = registry.gc(grace_seconds=0)
    assert stats["blobs_removed"] == 2  # x.bin and the baseline
    assert stats["bytes_freed"] > 0 and stats["unpacked_removed"] == 1
    assert registry.artifacts.exists(keep.files[0].sha256)
    assert keep.files[0].sha256 == shared.files[0].sha256
    assert not registry.artifacts.exists(gone.files[0].sha256)
    ml.load_model("keep")
    assert registry.check() == []


def test_reused_blob_is_refreshed_so_gc_keeps_it(registry, tmp_path, blob_file):
    (tmp_path / "a.bin").write_bytes(b"same bytes")
    mv = ml.register_model(tmp_path / "a.bin", "a")
    ml.delete_model_version("a:1")
    blob = blob_file(registry, mv.files[0].sha256)
    old = time.time() - 7200
    os.utime(blob, (old, old))
    blob_file.settle()
    ml.register_model(tmp_path / "a.bin", "a")  # same content again
    assert blob.stat().st_mtime > old + 3600
    registry.gc()
    assert ml.load_model  # noqa: B018
    assert (ml.model_path("a:2") / "a.bin").read_bytes() == b"same bytes"
