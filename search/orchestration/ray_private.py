"""The one module that reaches into Ray's private API, kept small so that a Ray upgrade breaks in one place.

The sweep ends a trial's Ray Train job with the trial (search.orchestration.train_jobs), and needs what Ray 2.60 has no public API
for:
- a hook that runs when a job's controller starts (Ray Train V2's public `UserCallback` sees reports and errors only),
  for the controller's actor handle (its `abort` is what Ray Train's own Ctrl-C calls): `JobHooks` subclasses
  `ray.train.v2._internal.execution.callback.ControllerCallback`;
- the placement groups a dead controller created (it dies with the trial actor that owns it, OOM-killed or SIGKILLed,
  and its group stays reserved until the sweep's driver exits): the GCS records each group's creator, read here
  through `ray._private.state` (`placement_groups_created_by`). Ray Train's own cleaner for this asks the State API,
  which needs Ray's dashboard, and registers the group only once the workers have started;
- Tune's upload of the driver's state to the sweep's storage (ray.train._internal.storage._FilesystemSyncer) copies
  a directory in which Tune and its searcher save their state atomically (a temporary file, then a rename): a file
  listed as `.<uuid>-tmp-...` and renamed before it was copied failed the upload with a 23-line traceback on the
  console (seen in `make demo`), and every copied temporary file stayed in the storage. Measured: 14 of 200 uploads
  failed beside a saver replacing a 200 kB state file, 80 stale temporary files left. `exclude_tmp_files_from_tune_sync`
  leaves those files out of the upload (the renamed file they become is uploaded whole);
- Tune's pace of saving the sweep's state (every trial's record and the searcher's study, what `--resume` reads): a
  fixed period (`TUNE_GLOBAL_CHECKPOINT_S`, 1 s here) makes a save that grows with the trial count take a growing
  share of the driver; Tune's own pacing (19 x the last save's time, so at most 5 % of the driver's time) is only
  offered with a floor of 10 s. `pace_tune_state_saves` keeps Tune's pacing with the configured period as its floor;
- and, for a quiet console, the function through which the raylet's notes reach the driver's console
  (`quiet_worker_pool_note`).
Tested with the Ray that requirements-lock.txt pins (`TESTED_RAY`); `api_problems()` says what moved, and
tests/search/test_ray_private.py fails with it, naming the Ray version.
"""

from __future__ import annotations

import inspect

import ray
from ray.train.torch import TorchTrainer
from ray.train.v2._internal.callbacks import DatasetsCallback
from ray.train.v2._internal.callbacks.placement_group_callback import PlacementGroupCleanerCallback
from ray.train.v2._internal.execution.callback import ControllerCallback, WorkerGroupCallback

from peftsweep.startup_marks import mark

TESTED_RAY = "2.60.0"  # requirements-lock.txt's pin


class JobHooks(ControllerCallback):
    """Runs in a trial's Train controller. Subclasses override `controller_started(controller, actor_id)`: this
    controller's actor handle and its actor id (hex)."""

    def controller_started(self, controller, actor_id: str) -> None:
        pass

    # Ray Train's private hook
    def after_controller_start(self, train_run_context) -> None:
        context = ray.get_runtime_context()
        self.controller_started(context.current_actor, context.get_actor_id())


class LeanTorchTrainer(TorchTrainer):
    """Ray Train's TorchTrainer without two helper actors that each job starts and a sweep's trial does not need, each
    a new Python process on the trial's path: the DatasetManager (Ray Data shards, started even without datasets;
    peftsweep hands the tokenized data through the object store) and the detached PlacementGroupCleaner (removes the
    placement group of a controller that died; in a sweep `TrainJobs` does that, search.orchestration.train_jobs)."""

    def _create_default_callbacks(self):
        unneeded = (PlacementGroupCleanerCallback,) + (() if self.datasets else (DatasetsCallback,))
        return [c for c in super()._create_default_callbacks() if not isinstance(c, unneeded)]


class StartupMarker(ControllerCallback, WorkerGroupCallback):
    """Runs in a trial's Train controller when startup marks are on (peftsweep.startup_marks): marks each step of
    starting the worker group (Ray Train's private hooks, called in this order)."""

    def after_controller_start(self, train_run_context) -> None:
        mark("controller_started")

    def before_worker_group_start(self, worker_group_context) -> None:
        mark("worker_group_starting")

    def before_init_train_context(self, workers) -> dict:  # the placement group is ready, the worker processes up
        mark("workers_created")
        return {}

    def after_worker_group_start(self, worker_group) -> None:  # after Ray's own callbacks: the process group is up
        mark("workers_ready")

    def after_worker_group_training_start(self, worker_group) -> None:
        mark("training_launched")


def placement_groups_created_by(actor_id: str) -> list:
    """The placement groups that the actor `actor_id` (hex) created and that are not removed."""
    from ray._private.state import state
    from ray.core.generated import gcs_pb2
    from ray.util.placement_group import PlacementGroup

    found = []
    for raw in state._connect_and_get_accessor().get_placement_group_table():
        data = gcs_pb2.PlacementGroupTableData.FromString(raw)
        if data.creator_actor_id.hex() == actor_id and data.state != gcs_pb2.PlacementGroupTableData.REMOVED:
            found.append(PlacementGroup(ray.PlacementGroupID(data.placement_group_id)))
    return found


