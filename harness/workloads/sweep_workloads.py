"""A job's power sweep: its GPUs, its workload at every setting, and the cluster plan.

The measuring loop, the sweep files and the planner live in ``power/`` (:mod:`power.sweep`,
:mod:`power.planner`); this module supplies what only the harness knows: the job's GPUs (through
:func:`power.session.open_gpus`), its training step or inference pass as a timed
workload (:class:`TorchWorkload`), and the plan's limits from the job. The command line is
:mod:`harness.commands.power_sweep`.
"""
from __future__ import annotations

import copy
import dataclasses
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from fileio.user_error import UserError
from harness.config import DataConfig, JobConfig, LaunchConfig, LossConfig, ModelConfig, TrainConfig
from power.config import PowerConfig

if TYPE_CHECKING:
    import torch

    from harness.scoring.recognizers.base import Recognizer

log = logging.getLogger(__name__)

IS_FACES = 16
"""Held-out faces scored at every setting of an inference sweep."""

#: Called after every measured point with (point, points done, points in all).
PointCallback = Callable[[dict[str, Any], int, int], None]


def _from_args(cls: type, args: Any) -> Any:
    values = {}
    for f in dataclasses.fields(cls):
        v = getattr(args, f.name)
        values[f.name] = tuple(v) if isinstance(v, list) else v
    return cls(**values)


@dataclass(frozen=True, kw_only=True, slots=True)
class SweepOptions:
    """What one power sweep measures (the options of ``harness power-sweep``)."""

    workload: Literal["train", "infer"] = "train"
    """What runs at each setting: a training step, or an inference pass scored for IS."""
    limits: str | None = None
    """Power limits in W (``A:B:STEP`` or ``a,b,c``); None with no ``clocks``: 9 points over the
    GPU's range."""
    clocks: str | None = None
    """Locked maximum graphics clocks in MHz instead of power limits."""
    warmup_steps: int = 10
    """Unmeasured steps after each change."""
    warmup_s: float = 1.0
    """And at least this many seconds of warm-up."""
    steps: int = 50
    """Measured steps per setting."""
    batch_size: int | None = None
    """Images per GPU per step (None: train.batch_size / ranks, or infer.batch_size)."""
    checkpoint: str | None = None
    """Generator weights for the infer workload."""
    out: str | None = None
    """Results folder (None: ``<run_dir>/<job>-sweep-<time>``)."""
    resume: str | None = None
    """A sweep folder to resume."""
    compute: Literal["model", "real"] = "model"
    """Simulated GPUs: model time only, or also run the workload on this machine."""
    sim_images_per_s: float | None = None
    """One simulated GPU's images/s at max clock (None: the profile's nominal figure)."""
    sim_clock: Literal["sim", "real"] = "sim"
    """Simulated GPUs: simulated time or wall time."""
    sim_state: str | None = None
    """Persist the simulated GPUs' settings to this JSON file."""

    def __post_init__(self) -> None:
        if self.limits and self.clocks:
            raise UserError("--limits and --clocks: give one of them")
        if not self.warmup_s >= 0:
            raise UserError(f"--warmup-s: must be >= 0, got {self.warmup_s}")
        for name, least in (("warmup_steps", 0), ("steps", 1), ("batch_size", 1)):
            v = getattr(self, name)
            if v is not None and v < least:
                raise UserError(f"--{name.replace('_', '-')}: must be >= {least}, got {v}")

    @classmethod
    def from_args(cls, args: Any) -> SweepOptions:
        """The options of a parsed ``harness power-sweep`` command line."""
        return _from_args(cls, args)


