"""``harness power-sweep``: throughput and power at a series of GPU caps, and a cluster plan.

Examples::

    harness power-sweep --job jobs/asc19-final.yaml --limits 150:400:25
    harness power-sweep --job jobs/demo.yaml --workload infer --checkpoint runs/x/best.pt
    harness power-sweep --job jobs/demo.yaml --clocks 600:1400:100 --no-plan
    harness power-sweep --job jobs/asc19-final.yaml --plan-from runs/a-sweep --plan-from \\
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
import copy
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from harness.cli import add_job_arguments, run_guarded, setup_logging
from harness.config import JobConfig, load_job
from harness.errors import UserError

log = logging.getLogger(__name__)

IS_FACES = 16
"""Held-out faces scored at every setting of an inference sweep."""


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
                        help="and warm up for at least S seconds (default: 1)")
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
    job = load_job(args.job, args.overrides) if args.job else None
    if not args.warmup_s >= 0:
        raise UserError(f"--warmup-s: must be >= 0, got {args.warmup_s}")
    for name in ("warmup_steps", "steps", "batch_size"):
        v = getattr(args, name)
        if v is not None and v < (0 if name == "warmup_steps" else 1):
            raise UserError(f"--{name.replace('_', '-')}: must be >= "
                            f"{0 if name == 'warmup_steps' else 1}, got {v}")
    if args.plan_from:
        docs = []
        for d in args.plan_from:
            docs.append(_load_sweep_dir(d))
        plan = make_plan(docs, job, args)
        _print_plan(plan, quiet=args.quiet)
        return 0
    doc, out = sweep(job, args)  # type: ignore[arg-type]
    if not args.quiet:
        _print_table(doc, out)
    if not args.no_plan:
        from power.sweep import write_sweep

        plan = make_plan([(doc, _read_meta(out))], job, args)
        doc["plan"] = plan.to_json()
        write_sweep(out, doc)
        _print_plan(plan, quiet=args.quiet)
    return 0


# --------------------------------------------------------------------------- sweep


def sweep(job: JobConfig, args: argparse.Namespace) -> tuple[dict[str, Any], Path]:
    """Run (or resume) the sweep described by ``args``; returns (sweep.json object, folder)."""
    from power.clock import MonotonicClock, SimClock
    from power.node import ExternalMeter, NodePower
    from power.sweep import (
        SIM_LOADS,
        SIM_NOMINAL_IMAGES_PER_S,
        ModelPacedWorkload,
        SweepSpec,
        check_settings,
        default_settings,
        parse_range,
        run_sweep,
    )

    p = job.power
    mode = "clocks" if args.clocks else "power_limit"
    if p.backend == "replay":
        raise UserError("power.backend: replay cannot apply settings; use simulated or nvml "
                        "for power-sweep")
    simulated = p.backend == "simulated"
    clock = SimClock() if simulated and args.sim_clock == "sim" else MonotonicClock()
    gpus = _open_gpus(job, args, clock)
    text = args.clocks or args.limits
    try:
        settings = (parse_range(text, option="--clocks" if args.clocks else "--limits")
                    if text else default_settings(gpus, mode))
        check_settings(settings, gpus, mode)
    except ValueError as exc:
        raise UserError(str(exc)) from None

    batch = args.batch_size or (max(1, job.train.batch_size // job.launch.world_size)
                                if args.workload == "train" else job.infer.batch_size)
    extra: dict[str, str] = {}
    if args.workload == "infer":
        extra["checkpoint"] = str(args.checkpoint or job.infer.checkpoint or "")
    if simulated:
        base = args.sim_images_per_s or SIM_NOMINAL_IMAGES_PER_S.get(p.sim_profile, 1000.0)
        if not base > 0:
            raise UserError(f"--sim-images-per-s: must be > 0, got {base}")
        extra.update(sim_images_per_s=f"{base:g}", sim_load=f"{SIM_LOADS[args.workload]}")
        inner = None
        if args.compute == "real" or args.workload == "infer":
            inner = _torch_workload(job, args, ["cpu"], batch)
        workload = ModelPacedWorkload(gpus, kind=args.workload, batch_size=batch,
                                      images_per_s_at_max=base, inner=inner,
                                      run_inner=args.compute == "real")
    else:
        workload = _torch_workload(job, args, [f"cuda:{i}" for i in range(len(gpus))], batch)
    spec = SweepSpec(job=job.name, workload=args.workload, mode=mode, gpu=gpus[0].get_name(),
                     gpus=len(gpus), simulated=simulated, batch_size=batch,
                     warmup_steps=args.warmup_steps, steps=args.steps, warmup_s=args.warmup_s,
                     extra=tuple(sorted(extra.items())))
    out = Path(args.resume or args.out or Path(job.launch.run_dir)
               / f"{job.name}-sweep-{time.strftime('%Y%m%d-%H%M%S')}")
    if args.resume and not (out / "sweep.json").is_file():
        raise UserError(f"--resume {out}: no sweep.json there")
    meter = ExternalMeter(p.meter_command, clock=clock) if p.meter_command else None
    node = NodePower(cpu_tdp_w=p.cpu_tdp_w, overhead_w=p.node_overhead_w, meter=meter,
                     clock=clock)
    idle = (float(gpus[0].profile.static_w) if simulated  # type: ignore[attr-defined]
            else min(g.get_power_usage_mw() for g in gpus) / 1000.0)
    lo_w, hi_w = (v / 1000.0 for v in gpus[0].get_power_limit_constraints_mw())
    meta = {"gpu_idle_w": idle, "power_limit_range_w": [lo_w, hi_w],
            "clock_range_mhz": list(gpus[0].get_clock_range_mhz()),
            "node_other_w": p.cpu_tdp_w + p.node_overhead_w,
            "compute": args.compute if simulated else "real"}

    def on_point(point: dict[str, Any], done: int, total: int) -> None:
        if not args.quiet:
            print(f"[{done}/{total}] {point['setting']:g} {point['unit']}: "
                  f"{point['images_per_s']:.1f} images/s/GPU, {point['avg_gpu_w']:.1f} W avg, "
                  f"{point['peak_gpu_w']:.1f} W peak"
                  + (f", IS {point['is']:.4f}" if point["is"] is not None else ""), flush=True)

    t0 = time.perf_counter()
    from power.sweep import SweepMismatchError

    try:
        doc = run_sweep(gpus, workload, spec, settings, out, clock=clock, node=node,
                        sample_hz=p.sample_hz, meta=meta, on_point=on_point)
    except SweepMismatchError as exc:
        raise UserError(str(exc)) from None
    log.info("sweep of %d point(s) in %.1f s -> %s", len(doc["points"]),
             time.perf_counter() - t0, out)
    return doc, out


def _open_gpus(job: JobConfig, args: argparse.Namespace, clock: Any) -> list:
    p = job.power
    if p.backend == "nvml":
        from power import PowerError, open_nvml_gpus

        try:
            return open_nvml_gpus()
        except PowerError as exc:
            raise UserError(f"power.backend: nvml: {exc} (run `harness doctor`; use "
                            "power.backend: simulated on machines without GPUs)") from None
    from power.simulated import constant_load, get_profile, make_simulated_gpus
    from power.sweep import SIM_LOADS

    try:
        get_profile(p.sim_profile)
    except ValueError as exc:
        raise UserError(f"power.sim_profile: {exc}") from None
    activity, memory_bound = SIM_LOADS[args.workload]
    return make_simulated_gpus(p.sim_profile, p.sim_gpus_per_node, clock=clock,
                               loads=constant_load(activity, memory_bound),
                               state_path=args.sim_state)


# --------------------------------------------------------------------------- real workloads


def _torch_workload(job: JobConfig, args: argparse.Namespace, devices: Sequence[str],
                    batch: int) -> TorchWorkload:
    import torch

    from harness.data import load_pairs, make_batch
    from harness.train import build_generator, model_kwargs

    torch.manual_seed(job.train.seed)
    kind = args.workload
    source = job.data.train if kind == "train" else job.data.val
    pairs = load_pairs(source, job.data.lr_kernel)
    idx = [i % len(pairs) for i in range(batch)]
    lr, hr = make_batch(pairs, idx, None, np.random.default_rng(0))
    if kind == "train":
        model = build_generator(job.model.name, model_kwargs(job))
        if not any(p.requires_grad for p in model.parameters()):
            raise UserError(f"model.name: {job.model.name} has no trainable parameters; "
                            "sweep it with --workload infer")
    else:
        model = _infer_model(job, args.checkpoint)
    is_pairs = None
    if kind == "infer":
        val = load_pairs(job.data.val, job.data.lr_kernel)
        n = min(IS_FACES, len(val))
        is_pairs = make_batch(val, list(range(n)), None, np.random.default_rng(0))
    return TorchWorkload(job, kind, model, devices, lr, hr, is_pairs)


def _infer_model(job: JobConfig, checkpoint: str | None):
    from harness.infer import load_generator
    from harness.train import build_generator, model_kwargs

    try:
        model, source = load_generator(job, checkpoint, "cpu")
        log.info("power-sweep infer: generator from %s", source)
        return model
    except UserError:
        if checkpoint:
            raise
        log.warning("power-sweep infer: no weights for %s; timing an untrained model (its IS "
                    "only shows that capping does not change outputs)", job.model.name)
        return build_generator(job.model.name, model_kwargs(job)).eval()


class TorchWorkload:
    """The job's train step or inference pass, one replica per device, timed synchronously.

    Args:
        job: The job (loss weights, learning rate, recognizers).
        kind: ``"train"`` or ``"infer"``.
        model: The generator (copied to every device).
        devices: ``["cpu"]`` or ``["cuda:0", ...]``.
        lr: The LR batch every step uses.
        hr: The matching HR batch (training targets).
        is_pairs: ``(lr, hr)`` of the faces scored by :meth:`quality`, or None.
    """

    def __init__(self, job: JobConfig, kind: str, model: Any, devices: Sequence[str],
                 lr: Any, hr: Any, is_pairs: tuple[Any, Any] | None) -> None:
        import torch

        self.kind = kind
        self.job = job
        self.devices = list(devices)
        self.replicas = []
        self._cuda = any(d.startswith("cuda") for d in self.devices)
        self._is_pairs = is_pairs
        self._rec = None
        self._hr_emb = None
        for d in self.devices:
            m = copy.deepcopy(model).to(d)
            rep: dict[str, Any] = {"model": m, "lr": lr.to(d), "hr": hr.to(d), "device": d}
            if kind == "train":
                m.train()
                rep["opt"] = torch.optim.AdamW([p for p in m.parameters() if p.requires_grad],
                                               lr=job.train.lr, betas=(0.9, 0.99))
                rep["loss"] = self._loss(d)
            else:
                m.eval()
            self.replicas.append(rep)

    def _loss(self, device: str):
        from kernels.losses import CombinedLoss

        lo = self.job.loss
        rec = None
        if lo.identity or lo.feature:
            from harness.recognizers import load_recognizer

            rec = load_recognizer(lo.recognizer, device=device)
        disc = None
        if lo.adversarial:
            from kernels.discriminator_arch import VGGStyleDiscriminator

            disc = VGGStyleDiscriminator().to(device)
        return CombinedLoss(pixel_weight=lo.pixel, identity_weight=lo.identity,
                            feature_weight=lo.feature, adversarial_weight=lo.adversarial,
                            recognizer=rec, discriminator=disc, pixel_kind=lo.pixel_kind,
                            feature_layers=lo.feature_layers)

    def _sync(self) -> None:
        if self._cuda:
            import torch

            for d in self.devices:
                torch.cuda.synchronize(d)

    def step(self) -> tuple[int, float]:
        """One step on every replica (issued back to back, then synchronised)."""
        import torch

        t0 = time.perf_counter()
        for rep in self.replicas:
            if self.kind == "train":
                sr = rep["model"](rep["lr"])
                loss, _terms = rep["loss"](sr.float(), rep["hr"])
                rep["opt"].zero_grad(set_to_none=True)
                loss.backward()
                rep["opt"].step()
            else:
                with torch.no_grad():
                    rep["model"](rep["lr"])
        self._sync()
        return int(rep["lr"].shape[0]), time.perf_counter() - t0

    def quality(self) -> float | None:
        """Mean IS of the fixed held-out faces, SR on the first device, 8-bit quantised."""
        if self._is_pairs is None:
            return None
        import torch

        from harness.infer import super_resolve
        from harness.recognizers import load_recognizer

        rep = self.replicas[0]
        dev = rep["device"]
        lr, hr = self._is_pairs
        if self._rec is None:
            self._rec = load_recognizer(self.job.eval.recognizer, device=dev)
            # The HR faces never change: embed them once (IS = cosine of SR vs HR embeddings,
            # as in harness.recognizers.identity_similarity).
            with torch.no_grad():
                self._hr_emb = self._rec.embed(hr.to(dev)).detach().to("cpu", torch.float64)
        sr = super_resolve(rep["model"], lr.to(dev)).cpu()
        sr_q = torch.round(sr * 255.0) / 255.0  # as saved 8-bit PNGs would be
        with torch.no_grad():
            e_sr = self._rec.embed(sr_q.to(dev)).detach().to("cpu", torch.float64)
        cos = (e_sr * self._hr_emb).sum(1) / (e_sr.norm(dim=1) * self._hr_emb.norm(dim=1)
                                              ).clamp_min(1e-12)
        return float(cos.mean())


# --------------------------------------------------------------------------- planning


def _read_meta(out: Path) -> dict[str, Any]:
    import json

    try:
        return json.loads((out / "sweep_meta.json").read_text())
    except (OSError, ValueError):
        return {}


def _load_sweep_dir(path: str) -> tuple[dict[str, Any], dict[str, Any]]:
    from power.sweep import load_sweep

    try:
        doc = load_sweep(path)
    except ValueError as exc:
        raise UserError(f"--plan-from: {exc}") from None
    folder = Path(path) if Path(path).is_dir() else Path(path).parent
    return doc, _read_meta(folder)


def _pick(values: Sequence[Any], i: int, default: Any) -> Any:
    if not values:
        return default
    return values[i] if i < len(values) else values[-1]


def make_plan(sweeps: Sequence[tuple[dict[str, Any], dict[str, Any]]], job: JobConfig | None,
              args: argparse.Namespace):
    """Plan from one ``(sweep.json, sweep_meta.json)`` per node type with ``args``' limits."""
    from power.planner import InfeasibleError, NodeType, curve_from_points, plan_cluster

    p = job.power if job is not None else None
    budget = args.budget_w if args.budget_w is not None else (p.budget_w if p else 3000.0)
    headroom = args.headroom_w if args.headroom_w is not None else (p.headroom_w if p else 0.0)
    switch = args.switch_w if args.switch_w is not None else (p.switch_w if p else 0.0)
    types = []
    for i, (doc, meta) in enumerate(sweeps):
        if not doc["points"]:
            raise UserError("plan: the sweep has no points yet")
        unit = doc["points"][0]["unit"]
        basis = args.basis or ("cap" if unit == "W" else "avg")
        try:
            curve = curve_from_points(doc["points"], basis=basis)
        except ValueError as exc:
            raise UserError(f"--basis: {exc}") from None
        nodes = _pick(args.plan_nodes, i, job.launch.nodes if job else 1)
        gpn = _pick(args.plan_gpus_per_node, i,
                    (job.launch.gpus_per_node if job and job.launch.gpus_per_node else
                     int(meta.get("spec", {}).get("gpus", 1))))
        other = _pick(args.node_other_w, i, meta.get(
            "node_other_w", (p.cpu_tdp_w + p.node_overhead_w) if p else 0.0))
        if nodes < 1 or gpn < 1 or other < 0:
            raise UserError("--plan-nodes and --plan-gpus-per-node must be >= 1, "
                            "--node-other-w >= 0")
        types.append(NodeType(name=doc.get("gpu", f"type{i}"), curve=curve, max_nodes=nodes,
                              gpus_per_node=gpn, node_other_w=float(other),
                              gpu_idle_w=float(meta.get("gpu_idle_w", 0.0))))
    objective = args.objective or ("sync" if sweeps[0][0].get("workload") == "train" else "sum")
    try:
        return plan_cluster(types, budget_w=budget, headroom_w=headroom, switch_w=switch,
                            objective=objective, unit=sweeps[0][0]["points"][0]["unit"])
    except InfeasibleError as exc:
        raise UserError(f"plan: {exc}") from None
    except ValueError as exc:
        raise UserError(f"plan: {exc}") from None


