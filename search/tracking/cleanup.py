"""Disk: delete the checkpoints of dominated trials once a sweep has finished, keeping the front's.

A trial's checkpoints live in two places: Ray Train's run directory (every `checkpoint_*` kept for resuming) and the
copy logged to MLflow (`checkpoint/` artifacts). Both go; the run itself, its metrics and parameters stay, tagged
`peftsweep.checkpoint_deleted`.
"""

from __future__ import annotations

from dataclasses import dataclass

from peftsweep.search.storage import delete_checkpoints, parent_of
from peftsweep.search.results.records import TrialRecord
from peftsweep.search.tracking.client import CHECKPOINT_TAG

DELETED_TAG = "peftsweep.checkpoint_deleted"


@dataclass
class Freed:
    trials: int = 0
    bytes: int = 0


# Whose checkpoints go: completed trials off the front, and early-stopped ones (never on it). Failed trials keep
# theirs (the last one helps find out why); there are no unfinished ones, as this runs when a sweep has finished.
DELETED_STATUSES = ("completed", "early_stopped")


def delete_dominated_checkpoints(client, records: list[TrialRecord], keep: set[str]) -> Freed:
    """`records`: the sweep's runs of both stages; `keep`: the configurations on its front (`Summary.front_configs`),
    whose search run and confirm runs keep their checkpoints."""
    freed = Freed()
    for record in records:
        if record.config_id in keep or record.status not in DELETED_STATUSES:
            continue
        run = client.get_run(record.run_id)
        path = run.data.tags.get(CHECKPOINT_TAG)
        freed.bytes += delete_checkpoints(parent_of(path)) if path else 0
        freed.bytes += _delete_mlflow_checkpoint(client, run)
        client.set_tag(record.run_id, DELETED_TAG, "true")
        freed.trials += 1
    return freed


def _delete_mlflow_checkpoint(client, run) -> int:
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

    logged = client.list_artifacts(run.info.run_id, "checkpoint")
    if not logged:
        return 0
    get_artifact_repository(run.info.artifact_uri).delete_artifacts("checkpoint")
    return sum(a.file_size or 0 for a in logged)
