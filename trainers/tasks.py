"""The task kinds, by name (`spaces.TaskName`): adding one is its name there and one module in trainers/ that defines
`TASK = TaskKind(...)`, listed here. Configs and data carry the name; functions that act by task kind receive the
`TaskKind` (`get_task(name)` where a name enters: the recipe, the plan, the floor, a checkpoint's manifest)."""

from __future__ import annotations

from peftsweep.spaces import TaskName
from peftsweep.trainers import classification, generation
from peftsweep.trainers.task_kind import TaskKind

TASKS: dict[TaskName, TaskKind] = {kind.name: kind for kind in (classification.TASK, generation.TASK)}


def get_task(name: str) -> TaskKind:
    return TASKS[TaskName(name)]
