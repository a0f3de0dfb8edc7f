"""A few readable lines while a sweep runs, instead of Ray's tables: trials done / running / failed, best so far."""

from __future__ import annotations

import logging
import time

from ray.tune import Callback

from peftsweep.metric_names import TRAINABLE_PCT, VAL_ACCURACY
from peftsweep.search.results.objectives import LABELS, NOT_RUN, Objectives, value_of
from peftsweep.search.points import unflat
from peftsweep.search.tracking.trial_logger import trial_error_reason, trial_name

log = logging.getLogger(__name__)


# After this long without a line, say what the sweep is waiting for: each running trial, its epoch and how long ago
# it last reported (a trial that is slow, starved or stuck is told apart from a console that is merely quiet).
QUIET_S = 120.0


class ProgressPrinter(Callback):
    def __init__(self, total: int, planned_epochs: int, label: str = "", quiet_s: float = QUIET_S,
                 objectives: Objectives = Objectives()):
        self.total, self.planned_epochs = total, planned_epochs
        self.objectives = objectives
        self.label = f"{label} " if label else ""  # "confirm": the confirm stage's lines
        self.done = self.failed = 0
        self.best: tuple[float, str] | None = None
        self.start = self.last_line = time.monotonic()
        self.quiet_s = quiet_s
        self.seen: dict[str, tuple[float, int]] = {}  # trial id: (when it last reported or started, its epoch)

    def __getstate__(self) -> dict:
        return self.__dict__ | {"seen": {}}  # times of this driver's clock only

    # Saved with Tune's experiment state: a resumed sweep keeps counting where it stopped.
    def get_state(self) -> dict:
        return {"done": self.done, "failed": self.failed, "best": self.best}

    def set_state(self, state: dict) -> None:
        self.done, self.failed = state.get("done", 0), state.get("failed", 0)
        self.best = tuple(state["best"]) if state.get("best") else None

    def _line(self, trials, message: str, ended=None) -> None:
        running = sum(1 for t in trials if t.status == "RUNNING" and t is not ended)
        best = f" | best {self.quality_name} {self.best[0]:.3f} ({self.best[1]})" if self.best else ""
        elapsed = time.monotonic() - self.start
        log.info(f"[{elapsed:6.0f}s] {self.label}{self.done}/{self.total} done, {running} running, "
                 f"{self.failed} failed{best} | {message}")
        self.last_line = time.monotonic()

    def on_step(self, iteration, trials, **info):
        now = time.monotonic()
        if now - self.last_line < self.quiet_s:
            return
        running = [t for t in trials if t.status == "RUNNING"]
        waiting = sum(1 for t in trials if t.status == "PENDING")
        parts = []
        for t in running:
            since, epoch = self.seen.get(t.trial_id, (self.start, 0))
            where = (f"at epoch {epoch}/{self.planned_epochs}, {now - since:.0f} s since its last result" if epoch
                     else f"no result yet, {now - since:.0f} s since it started")
            parts.append(f"{trial_name(t)} {where}")
        what = "; ".join(parts) if parts else "no trial running"
        self._line(trials, f"waiting on {what}" + (f"; {waiting} pending" if waiting else ""))

    def on_trial_result(self, iteration, trials, trial, result, **info):
        self.seen[trial.trial_id] = (time.monotonic(), int(result.get("epoch", 0) or 0))

    def on_trial_start(self, iteration, trials, trial, **info):
        self.seen[trial.trial_id] = (time.monotonic(), 0)
        method, hparams = unflat(trial.config)
        shown = ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in hparams.items())
        self._line(trials, f"start {trial_name(trial)}: {shown}")

    def on_trial_complete(self, iteration, trials, trial, **info):
        self.done += 1
        result = trial.last_result or {}
        method = unflat(trial.config)[0]
        accuracy, pct = value_of(result, self.objectives.quality), value_of(result, TRAINABLE_PCT)
        costs = self._costs(result)
        epoch = int(result.get("epoch", 0))
        if result.get(NOT_RUN):
            self._line(trials, f"not run {trial_name(trial)}: {result[NOT_RUN]}", ended=trial)
            return
        if epoch < self.planned_epochs:  # its scheduler stopped it: never on the front, so never the best
            self._line(trials, f"stopped early {trial_name(trial)} at epoch {epoch}/{self.planned_epochs}: "
                               f"{self.quality_name} {accuracy:.3f} at {costs}", ended=trial)
            return
        over = self.objectives.over_budget(result)
        if accuracy == accuracy and not over and (self.best is None or accuracy > self.best[0]):
            self.best = (accuracy, f"{method}, {pct:.3g}% trainable")
        budget = f"; over budget: {', '.join(over)}" if over else ""
        self._line(trials, f"done  {trial_name(trial)}: {self.quality_name} {accuracy:.3f} at {costs}{budget}",
                   ended=trial)

    @property
    def quality_name(self) -> str:
        """`val_acc`, or the metric searched (`val_mcc`, `val_macro_f1`)."""
        return "val_acc" if self.objectives.quality == VAL_ACCURACY else self.objectives.quality

    def _costs(self, result: dict) -> str:
        """`0.335% trainable`, then the other cost objectives: `0.335% trainable, peak MiB 812, train s 41.2`."""
        parts = [f"{value_of(result, TRAINABLE_PCT):.3g}% trainable"]
        parts += [f"{LABELS[c]} {value_of(result, c):.4g}" for c in self.objectives.costs if c != TRAINABLE_PCT]
        return ", ".join(parts)

    def on_trial_recover(self, iteration, trials, trial, **info):
        self._line(trials, f"retry  {trial_name(trial)} (same seed): {trial_error_reason(trial)[:300]}")

    def on_trial_error(self, iteration, trials, trial, **info):
        self.done += 1
        self.failed += 1
        self._line(trials, f"FAILED {trial_name(trial)}: {trial_error_reason(trial)[:300]}", ended=trial)
