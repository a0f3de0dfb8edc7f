"""Storage locations as strings (paths and URIs), resource resolution against the cluster, checkpoint copies."""

from __future__ import annotations

import pytest

from peftsweep.search import storage
from peftsweep.search.config import SweepResources


@pytest.mark.parametrize("base,parts,expected", [
    ("/data/sweeps", ("ray", "s-1"), "/data/sweeps/ray/s-1"),
    ("s3://bucket/prefix/", ("trials", "s-1"), "s3://bucket/prefix/trials/s-1"),
    ("s3://bucket/p?endpoint_override=minio:9000&scheme=http", ("ray",),
     "s3://bucket/p/ray?endpoint_override=minio:9000&scheme=http"),
])
def test_join_keeps_the_scheme_and_query(base, parts, expected):
    assert storage.join(base, *parts) == expected


def test_parent_and_name_of_a_uri_with_query():
    location = "s3://b/p/ray/sweep-ab12?region=eu-west-1"
    assert storage.name_of(location) == "sweep-ab12"
    assert storage.parent_of(location) == "s3://b/p/ray?region=eu-west-1"


def test_uri_for_puts_back_what_ray_strips():
    # Ray reports object-store checkpoint paths without scheme; local paths stay as they are
    assert storage.uri_for("b/p/trials/t/checkpoint_0", "s3://b/p?region=x") == "s3://b/p/trials/t/checkpoint_0?region=x"
    assert storage.uri_for("/tmp/x/checkpoint_0", "file:///tmp/x") == "file:///tmp/x/checkpoint_0"
    assert storage.uri_for("/tmp/x/checkpoint_0", "/tmp/x") == "/tmp/x/checkpoint_0"


def test_resolve_makes_paths_absolute_and_leaves_uris(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert storage.resolve(None, tmp_path / "out") == str(tmp_path / "out")
    assert storage.resolve("shared", tmp_path / "out") == str(tmp_path / "shared")
    assert storage.resolve("gs://bucket/x", tmp_path / "out") == "gs://bucket/x"


def test_local_copy_of_a_uri_downloads_the_directory_or_chosen_files(tmp_path):
    source = tmp_path / "checkpoint_000001"
    (source / "adapter").mkdir(parents=True)
    (source / "adapter" / "weights.bin").write_bytes(b"w" * 10)
    (source / "manifest.json").write_text("{}")
    with storage.local_copy(source.as_uri()) as copy:
        assert copy != source  # a download, not the original
        assert (copy / "adapter" / "weights.bin").read_bytes() == b"w" * 10
        assert (copy / "manifest.json").is_file()
    assert not copy.exists()  # the download is temporary
    with storage.local_copy(source.as_uri(), only=["manifest.json"]) as copy:
        assert sorted(p.name for p in copy.iterdir()) == ["manifest.json"]
    with storage.local_copy(str(source)) as copy:
        assert copy == source
    assert storage.exists(source.as_uri()) and not storage.exists((tmp_path / "nope").as_uri())


def test_auto_gpus_follow_the_cluster_and_overrides_win():
    r = SweepResources.model_validate({"per_method": {"full": {"gpus_per_worker": 2}, "ia3": {"num_workers": 1}}})
    assert r.gpus_per_worker == "auto"
    assert r.for_method("lora", cluster_has_gpus=True).gpus_per_worker == 1.0
    assert r.for_method("lora", cluster_has_gpus=True).use_gpu
    assert r.for_method("lora", cluster_has_gpus=False).gpus_per_worker == 0.0
    assert not r.for_method("ia3", cluster_has_gpus=False).use_gpu
    assert r.for_method("full", cluster_has_gpus=False).gpus_per_worker == 2.0  # explicit: kept (capacity check refuses)
    assert SweepResources(gpus_per_worker=0).for_method("lora", cluster_has_gpus=True).gpus_per_worker == 0.0
