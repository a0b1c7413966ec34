"""The loop's typed seams: the step hooks (order, the metrics line's cadence and content) and
Engine.reschedule through the LR plan (the same rates as a scheduler built with the new plan,
no private scheduler field written, the scheduler's saved state unchanged in form)."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch

from harness.cluster.distributed import Reducer
from harness.config import TrainConfig, load_job
from harness.outputs.run_folders import MetricsLog
from harness.training.engine import Engine, LRPlan, lr_factor
from harness.training.hooks import HookSet, MetricsHook, StepEnd

ROOT = Path(__file__).resolve().parents[2]


def _end(done: int, steps: int = 25, log_every: int = 10) -> StepEnd:
    return StepEnd(done=done, steps=steps, log_every=log_every, lr=1e-3 * done,
                   terms={"total": 0.5 / done, "pixel": 0.1}, step_time_s=0.25, batch_size=16,
                   rank_images=8, images=16 * done, elapsed_s=float(done), val_is=None)


class _Recorder:
    def __init__(self, name: str, calls: list[str]) -> None:
        self.name, self.calls = name, calls

    def on_step_start(self, step: int) -> None:
        self.calls.append(f"{self.name}:start:{step}")

    def on_step_end(self, end: StepEnd) -> None:
        self.calls.append(f"{self.name}:end:{end.done}")


def test_hooks_run_in_order_at_both_points() -> None:
    calls: list[str] = []
    hooks = HookSet([_Recorder("a", calls), _Recorder("b", calls)])
    hooks.on_step_start(4)
    hooks.on_step_end(_end(5))
    assert calls == ["a:start:4", "b:start:4", "a:end:5", "b:end:5"]


def test_metrics_hook_writes_every_log_every_steps_and_the_last(tmp_path: Path) -> None:
    log = MetricsLog(tmp_path / "metrics.jsonl", True)
    hook = MetricsHook(log)
    for done in range(1, 26):
        hook.on_step_end(_end(done))
    log.close()
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [10, 20, 25]
    assert rows[0] == {"kind": "train", "step": 10, "lr": 0.01, "loss": {"total": 0.05,
                       "pixel": 0.1}, "step_time_s": 0.25, "images_per_s": 64.0,
                       "time_s": 10.0}


def _engine(train: TrainConfig) -> Engine:
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(model.parameters(), lr=train.lr)
    plan = LRPlan(train)
    return Engine(train=train, device="cpu", model=model, wrapped=model,
                  params=list(model.parameters()), opt=opt, sched=plan.scheduler(opt),
                  reducer=Reducer("ddp", 1), loss_fn=None,  # type: ignore[arg-type]
                  lr_plan=plan)


@pytest.mark.parametrize("schedule", ["cosine", "step", "constant"])
def test_reschedule_gives_the_rates_of_a_scheduler_built_with_the_new_plan(schedule) -> None:
    job = load_job(ROOT / "jobs/demo.yaml", [f"train.lr_schedule={schedule}"])
    engine = _engine(job.train)
    for _ in range(30):
        engine.opt.step()
        engine.sched.step()
    fitted = dataclasses.replace(job.train, steps=120)  # as train.fit_to_minutes does
    engine.reschedule(fitted)
    base = job.train.lr
    rates = []
    for step in range(30, 120):
        expected = base * lr_factor(step, fitted)
        assert engine.opt.param_groups[0]["lr"] == expected
        assert engine.sched.get_last_lr() == [expected]
        rates.append(expected)
        engine.opt.step()
        engine.sched.step()
    assert engine.sched.last_epoch == 120
    assert engine.sched.state_dict()["lr_lambdas"] == [None]  # the factor is not saved
    if schedule != "constant":
        assert len(set(rates)) > 1