# --------------------------------------------------------------------------- output


def _print_table(doc: dict[str, Any], out: Path) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"power sweep: {doc['job']} ({doc['workload']}) on {doc['gpu']}"
              + (" [simulated]" if doc["simulated"] else ""))
    for col in ("setting", "images/s/GPU", "avg W/GPU", "peak W/GPU", "node W", "J/image",
                "images/s/W", "IS", "Pareto"):
        t.add_column(col, justify="right")
    for p in doc["points"]:
        t.add_row(f"{p['setting']:g} {p['unit']}", f"{p['images_per_s']:.1f}",
                  f"{p['avg_gpu_w']:.1f}", f"{p['peak_gpu_w']:.1f}", f"{p['avg_node_w']:.0f}",
                  f"{p['j_per_image']:.4f}", f"{p['images_per_s_per_w']:.3f}",
                  "-" if p["is"] is None else f"{p['is']:.4f}", "*" if p["pareto"] else "")
    c = Console()
    c.print(t)
    c.print(f"results: {out / 'sweep.json'}, {out / 'sweep.csv'}")


def _print_plan(plan: Any, quiet: bool = False) -> None:
    from rich.console import Console
    from rich.table import Table

    c = Console()
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
    """``python -m harness.cli_sweep`` (same as ``harness power-sweep``)."""
    parser = argparse.ArgumentParser(prog="harness power-sweep",
                                     description=__doc__.split("\n")[0])
    add_arguments(parser)
    args = parser.parse_args(argv)
    setup_logging()
    return run_guarded(lambda: run(args), prog="harness power-sweep")


if __name__ == "__main__":
    sys.exit(main())
