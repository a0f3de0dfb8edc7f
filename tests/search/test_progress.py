"""The sweep's console lines: after QUIET_S without one, a line says what the sweep is waiting on."""

from __future__ import annotations

from types import SimpleNamespace

from peftsweep.search.orchestration import progress
from peftsweep.search.orchestration.progress import ProgressPrinter


def trial(trial_id: str, status: str = "RUNNING"):
    return SimpleNamespace(trial_id=trial_id, status=status, config={"method": "lora", "lora.r": 8},
                           last_result={})


def test_a_quiet_sweep_says_which_trials_it_waits_on_and_since_when(monkeypatch, capsys):
    clock = [1000.0]
    monkeypatch.setattr(progress.time, "monotonic", lambda: clock[0])
    printer = ProgressPrinter(total=3, planned_epochs=2, quiet_s=120)
    a, b, c = trial("a"), trial("b"), trial("c", "PENDING")
    printer.on_trial_start(0, [a, b, c], a)
    printer.on_trial_start(0, [a, b, c], b)
    clock[0] += 50
    printer.on_trial_result(0, [a, b, c], a, {"epoch": 1})
    capsys.readouterr()
    clock[0] += 60  # 110 s since the last line (the starts): still quiet enough
    printer.on_step(1, [a, b, c])
    assert capsys.readouterr().out == ""
    clock[0] += 20
    printer.on_step(2, [a, b, c])
    line = capsys.readouterr().out
    assert "waiting on lora-a at epoch 1/2, 80 s since its last result" in line
    assert "lora-b no result yet, 130 s since it started" in line and "1 pending" in line
    printer.on_step(3, [a, b, c])  # the line it printed resets the quiet time
    assert capsys.readouterr().out == ""


def test_a_failure_reason_names_its_exception_on_one_line():
    from peftsweep.search.tracking.trial_logger import error_reason
    from peftsweep.trainers.faults import is_infrastructure_failure

    lost = ("Failure # 1\nTraceback (most recent call last):\n  File \"trial.py\", line 46, in sweep_trial\n"
            "ray.exceptions.ActorDiedError: The actor died unexpectedly before finishing this task.\n"
            "\tclass_name: TrainController\nThe actor is dead because its worker process has died.\n"
            "The actor never ran - it was cancelled before it started running.\n")
    assert error_reason(lost) == "ActorDiedError: The actor died unexpectedly before finishing this task."
    assert is_infrastructure_failure(error_reason(lost))  # a lost process: a confirm run is tried again
    ours = ("ray.exceptions.RayTaskError(TrialFailedError): ray::ImplicitFunc.train()\n  File \"x\"\n"
            "peftsweep.search.orchestration.trial.TrialFailedError: rank 0: NonFiniteLossError: loss is nan at step 3\n")
    assert error_reason(ours) == "rank 0: NonFiniteLossError: loss is nan at step 3"
    assert not is_infrastructure_failure(error_reason(ours))
    assert error_reason("something odd\n") == "something odd"
