"""Unit tests of the pure capping policy :func:`power.policy.decide`."""
from __future__ import annotations

import pytest

from power.policy import (
    BUDGET_SHRINK,
    FAIL_SAFE,
    INFEASIBLE,
    OVERSHOOT,
    RAISE,
    GpuReading,
    PolicyConfig,
    decide,
)


def readings(powers, limits, lo=100.0, hi=400.0, **kw):
    return [GpuReading(node=i // 2, gpu=i % 2, power_w=p, limit_w=lim, min_limit_w=lo,
                       max_limit_w=hi, **{k: v[i] for k, v in kw.items()})
            for i, (p, lim) in enumerate(zip(powers, limits, strict=True))]


def test_overshoot_is_cut_immediately_and_proportionally():
    # 4 x 390 W + 200 W other = 1760 W against a target of 1500 - 50 = 1450 W.
    d = decide(budget_w=1500, headroom_w=50, readings=readings([390] * 4, [400] * 4),
               other_power_w=200)
    assert d.reason == OVERSHOOT
    assert d.cluster_power_w == pytest.approx(1760)
    # Caps must sum to at most the GPU budget (1450 - 200) right away, not over many steps.
    assert sum(d.limits_w) == pytest.approx(1250, abs=1e-6)
    assert all(v == pytest.approx(312.5) for v in d.limits_w)


def test_overshoot_cuts_more_from_gpus_further_above_their_minimum():
    d = decide(budget_w=1000, headroom_w=0, readings=readings([350, 150], [400, 400]),
               other_power_w=600)  # 1100 W: 100 W over
    assert d.reason == OVERSHOOT
    cut = [min(400, p) - v for p, v in zip([350, 150], d.limits_w, strict=True)]
    # Shares proportional to (power - min): 250 : 50.
    assert cut[0] == pytest.approx(5 * cut[1], rel=1e-6)
    assert sum(d.limits_w) == pytest.approx(400, abs=1e-6)


def test_headroom_is_respected_even_when_under_budget():
    # 1470 W measured is under the 1500 W budget but over budget - headroom (1450 W).
    d = decide(budget_w=1500, headroom_w=50, readings=readings([335] * 4, [340] * 4),
               other_power_w=130)
    assert d.reason == OVERSHOOT
    assert sum(d.limits_w) + 130 <= 1450 + 1e-6


def test_room_is_used_slowly_and_only_by_capped_gpus():
    cfg = PolicyConfig(raise_step_fraction=0.02)
    # GPU 0 is at its 200 W cap, GPU 1 draws far below its cap; lots of room in the budget.
    d = decide(budget_w=3000, headroom_w=50, readings=readings([199, 120], [200, 300]),
               other_power_w=100, config=cfg)
    assert d.reason == RAISE
    assert d.limits_w[0] == pytest.approx(200 + 0.02 * 300)  # one small step, not a jump
    assert d.limits_w[1] < 300  # the uncapped GPU hands back some of its unused headroom


def test_limits_are_clamped_to_the_device_range():
    # Raising never exceeds max_limit_w ...
    d = decide(budget_w=5000, headroom_w=0, readings=readings([399] * 2, [399] * 2),
               other_power_w=0)
    assert max(d.limits_w) == pytest.approx(400)
    # ... and a budget below the minimum limits clamps at min_limit_w and says it's infeasible.
    d = decide(budget_w=150, headroom_w=0, readings=readings([300] * 2, [400] * 2),
               other_power_w=0)
    assert d.reason == INFEASIBLE
    assert d.limits_w == (100.0, 100.0)
    assert "exceed" in d.messages[-1]


def test_other_power_rise_shrinks_caps_without_waiting_for_an_overshoot():
    d = decide(budget_w=1000, headroom_w=0, readings=readings([200, 200], [300, 300]),
               other_power_w=500)  # measured 900 W, but caps sum to 600 > 500 W GPU budget
    assert d.reason == BUDGET_SHRINK
    assert sum(d.limits_w) == pytest.approx(500)