def quiet_worker_pool_note() -> None:
    """The raylet tells the driver's console when it has started more than 4x as many worker processes as the node
    has CPUs. Here that is by design (each trial is several small actors: its driver, the Train controller, its
    workers, a report queue), so the note would only alarm: it is dropped, Ray's other notices are printed."""
    import ray._private.worker as ray_worker

    original = ray_worker.print_to_stdstream
    if getattr(original, "peftsweep_quiet", False):
        return

    def print_to_stdstream(data, ignore_prefix):
        if any("maximum expected startup concurrency" in line for line in data.get("lines", [])):
            return
        return original(data, ignore_prefix)

    print_to_stdstream.peftsweep_quiet = True
    ray_worker.print_to_stdstream = print_to_stdstream


TUNE_TMP_FILES = "*-tmp-*"  # Tune's atomic saves: f".{uuid}-tmp-{name}" (tune.utils.util, tune.search.searcher)


def exclude_tmp_files_from_tune_sync() -> None:
    """Tune's uploads of the driver's state leave out the temporary files of its atomic saves (see above)."""
    from ray.train._internal.storage import _FilesystemSyncer

    original = _FilesystemSyncer._sync_up_command
    if getattr(original, "peftsweep_excludes_tmp", False):
        return

    def _sync_up_command(self, local_path, uri, exclude=None):
        return original(self, local_path, uri, exclude=[*(exclude or []), TUNE_TMP_FILES])

    _sync_up_command.peftsweep_excludes_tmp = True
    _FilesystemSyncer._sync_up_command = _sync_up_command


def pace_tune_state_saves() -> None:
    """Tune saves its state at most every `max(TUNE_GLOBAL_CHECKPOINT_S, 19 x the last save's seconds)` (see above)."""
    from ray.tune.execution.experiment_state import _ExperimentCheckpointManager

    original = _ExperimentCheckpointManager._update_auto_checkpoint_time
    if getattr(original, "peftsweep_paced", False):
        return

    def _update_auto_checkpoint_time(self, time_taken: float):
        floor = self.__dict__.setdefault("_peftsweep_floor_s", self._checkpoint_period)  # the configured period
        self._checkpoint_period = max(floor, time_taken * 19)

    _update_auto_checkpoint_time.peftsweep_paced = True
    _ExperimentCheckpointManager._update_auto_checkpoint_time = _update_auto_checkpoint_time


def api_problems() -> list[str]:
    """What of the private API used here is not where this module expects it (empty: all of it is)."""
    from ray._private.state import GlobalState
    from ray.core.generated import gcs_pb2
    from ray.train.v2._internal.execution.controller.controller import TrainController

    problems = []
    from ray.train._internal.storage import _FilesystemSyncer
    from ray.tune.execution.experiment_state import _ExperimentCheckpointManager

    expected = {(_ExperimentCheckpointManager, "_update_auto_checkpoint_time"): ["self", "time_taken"],
                (ControllerCallback, "after_controller_start"): ["self", "train_run_context"],
                (_FilesystemSyncer, "_sync_up_command"): ["self", "local_path", "uri", "exclude"],
                (TrainController, "abort"): ["self"],
                (TorchTrainer, "_create_default_callbacks"): ["self"],
                (WorkerGroupCallback, "before_worker_group_start"): ["self", "worker_group_context"],
                (WorkerGroupCallback, "before_init_train_context"): ["self", "workers"],
                (WorkerGroupCallback, "after_worker_group_start"): ["self", "worker_group"],
                (WorkerGroupCallback, "after_worker_group_training_start"): ["self", "worker_group"],
                (GlobalState, "_connect_and_get_accessor"): ["self"]}
    for (cls, name), params in expected.items():
        method = getattr(cls, name, None)
        if method is None:
            problems.append(f"{cls.__name__}.{name} is gone")
        elif [p for p in inspect.signature(method).parameters if not p.startswith("_ray")] != params:
            # (Ray's tracing adds `_ray_trace_ctx` to an actor class's methods once the class is made remote)
            problems.append(f"{cls.__name__}.{name}{inspect.signature(method)}: expected ({', '.join(params)})")
    import ray._private.worker as ray_worker

    if not callable(getattr(ray_worker, "print_to_stdstream", None)):
        problems.append("ray._private.worker.print_to_stdstream is gone")
    fields = gcs_pb2.PlacementGroupTableData.DESCRIPTOR.fields_by_name
    problems += [f"the GCS's PlacementGroupTableData has no {name}" for name in
                 ("placement_group_id", "creator_actor_id", "state") if name not in fields]
    if not hasattr(gcs_pb2.PlacementGroupTableData, "REMOVED"):
        problems.append("PlacementGroupTableData has no REMOVED state")
    controller_hooks = [c for c in ControllerCallback.__mro__ if c is not object]
    if not any("after_controller_start" in vars(c) for c in controller_hooks):
        problems.append("ControllerCallback does not define after_controller_start")
    return problems