@dataclass(frozen=True, kw_only=True, slots=True)
class PlanOptions:
    """How a cluster plan is made from sweeps.

    How a cluster plan is made from sweeps (``harness power-sweep``'s planning options);
    None and empty values fall back to the job (``power.*``, ``launch.*``) or the sweep.
    """

    plan_nodes: tuple[int, ...] = ()
    """Nodes available, one per node type."""
    plan_gpus_per_node: tuple[int, ...] = ()
    """GPUs per node, one per node type."""
    node_other_w: tuple[float, ...] = ()
    """Power of a node besides its GPUs, one per node type."""
    budget_w: float | None = None
    """Cluster budget (None: ``power.budget_w``, else the default budget)."""
    headroom_w: float | None = None
    """Margin kept below the budget (None: ``power.headroom_w``)."""
    switch_w: float | None = None
    """Switch power, counted once (None: ``power.switch_w``)."""
    objective: Literal["sum", "sync"] | None = None
    """sum: independent GPUs; sync: data parallel at the slowest GPU's pace (None: by workload)."""
    basis: Literal["cap", "avg", "peak"] | None = None
    """GPU power counted against the budget (None: the cap for limits, the average for clocks)."""

    @classmethod
    def from_args(cls, args: Any) -> PlanOptions:
        """The planning options of a parsed ``harness power-sweep`` command line."""
        return _from_args(cls, args)


def check_sweep_folder(out: Path) -> None:
    """Refuse an ``--out`` that is a file or a folder of other things.

    A sweep resumes in a folder holding its ``sweep.json`` and starts in a new or empty one,
    never mixing its files with others' (a training run's, a team's).

    Raises:
        UserError: one line naming the folder and what is in the way.
    """
    from fileio.locks import LOCK_NAME

    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out}: is a file, not a folder; give a new folder for the "
                        "sweep (it is created)")
    if not out.is_dir() or (out / "sweep.json").is_file():
        return
    others = sorted(p.name for p in out.iterdir() if p.name != LOCK_NAME)
    if others:
        shown = ", ".join(others[:5]) + (", ..." if len(others) > 5 else "")
        raise UserError(f"--out {out}: holds other files ({shown}) and no sweep.json to "
                        "resume; give a new or empty folder for the sweep")


def sweep(job: JobConfig, options: SweepOptions, on_point: PointCallback | None = None
          ) -> tuple[dict[str, Any], Path]:
    """Run (or resume) the sweep described by ``options``.

    Returns:
        (the ``sweep.json`` object, its folder); ``on_point`` hears of every point measured.
    """
    from power.backends import resolve_backend
    from power.clock import MonotonicClock, SimClock
    from power.node import ExternalMeter, NodePower
    from power.sweep import (
        SweepSpec,
        check_settings,
        default_settings,
        parse_range,
        run_sweep,
    )

    job = dataclasses.replace(job, power=resolve_backend(job.power))
    p = job.power
    mode = "clocks" if options.clocks else "power_limit"
    if p.backend == "replay":
        raise UserError("power.backend: replay cannot apply settings; use simulated or nvml "
                        "for power-sweep")
    simulated = p.backend == "simulated"
    clock = SimClock() if simulated and options.sim_clock == "sim" else MonotonicClock()
    gpus = _open_gpus(job.power, options, clock)
    text = options.clocks or options.limits
    try:
        settings = (parse_range(text, option="--clocks" if options.clocks else "--limits")
                    if text else default_settings(gpus, mode))
        check_settings(settings, gpus, mode)
    except ValueError as exc:
        raise UserError(str(exc)) from None

    batch, extra, workload = _workload(job, options, gpus, simulated)
    spec = SweepSpec(job=job.name, workload=options.workload, mode=mode, gpu=gpus[0].get_name(),
                     gpus=len(gpus), simulated=simulated, batch_size=batch,
                     warmup_steps=options.warmup_steps, steps=options.steps,
                     warmup_s=options.warmup_s,
                     extra=tuple(sorted(extra.items())))
    out = Path(options.resume or options.out or Path(job.launch.run_dir)
               / f"{job.name}-sweep-{time.strftime('%Y%m%d-%H%M%S')}")
    from harness.outputs.write_checks import check_not_input, claim_output

    def check() -> None:
        check_not_input(out, [options.sim_state, options.checkpoint], what="--out")
        if options.resume and not (out / "sweep.json").is_file():
            raise UserError(f"--resume {out}: no sweep.json there")
        check_sweep_folder(out)

    claim_output(out, check)  # this sweep is the folder's one writer
    meter = ExternalMeter(p.meter_command, clock=clock) if p.meter_command else None
    node = NodePower(cpu_tdp_w=p.cpu_tdp_w, overhead_w=p.node_overhead_w, meter=meter,
                     clock=clock)
    idle = (float(gpus[0].profile.static_w) if simulated
            else min(g.get_power_usage_mw() for g in gpus) / 1000.0)
    lo_w, hi_w = (v / 1000.0 for v in gpus[0].get_power_limit_constraints_mw())
    meta = {"gpu_idle_w": idle, "power_limit_range_w": [lo_w, hi_w],
            "clock_range_mhz": list(gpus[0].get_clock_range_mhz()),
            "node_other_w": p.cpu_tdp_w + p.node_overhead_w,
            "compute": options.compute if simulated else "real"}

    def point_done(point: dict[str, Any], done: int, total: int) -> None:
        log.debug("[%d/%d] %g %s: %.1f images/s/GPU, %.1f W avg, %.1f W peak%s", done, total,
                 point["setting"], point["unit"], point["images_per_s"], point["avg_gpu_w"],
                 point["peak_gpu_w"], "" if point["is"] is None else f", IS {point['is']:.4f}")
        if on_point is not None:
            on_point(point, done, total)

    t0 = time.perf_counter()
    from power.sweep import SweepMismatchError

    try:
        doc = run_sweep(gpus, workload, spec, settings, out, clock=clock, node=node,
                        sample_hz=p.sample_hz, meta=meta, on_point=point_done)
    except (SweepMismatchError, ValueError) as exc:  # a damaged sweep.json to resume, too
        raise UserError(str(exc)) from None
    log.info("sweep of %d point(s) in %.1f s -> %s", len(doc["points"]),
             time.perf_counter() - t0, out)
    return doc, out