def test_straggler_gets_more_power_and_the_others_less():
    busy = [0.12, 0.10, 0.10, 0.10]
    d = decide(budget_w=1250, headroom_w=50, readings=readings([249] * 4, [250] * 4,
                                                               busy_s=busy),
               other_power_w=200)
    assert d.limits_w[0] > 250
    assert all(v < 250 for v in d.limits_w[1:])
    assert sum(d.limits_w) <= 1000 + 1e-6  # budget-neutral
    # Equal busy times (within tolerance) change nothing.
    d = decide(budget_w=1250, headroom_w=50,
               readings=readings([249] * 4, [250] * 4, busy_s=[0.1, 0.1005, 0.1, 0.0999]),
               other_power_w=200)
    assert d.limits_w == (250.0,) * 4


@pytest.mark.parametrize("bad", [dict(power_w=None), dict(age_s=1.5)])
def test_stale_or_missing_readings_fall_back_to_the_safe_cap(bad):
    rs = readings([200] * 4, [300] * 4)
    r = rs[2]
    rs[2] = GpuReading(node=r.node, gpu=r.gpu, power_w=bad.get("power_w", 200.0),
                       limit_w=300, min_limit_w=100, max_limit_w=400, age_s=bad.get("age_s", 0))
    d = decide(budget_w=3000, headroom_w=50, readings=rs, other_power_w=0)
    assert d.fail_safe and d.reason == FAIL_SAFE
    assert d.limits_w == (100.0,) * 4
    assert "node 1 GPU 0" in d.messages[0]
    d = decide(budget_w=3000, headroom_w=50, readings=rs, other_power_w=0,
               config=PolicyConfig(safe_limit_w=150))
    assert d.limits_w == (150.0,) * 4
    # A reading 0.9 s old is still fine.
    fresh = readings([200] * 4, [300] * 4, age_s=[0.9] * 4)
    assert not decide(budget_w=3000, headroom_w=50, readings=fresh, other_power_w=0).fail_safe


def test_unknown_other_power_triggers_the_fail_safe():
    d = decide(budget_w=3000, headroom_w=50, readings=readings([200] * 2, [300] * 2),
               other_power_w=None)
    assert d.fail_safe and "other node power" in d.messages[0]


def test_locked_clocks_mode_lowers_clocks_on_overshoot_and_raises_them_slowly():
    common = dict(min_clock_mhz=[210.0] * 2, max_clock_mhz=[1410.0] * 2,
                  clock_mhz=[1410.0] * 2, locked_max_clock_mhz=[1410.0] * 2)
    d = decide(budget_w=700, headroom_w=0, readings=readings([400] * 2, [400] * 2, **common),
               other_power_w=0, mode="clocks")
    assert d.reason == OVERSHOOT and d.clocks_mhz is not None
    # Power must fall to 350 W each: f = 1410 * (350/400) ** (1/2).
    assert d.clocks_mhz[0] == pytest.approx(1410 * (350 / 400) ** 0.5, rel=1e-6)
    common["locked_max_clock_mhz"] = [800.0] * 2
    d = decide(budget_w=2000, headroom_w=0, readings=readings([150] * 2, [150] * 2, **common),
               other_power_w=0, mode="clocks")
    # The allocation rises one small step (6 W) and the clock follows it.
    assert d.clocks_mhz[0] == pytest.approx(800 * (156 / 150) ** 0.5)


def test_invalid_arguments_are_rejected():
    rs = readings([100], [100])
    with pytest.raises(ValueError, match="budget_w"):
        decide(budget_w=0, headroom_w=0, readings=rs, other_power_w=0)
    with pytest.raises(ValueError, match="headroom_w"):
        decide(budget_w=100, headroom_w=100, readings=rs, other_power_w=0)
    with pytest.raises(ValueError, match="mode"):
        decide(budget_w=100, headroom_w=0, readings=rs, other_power_w=0, mode="turbo")
    with pytest.raises(ValueError, match="clock range"):
        decide(budget_w=100, headroom_w=0, readings=rs, other_power_w=0, mode="clocks")
    with pytest.raises(ValueError, match="raise_step_fraction"):
        PolicyConfig(raise_step_fraction=0)
