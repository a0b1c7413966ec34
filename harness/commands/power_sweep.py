r"""``harness power-sweep``: throughput and power at a series of GPU caps, and a cluster plan.

Examples::

    harness power-sweep --job jobs/asc19-final.yaml --limits 150:400:25
    harness power-sweep --job jobs/demo.yaml --workload infer --checkpoint runs/x/best.pt
    harness power-sweep --job jobs/demo.yaml --clocks 600:1400:100 --no-plan
    harness power-sweep --job jobs/asc19-final.yaml --plan-from runs/a-sweep --plan-from \
        runs/b-sweep --plan-nodes 2 --plan-nodes 2 --budget-w 3000   # plan only

For each setting every GPU of the node is capped (``power.backend`` of the job: NVML or
simulated), the workload warms up and then a fixed number of steps is measured; results go to
``sweep.json``/``sweep.csv`` (schema in :mod:`power.sweep`) in ``--out`` (default
``<launch.run_dir>/<job>-sweep-<timestamp>``), saved after every point. Re-running with the
same ``--out`` (or ``--resume DIR``) skips the points already measured. SIGINT/SIGTERM restore
the original settings first. At the end :mod:`power.planner` picks nodes, GPUs and caps under
``power.budget_w - power.headroom_w`` and writes ``plan.json``.

Workloads: ``train`` runs the job's training step (model, loss, a batch of ``data.train``);
``infer`` runs the generator on a batch of ``data.val`` and scores the identity similarity of
16 held-out faces at every setting. On NVML GPUs the workload runs on every visible GPU and
its synchronised step time gives images/s. On simulated GPUs throughput and power come from
the simulator's model (``--compute real`` also runs the workload on this CPU in every step).
"""
from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fileio.user_error import UserError
from harness.commands.common import add_job_arguments, run_guarded, setup_logging
from harness.config import load_job
from harness.outputs.logs import table_console

log = logging.getLogger(__name__)



