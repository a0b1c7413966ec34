"""Known load steps: announced phases, simulated GPUs following them, the governor holding caps."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from power.clock import SimClock
from power.config import FieldError, PowerConfig
from power.governor import Governor
from power.pdu import (
    FanModel,
    PsuCurve,
    RackWallModel,
    SimulatedPdu,
    SimulatedRackPdu,
    read_pdu_csv,
    wall_stats,
)
from power.phases import (
    CHECKPOINT,
    SIM_PHASE_LOADS,
    START,
    TRAIN,
    VALIDATION,
    PhaseBoard,
    PhasedLoad,
)
from power.simulated import constant_load, make_simulated_gpus, noisy_phase_load
from tests.conftest import ROOT, run_harness

SMOKE = str(ROOT / "jobs/smoke.yaml")
EPOCH = 1.8e9


def test_board_keeps_a_short_lowering_phase_for_min_s_and_rejects_unknown_phases() -> None:
    now = [0.0]
    board = PhaseBoard(min_s=2.0, clock=lambda: now[0])
    assert board.phase() == START and not board.holding()
    board.announce(TRAIN)
    now[0] = 5.0
    board.announce(CHECKPOINT)
    assert board.holding()
    now[0] = 5.1
    board.announce(TRAIN)  # the loop is back after 0.1 s; the GPUs' checkpoint takes 2 s
    assert board.phase() == CHECKPOINT
    now[0] = 7.0
    assert board.phase() == TRAIN and not board.holding()
    assert board.announced == [TRAIN, CHECKPOINT, TRAIN]
    with pytest.raises(ValueError, match="unknown phase 'eval'"):
        board.announce("eval")
    with pytest.raises(FieldError, match="sim_phase_s"):
        PowerConfig(sim_phase_s=-1.0)


def test_simulated_load_follows_the_phase() -> None:
    board = PhaseBoard()
    load = PhasedLoad(constant_load(0.9), board)
    assert load(0.0) == SIM_PHASE_LOADS[START]
    board.announce(TRAIN)
    assert load(1.0).activity == 0.9
    board.announce(VALIDATION)
    assert load(2.0).activity < 0.9 * 0.6
    board.announce(CHECKPOINT)
    assert load(3.0).activity <= 0.05


def _governed_checkpoints(tmp_path: Path, hold: bool) -> list[float]:
    """The PDU log of 8 simulated A100s under a 3000 W wall, two 3-s checkpoints, 60 s."""
    clock = SimClock()
    board = PhaseBoard(clock=clock.now)
    loads = [PhasedLoad(noisy_phase_load(seed=i, duration_s=120.0), board) for i in range(8)]
    gpus = make_simulated_gpus("A100-SXM4", 8, clock=clock, loads=loads)
    model = RackWallModel(psu=PsuCurve(3000.0), fans=FanModel(30.0, 150.0, 3000.0))
    pdu = SimulatedRackPdu(model, SimulatedPdu(latency_s=1.0, noise_w=5.0, seed=0),
                           tmp_path / f"pdu-{hold}.csv", clock=lambda: EPOCH + clock.now())
    gov = Governor(gpus, budget_w=3000.0, headroom_w=150.0, other_power_w=lambda _: 355.0,
                   clock=clock, handle_signals=False, period_s=0.1)
    gov.wall_hook, gov.wall_offset = pdu, pdu.tracker.offset_w
    if hold:
        gov.phase_hold = board.holding
    plan = {20: TRAIN, 200: CHECKPOINT, 230: TRAIN, 400: CHECKPOINT, 430: TRAIN}
    with gov:
        for k in range(600):
            if k in plan:
                board.announce(plan[k])
            clock.advance(0.1)
            gov.step()
    pdu.close()
    rows = read_pdu_csv(tmp_path / f"pdu-{hold}.csv")
    return [r.wall_w for r in rows]


def test_checkpoints_show_at_the_wall_and_holding_the_caps_removes_the_ramp_after_them(
        tmp_path: Path) -> None:
    free = _governed_checkpoints(tmp_path, hold=False)
    held = _governed_checkpoints(tmp_path, hold=True)
    for wall in (free, held):
        assert max(wall) <= 3000.0  # no crossing, with or without the hold
        assert min(wall[20:23]) < 1500.0  # the checkpoint's idle GPUs show at the wall
        assert min(wall[40:43]) < 1500.0
    # Right after each checkpoint (the 1-s readings of seconds 23-26 and 43-46): the held caps come
    # back at once; the free ones fell to the floor with the draw and ramp for seconds.
    for after in (slice(23, 26), slice(43, 46)):
        assert min(held[after]) > 2600.0, held[after]
        assert min(free[after]) < 2300.0, free[after]
    assert sum(held) > sum(free) + 2 * 1000.0


def test_training_run_announces_its_phases_and_the_wall_stays_under_budget(
        tmp_path: Path) -> None:
    """A real short run (one process) with the simulated PDU and phases: its pdu.csv.

    1500 smoke steps last ~20 s on an idle AVX-512 core: enough 1-s readings on any machine
    (400 steps gave 3 readings there, the test needs 5 and a checkpoint's dip between them).
    """
    proc = run_harness("train", "--job", SMOKE, "--quiet", "--run-dir", str(tmp_path),
                       "--set", "train.steps=1500", "--set", "train.ckpt_every=500",
                       "--set", "train.val_every=700", "--set", "power.enabled=true",
                       "--set", "power.sim_pdu=true", "--set", "power.sim_phases=true",
                       "--set", "power.sim_gpus_per_node=8",
                       "--set", "power.node_overhead_w=200")
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = next(p for p in tmp_path.iterdir() if p.is_dir() and not p.is_symlink())
    rows = read_pdu_csv(run / "power" / "pdu.csv")
    wall = [r.wall_w for r in rows]
    assert len(wall) >= 5 and max(wall) <= 3000.0
    summary = json.loads((run / "summary.json").read_text())["power"]["wall"]
    assert summary.pop("model")["source"] == "learned online"  # how the wall was held
    assert summary == {**wall_stats(rows, 3000.0, source="simulated PDU"),
                       "meter_faults": 0}
    events = [json.loads(line) for line in
              (run / "power" / "node000" / "governor_events.jsonl").read_text().splitlines()]
    holds = [e for e in events if e["event"] == "phase_hold"]
    assert len(holds) >= 2, [e["event"] for e in events]
    # The run's own checkpoints (2 s each on the simulated GPUs) show as dips at the wall.
    assert min(wall[2:]) < 0.6 * max(wall)


def test_start_caps_leave_the_walls_excess_when_the_wall_is_held() -> None:
    from power.phases import wall_excess_w
    from power.session import _start_wall_excess_w

    model = RackWallModel(psu=PsuCurve(3000.0), fans=FanModel(30.0, 150.0, 3000.0))
    excess = wall_excess_w(model, 2850.0, 2)
    assert excess == pytest.approx(model.wall_w([1425.0, 1425.0]) - 2850.0)
    assert 250.0 < excess < 600.0  # PSU losses, two nodes' fans and the switch
    held = PowerConfig(sim_pdu=True)
    assert _start_wall_excess_w(held, 2) == pytest.approx(excess)
    assert _start_wall_excess_w(PowerConfig(sim_pdu=True, hold="components"), 2) == 0.0
    assert _start_wall_excess_w(PowerConfig(), 1) == 0.0  # no meter: nothing to hold
