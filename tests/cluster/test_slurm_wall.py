"""The wall on the 2-node Slurm test bed: one simulated rack PDU for a job of two nodes.

The smoke job on two nodes (one rank each, ``srun --mpi=pmix``) from the script ``harness
launch --scheduler slurm`` writes, with ``power.sim_pdu: true`` and the simulated phases, and
nothing done by hand: node leader 0 writes the rack's one series ``power/pdu.csv`` on the same
UTC axis as both nodes' samples; the governors hold the wall. Figures are printed (``-s``).
"""
from __future__ import annotations

import pytest
import yaml

from power.pdu import read_pdu_csv, wall_stats
from tests.cluster.slurm_jobs import cluster_series, launch, rank_hosts, read_json, submit

pytestmark = pytest.mark.cluster

BUDGET_W = 3000.0


def test_two_nodes_hold_the_wall_and_the_summary_is_the_pdu_log(slurm_cluster, tmp_path):
    """4 simulated A100s per node: uncapped the components alone would draw ~3900 W, so the
    budget binds. Every PDU reading stays under it; the summary's wall verdict is the log's;
    the wall is at least 5 % above the components summed at the same instants."""
    script = launch(slurm_cluster, tmp_path, "power.enabled=true", "power.backend=simulated",
                    "power.sim_gpus_per_node=4", f"power.budget_w={BUDGET_W}",
                    "power.sim_pdu=true", "power.sim_phases=true", "train.steps=1500",
                    "train.ckpt_every=500", "train.val_every=750")
    job = submit(slurm_cluster, script, tmp_path / "runs")
    result = job.wait(timeout=300)
    assert result[:3] == ("COMPLETED", 0, 0), f"{result}\n{job.log()[-4000:]}"
    run = job.run_dir()
    hosts = rank_hosts(run)
    assert sorted(hosts) == [0, 1] and len(set(hosts.values())) == 2, hosts

    # One rack series, written by node leader 0 only.
    assert sorted(p.name for p in (run / "power").glob("**/pdu*.csv")) == ["pdu.csv"]
    rows = read_pdu_csv(run / "power" / "pdu.csv")
    assert len(rows) >= 5, rows
    wall = [r.wall_w for r in rows]
    assert max(wall) <= BUDGET_W, [r for r in rows if r.wall_w > BUDGET_W]

    summary = read_json(run / "summary.json")["power"]
    model = summary["wall"].pop("model")  # how the wall was held: learned from the meter
    assert model["source"] == "learned online", model
    assert summary["wall"] == {**wall_stats(rows, BUDGET_W, source="simulated PDU"),
                               "meter_faults": 0}

    # The same UTC axis as both nodes' samples: each reading's 1-s window lies within the span
    # the nodes sampled, and the components summed over that window are below the wall.
    switch_w = float((yaml.safe_load((run / "job.yaml").read_text())["power"] or {})
                     .get("switch_w", 0.0))
    series = cluster_series(run / "power", shared_w=switch_w)
    assert len(series.nodes) == 2
    start, end = series.unix_s[0], series.unix_s[-1]
    inside = [r for r in rows if start <= r.unix_s - r.window_s and r.unix_s <= end]
    assert len(inside) >= len(rows) - 2, (start, end, [r.unix_s for r in rows])
    components = []
    for r in inside:
        points = [w for t, w in zip(series.unix_s, series.watts, strict=True)
                  if r.unix_s - r.window_s <= t < r.unix_s]
        assert points, r
        components.append(sum(points) / len(points))
    ratio = sum(r.wall_w for r in inside) / sum(components)
    assert ratio >= 1.05, ratio
    print(f"\n[wall] 2 nodes: {len(rows)} PDU readings, peak {max(wall):.1f} W, mean "
          f"{sum(wall) / len(wall):.1f} W ({100 * sum(wall) / len(wall) / BUDGET_W:.1f} % of "
          f"the budget), wall/components {ratio:.3f}, crossings {summary['wall']['crossings']}")