def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``harness power-sweep``."""
    add_job_arguments(parser, required=False)
    parser.add_argument("--workload", choices=("train", "infer"), default="train",
                        help="what runs at each setting (default: train)")
    what = parser.add_mutually_exclusive_group()
    what.add_argument("--limits", metavar="A:B:STEP",
                      help="power limits in W, e.g. 150:400:25 or 200,250,300 "
                           "(default: 9 points over the GPU's range)")
    what.add_argument("--clocks", metavar="A:B:STEP",
                      help="locked maximum graphics clocks in MHz instead of power limits")
    parser.add_argument("--warmup-steps", type=int, default=10, metavar="N",
                        help="unmeasured steps after each change (default: 10)")
    parser.add_argument("--warmup-s", type=float, default=1.0, metavar="S",
                        help="and warm up for at least S seconds (default: 1), then until "
                             "the GPUs' power readings settle (at most 10 s more; a point "
                             "whose readings do not is flagged and left out of the plan)")
    parser.add_argument("--steps", type=int, default=50, metavar="N",
                        help="measured steps per setting (default: 50)")
    parser.add_argument("--batch-size", type=int, metavar="N",
                        help="images per GPU per step (default: train.batch_size / ranks, or "
                             "infer.batch_size)")
    parser.add_argument("--checkpoint", metavar="PT",
                        help="generator weights for --workload infer (default: infer.checkpoint"
                             " or shipped weights, else an untrained model)")
    parser.add_argument("--out", metavar="DIR", help="results folder; resumes if it holds a "
                        "sweep with the same settings (default: <run_dir>/<job>-sweep-<time>)")
    parser.add_argument("--resume", metavar="DIR", help="resume the sweep in DIR")
    sim = parser.add_argument_group("simulated GPUs (power.backend: simulated)")
    sim.add_argument("--compute", choices=("model", "real"), default="model",
                     help="model: steps take the simulator's time only; real: also run the "
                          "workload on this machine in every step (default: model)")
    sim.add_argument("--sim-images-per-s", type=float, metavar="X",
                     help="one simulated GPU's images/s at max clock (default: a nominal "
                          "figure per profile, see power.sweep.SIM_NOMINAL_IMAGES_PER_S)")
    sim.add_argument("--sim-clock", choices=("sim", "real"), default="sim",
                     help="sim: simulated time (a sweep takes well under a second); real: "
                          "wall time (default: sim)")
    sim.add_argument("--sim-state", metavar="FILE",
                     help="persist the simulated GPUs' settings to this JSON file")
    plan = parser.add_argument_group("planning")
    plan.add_argument("--no-plan", action="store_true", help="do not plan after the sweep")
    plan.add_argument("--plan-from", action="append", default=[], metavar="DIR",
                      help="plan from existing sweep(s) without measuring; one per node type "
                           "(repeatable)")
    plan.add_argument("--plan-nodes", type=int, action="append", default=[], metavar="N",
                      help="nodes available (default: launch.nodes; repeat per --plan-from)")
    plan.add_argument("--plan-gpus-per-node", type=int, action="append", default=[],
                      metavar="N", help="GPUs per node (default: launch.gpus_per_node, else "
                      "the GPUs of the sweep; repeat per --plan-from)")
    plan.add_argument("--budget-w", type=float, metavar="W", help="default: power.budget_w")
    plan.add_argument("--headroom-w", type=float, metavar="W", help="default: power.headroom_w")
    plan.add_argument("--node-other-w", type=float, action="append", default=[], metavar="W",
                      help="power of a node besides its GPUs (default: power.cpu_tdp_w + "
                           "power.node_overhead_w)")
    plan.add_argument("--switch-w", type=float, metavar="W", help="default: power.switch_w")
    plan.add_argument("--objective", choices=("sum", "sync"),
                      help="sum: independent GPUs (default for infer); sync: synchronous data "
                           "parallel, every GPU at the slowest one's pace (default for train)")
    plan.add_argument("--basis", choices=("cap", "avg", "peak"),
                      help="GPU power counted against the budget: the cap itself (default for "
                           "power limits) or the measured average/peak (default for clocks: avg)")
    parser.add_argument("--quiet", action="store_true", help="no table")


def run(args: argparse.Namespace) -> int:
    """Run ``harness power-sweep``; returns the exit code."""
    if not args.job and not args.plan_from:
        raise UserError("power-sweep: --job is required (or --plan-from DIR to plan only)")
    from harness.workloads.sweep_workloads import (
        PlanOptions,
        SweepOptions,
        load_sweep_dir,
        make_plan,
        read_meta,
        sweep,
    )

    job = load_job(args.job, args.overrides) if args.job else None
    options, planning = SweepOptions.from_args(args), PlanOptions.from_args(args)
    if args.plan_from:
        docs = []
        for d in args.plan_from:
            docs.append(load_sweep_dir(d))
        plan = make_plan(docs, job.power if job else None,
                         job.launch if job else None, planning)
        _print_plan(plan, quiet=args.quiet)
        return 0
    doc, out = sweep(job, options, on_point=None if args.quiet else _print_point)  # type: ignore[arg-type]
    if not args.quiet:
        _print_table(doc, out)
    if not args.no_plan:
        from power.sweep import write_sweep

        plan = make_plan([(doc, read_meta(out))], job.power if job else None,
                         job.launch if job else None, planning)
        doc["plan"] = plan.to_json()
        write_sweep(out, doc)
        _print_plan(plan, quiet=args.quiet)
    return 0


def _print_point(point: dict[str, Any], done: int, total: int) -> None:
    print(f"[{done}/{total}] {point['setting']:g} {point['unit']}: "
          f"{point['images_per_s']:.1f} images/s/GPU, {point['avg_gpu_w']:.1f} W avg, "
          f"{point['peak_gpu_w']:.1f} W peak"
          + (f", IS {point['is']:.4f}" if point["is"] is not None else ""), flush=True)


def _print_table(doc: dict[str, Any], out: Path) -> None:
    """The sweep's points, readable at 80 columns.

    Short headers whose units the caption gives (no two columns cut to the same "image…"),
    and IS only for a sweep that scored it.
    """
    from rich import box
    from rich.table import Table

    with_is = any(p["is"] is not None for p in doc["points"])
    t = Table(title=f"power sweep: {doc['job']} ({doc['workload']}) on {doc['gpu']}"
              + (" [simulated]" if doc["simulated"] else ""), box=box.SIMPLE_HEAD,
              caption="per GPU: img/s (images/s), avg W, peak W, J/img, img/s/W; node W: "
                      "the whole node; front *: no other point has more images/s for fewer "
                      "node joules per image", caption_justify="left", pad_edge=False,
              collapse_padding=True)
    cols = ["setting", "img/s", "avg W", "peak W", "node W", "J/img", "img/s/W"] \
        + (["IS"] if with_is else []) + ["front"]
    for col in cols:
        t.add_column(col, justify="right", no_wrap=True)
    for p in doc["points"]:
        t.add_row(f"{p['setting']:g} {p['unit']}", f"{p['images_per_s']:.1f}",
                  f"{p['avg_gpu_w']:.1f}", f"{p['peak_gpu_w']:.1f}", f"{p['avg_node_w']:.0f}",
                  f"{p['j_per_image']:.4f}", f"{p['images_per_s_per_w']:.3f}",
                  *([] if not with_is else ["-" if p["is"] is None else f"{p['is']:.4f}"]),
                  "*" if p["pareto"] else "")
    c = table_console()
    c.print(t)
    c.print(f"results: {out / 'sweep.json'}, {out / 'sweep.csv'}")


def _print_plan(plan: Any, quiet: bool = False) -> None:
    from rich.table import Table

    c = table_console()
    if not quiet:
        t = Table(title=f"plan ({plan.objective}): budget {plan.budget_w:.0f} W, headroom "
                        f"{plan.headroom_w:.0f} W")
        for col in ("node", "type", "GPU caps", "GPU W", "other W", "images/s"):
            t.add_column(col, justify="right")
        for i, n in enumerate(plan.nodes):
            t.add_row(str(i), n.node_type, " ".join(f"{v:g}" for v in n.caps),
                      f"{sum(n.gpu_power_w):.0f}", f"{n.other_w:.0f}",
                      f"{sum(n.gpu_images_per_s):.0f}")
        t.add_row("total", "", f"{plan.gpus} GPUs", f"{plan.predicted_gpu_w:.0f}",
                  f"{plan.predicted_cluster_w - plan.predicted_gpu_w:.0f}",
                  f"{plan.predicted_images_per_s:.0f}")
        c.print(t)
    c.print(plan.explanation, highlight=False)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m harness.commands.power_sweep`` (same as ``harness power-sweep``)."""
    parser = argparse.ArgumentParser(prog="harness power-sweep",
                                     description=__doc__.split("\n")[0])
    add_arguments(parser)
    args = parser.parse_args(argv)
    setup_logging()
    return run_guarded(lambda: run(args), prog="harness power-sweep")


if __name__ == "__main__":
    sys.exit(main())
