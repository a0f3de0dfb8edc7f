"""Checkpoint retention on disk: the newest N per trial, whatever Ray Train's bookkeeping missed."""

from peftsweep.search.storage import delete_checkpoints


def test_prune_keeps_the_newest_checkpoints_and_nothing_else_is_touched(tmp_path):
    for name in ("checkpoint_2026-01-01_10-00-00.1", "checkpoint_2026-01-01_10-00-05.2",
                 "checkpoint_2026-01-01_10-01-00.3"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "adapter_model.safetensors").write_bytes(b"x" * 100)
    (tmp_path / "checkpoint_manager_snapshot.json").write_text("{}")
    assert delete_checkpoints(str(tmp_path), keep=2) == 100
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "checkpoint_2026-01-01_10-00-05.2", "checkpoint_2026-01-01_10-01-00.3", "checkpoint_manager_snapshot.json"]
    assert delete_checkpoints(str(tmp_path), keep=2) == 0
    assert delete_checkpoints(str(tmp_path / "missing"), keep=1) == 0
