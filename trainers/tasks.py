"""The task kinds, by name: adding one is one module in trainers/ that defines `TASK = TaskKind(...)`, listed here."""

from __future__ import annotations

from peftsweep.trainers import classification, generation
from peftsweep.trainers.task_kind import TaskKind

TASKS: dict[str, TaskKind] = {kind.name: kind for kind in (classification.TASK, generation.TASK)}


def get_task(name: str) -> TaskKind:
    return TASKS[name]