def _workload(job: JobConfig, options: SweepOptions, gpus: list, simulated: bool
              ) -> tuple[int, dict[str, str], Any]:
    """(images per GPU per step, extra spec fields, the workload) for the sweep's GPUs."""
    from power.sweep import SIM_LOADS, SIM_NOMINAL_IMAGES_PER_S, ModelPacedWorkload

    p = job.power
    batch = options.batch_size or (max(1, job.train.batch_size // job.launch.world_size)
                                if options.workload == "train" else job.infer.batch_size)
    extra: dict[str, str] = {}

    def torch_workload(devices: Sequence[str]) -> TorchWorkload:
        return _torch_workload(options, devices, batch, train=job.train, data=job.data,
                               model_cfg=job.model, loss=job.loss,
                               recognizer=job.eval.recognizer,
                               infer_checkpoint=job.infer.checkpoint)

    if options.workload == "infer":
        extra["checkpoint"] = str(options.checkpoint or job.infer.checkpoint or "")
    if simulated:
        base = options.sim_images_per_s or SIM_NOMINAL_IMAGES_PER_S.get(p.sim_profile, 1000.0)
        if not base > 0:
            raise UserError(f"--sim-images-per-s: must be > 0, got {base}")
        extra.update(sim_images_per_s=f"{base:g}", sim_load=f"{SIM_LOADS[options.workload]}")
        workload: ModelPacedWorkload | TorchWorkload
        inner = None
        if options.compute == "real" or options.workload == "infer":
            inner = torch_workload(["cpu"])
        workload = ModelPacedWorkload(gpus, kind=options.workload, batch_size=batch,
                                      images_per_s_at_max=base, inner=inner,
                                      run_inner=options.compute == "real")
    else:
        workload = torch_workload([f"cuda:{i}" for i in range(len(gpus))])
    return batch, extra, workload


def _open_gpus(power: PowerConfig, options: SweepOptions, clock: Any) -> list:
    from power.backends import open_gpus
    from power.simulated import constant_load
    from power.sweep import SIM_LOADS

    activity, memory_bound = SIM_LOADS[options.workload]
    return open_gpus(power, clock, loads=constant_load(activity, memory_bound),
                     state_path=options.sim_state)


def _torch_workload(options: SweepOptions, devices: Sequence[str], batch: int, *,
                    train: TrainConfig, data: DataConfig, model_cfg: ModelConfig,
                    loss: LossConfig, recognizer: str,
                    infer_checkpoint: str | None) -> TorchWorkload:
    import torch

    from harness.data.pairs import load_pairs, make_batch
    from harness.model.generators import make_generator

    torch.manual_seed(train.seed)
    kind = options.workload
    source = data.train if kind == "train" else data.val
    pairs = load_pairs(source, data.lr_kernel)
    idx = [i % len(pairs) for i in range(batch)]
    lr, hr = make_batch(pairs, idx, None, np.random.default_rng(0))
    if kind == "train":
        model, _ = make_generator(model_cfg, "train",
                                  untrainable_hint="; sweep it with --workload infer")
    else:
        model = _infer_model(model_cfg, options.checkpoint, infer_checkpoint)
    is_pairs = None
    if kind == "infer":
        val = load_pairs(data.val, data.lr_kernel)
        n = min(IS_FACES, len(val))
        is_pairs = make_batch(val, list(range(n)), None, np.random.default_rng(0))
    return TorchWorkload(kind, model, devices, lr, hr, is_pairs, learning_rate=train.lr,
                         loss=loss, recognizer=recognizer)


def _infer_model(cfg: ModelConfig, checkpoint: str | None, infer_checkpoint: str | None):
    from harness.model.generators import make_generator

    try:
        model, source = make_generator(cfg, "infer",
                                       checkpoint=checkpoint or infer_checkpoint or None)
        log.info("power-sweep infer: generator from %s", source)
        return model
    except UserError:
        if checkpoint:
            raise
        log.warning("power-sweep infer: no weights for %s; timing an untrained model (its IS "
                    "only shows that capping does not change outputs)", cfg.name)
        return make_generator(cfg, "train")[0].eval()


class TorchWorkload:
    """The job's train step or inference pass, one replica per device, timed synchronously.

    Args:
        kind: ``"train"`` or ``"infer"``.
        model: The generator (copied to every device).
        devices: ``["cpu"]`` or ``["cuda:0", ...]``.
        lr: The LR batch every step uses.
        hr: The matching HR batch (training targets).
        is_pairs: ``(lr, hr)`` of the faces scored by :meth:`quality`, or None.
        learning_rate: The optimiser's rate (``train.lr``).
        loss: The ``loss`` section (the training step's loss).
        recognizer: What :meth:`quality` scores IS with (``eval.recognizer``).
    """

    def __init__(self, kind: str, model: Any, devices: Sequence[str],
                 lr: Any, hr: Any, is_pairs: tuple[Any, Any] | None, *,
                 learning_rate: float, loss: LossConfig, recognizer: str) -> None:
        import torch

        self.kind = kind
        self.loss_cfg, self.recognizer = loss, recognizer
        self.devices = list(devices)
        self.replicas = []
        self._cuda = any(d.startswith("cuda") for d in self.devices)
        self._is_pairs = is_pairs
        self._rec: Recognizer | None = None
        self._hr_emb: torch.Tensor | None = None
        for d in self.devices:
            m = copy.deepcopy(model).to(d)
            rep: dict[str, Any] = {"model": m, "lr": lr.to(d), "hr": hr.to(d), "device": d}
            if kind == "train":
                m.train()
                rep["opt"] = torch.optim.AdamW([p for p in m.parameters() if p.requires_grad],
                                               lr=learning_rate, betas=(0.9, 0.99))
                rep["loss"] = self._loss(d)
            else:
                m.eval()
            self.replicas.append(rep)

    def _loss(self, device: str) -> Any:
        from harness.training.engine import loss_recognizer, make_loss

        return make_loss(self.loss_cfg, device, loss_recognizer(self.loss_cfg, device))[0]

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

        from harness.data.imageio import quantize_8bit
        from harness.model.generators import super_resolve
        from harness.scoring.identity import cosines
        from harness.scoring.recognizers import load_recognizer

        rep = self.replicas[0]
        dev = rep["device"]
        lr, hr = self._is_pairs
        if self._rec is None:
            self._rec = load_recognizer(self.recognizer, device=dev)
            with torch.no_grad():  # the HR faces never change: embed them once
                self._hr_emb = self._rec.embed(hr.to(dev)).detach()
        sr_q = quantize_8bit(super_resolve(rep["model"], lr.to(dev)).cpu())
        with torch.no_grad():
            e_sr = self._rec.embed(sr_q.to(dev)).detach()
        return float(cosines(e_sr, self._hr_emb).mean())


def read_meta(out: Path) -> dict[str, Any]:
    """Read a sweep folder's ``sweep_meta.json`` ({} when missing or unreadable)."""
    import json

    try:
        return json.loads((out / "sweep_meta.json").read_text())
    except (OSError, ValueError):
        return {}


def load_sweep_dir(path: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Load a sweep file or folder and its meta (``--plan-from``)."""
    from power.sweep import load_sweep

    try:
        doc = load_sweep(path)
    except ValueError as exc:
        raise UserError(f"--plan-from: {exc}") from None
    folder = Path(path) if Path(path).is_dir() else Path(path).parent
    return doc, read_meta(folder)


def _pick(values: Sequence[Any], i: int, default: Any) -> Any:
    if not values:
        return default
    return values[i] if i < len(values) else values[-1]


def make_plan(sweeps: Sequence[tuple[dict[str, Any], dict[str, Any]]],
              power: PowerConfig | None, launch: LaunchConfig | None, options: PlanOptions):
    """Plan from one ``(sweep.json, sweep_meta.json)`` per node type under ``options``.

    ``power`` and ``launch`` are the job's sections (None without ``--job``: the power
    section's defaults, one node, the sweep's GPUs).
    """
    from power.planner import (
        InfeasibleError,
        NodeType,
        NotWarmedUpError,
        curve_from_points,
        plan_cluster,
    )

    # Without --job the power section's defaults apply (not 0 W of headroom), and are said.
    p = power if power is not None else PowerConfig()
    budget = options.budget_w if options.budget_w is not None else p.budget_w
    headroom = options.headroom_w if options.headroom_w is not None else p.headroom_w
    switch = options.switch_w if options.switch_w is not None else p.switch_w
    if power is None:
        assumed = [f"{what} {value:g} W" for what, value, given in (
            ("budget", budget, options.budget_w), ("headroom", headroom, options.headroom_w),
            ("switch", switch, options.switch_w)) if given is None]
        if assumed:
            log.warning("plan: no --job: %s (power.*'s defaults; --job, --budget-w, "
                        "--headroom-w or --switch-w to change)", ", ".join(assumed))
    types = []
    for i, (doc, meta) in enumerate(sweeps):
        if not doc["points"]:
            raise UserError("plan: the sweep has no points yet")
        unit = doc["points"][0]["unit"]
        basis = options.basis or ("cap" if unit == "W" else "avg")
        try:
            curve = curve_from_points(doc["points"], basis=basis)
        except NotWarmedUpError as exc:
            raise UserError(f"plan: {exc}") from None
        except ValueError as exc:
            raise UserError(f"--basis: {exc}") from None
        nodes = _pick(options.plan_nodes, i, launch.nodes if launch else 1)
        gpn = _pick(options.plan_gpus_per_node, i,
                    (launch.gpus_per_node if launch and launch.gpus_per_node else
                     int(meta.get("spec", {}).get("gpus", 1))))
        other = _pick(options.node_other_w, i, meta.get(
            "node_other_w", p.cpu_tdp_w + p.node_overhead_w))
        if nodes < 1 or gpn < 1 or other < 0:
            raise UserError("--plan-nodes and --plan-gpus-per-node must be >= 1, "
                            "--node-other-w >= 0")
        types.append(NodeType(name=doc.get("gpu", f"type{i}"), curve=curve, max_nodes=nodes,
                              gpus_per_node=gpn, node_other_w=float(other),
                              gpu_idle_w=float(meta.get("gpu_idle_w", 0.0))))
    objective = options.objective or ("sync" if sweeps[0][0].get("workload") == "train" else "sum")
    try:
        return plan_cluster(types, budget_w=budget, headroom_w=headroom, switch_w=switch,
                            objective=objective, unit=sweeps[0][0]["points"][0]["unit"])
    except InfeasibleError as exc:
        raise UserError(f"plan: {exc}") from None
    except ValueError as exc:
        raise UserError(f"plan: {exc}") from None


