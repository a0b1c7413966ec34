"""Job specifications: the one place where YAML job files are read and validated.

A job file (``jobs/*.yaml``) has one mapping per section — ``data``, ``model``, ``loss``,
``train``, ``infer``, ``eval``, ``power``, ``report``, ``launch`` — plus ``name`` and
``description``. Each section is a frozen dataclass below; every field has a default, so a job
only names what it changes. Loading rejects unknown keys (with a suggestion), wrong types and
out-of-range values with a single line naming the file, the key path and what was expected::

    jobs/x.yaml: train.bacth_size: unknown key (did you mean batch_size?)

Command-line overrides (``--set train.lr=2e-4``) are applied to the parsed YAML before
validation, so they pass through exactly the same checks.

Hostile input is cheap to refuse: a job file over :data:`MAX_JOB_BYTES`, YAML nested deeper than
:data:`MAX_YAML_DEPTH` or holding more than :data:`MAX_YAML_NODES` values once every alias is
expanded (a "billion laughs" file), and integers longer than :data:`MAX_INT_DIGITS` are refused
while parsing, and error messages quote at most :data:`EXCERPT_CHARS` characters of a value.

Typical use::

    job = load_job("jobs/demo.yaml", overrides=["train.steps=100"])
    job.train.batch_size
"""
from __future__ import annotations

import dataclasses
import difflib
import functools
import math
import re
import reprlib
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union

from fileio.user_error import UserError
from power.config import FieldError, PowerConfig
from power.config import check as _check

#: Seconds a wait on another rank may last (``train.collective_timeout_s``'s default; the
#: stall watchdog, :mod:`harness.cluster.watchdog`, falls back to it too).
DEFAULT_TIMEOUT_S = 30.0
#: The bounds of that wait, for the job key and ``$HARNESS_COLLECTIVE_TIMEOUT_S`` alike.
MIN_TIMEOUT_S, MAX_TIMEOUT_S = 1.0, 3600.0
#: LR degradation names ``data.lr_kernel`` accepts, in the order
#: :data:`harness.data.degradation.DEGRADATIONS` defines them (a test keeps the two equal).
DEGRADATION_NAMES: tuple[str, ...] = (
    "pil_bicubic", "pil_bilinear", "pil_lanczos", "cv2_cubic", "cv2_area", "nearest",
    "matlab_bicubic",
)
#: Metric names ``eval.metrics`` accepts, in record order (equal to
#: :data:`harness.scoring.ALL_METRICS`; a test keeps the two equal).
METRIC_NAMES: tuple[str, ...] = ("is", "psnr", "ssim", "psnr_y", "ssim_y", "rmse", "niqe")

#: Data sources that name the embedded ASC19 validation set (see ``harness.data.pairs``).
EMBEDDED_SOURCES = ("embedded:train", "embedded:heldout", "embedded:all")

#: Largest job file read, in bytes (shipped jobs are 1-2 KiB).
MAX_JOB_BYTES = 1 << 20
#: Longest ``--set KEY=VALUE`` text, in characters.
MAX_OVERRIDE_CHARS = 64 << 10
#: Most YAML values (scalars, lists, mappings) in one document, counting every alias as a full
#: copy of what it names, and every KiB of a long string as one more value.
MAX_YAML_NODES = 20_000
#: Deepest nesting of YAML lists and mappings.
MAX_YAML_DEPTH = 32
#: Longest integer literal (``int()`` of a huge literal is slow, and refused by Python 3.11+).
MAX_INT_DIGITS = 64
#: Most characters of a value quoted in an error message.
EXCERPT_CHARS = 60
#: Sizes beyond any cluster (the largest have ~160,000 nodes): a typo, refused in one line.
MAX_NODES = 200_000
#: Most ranks (or GPUs) on one node.
MAX_PER_NODE = 1024
#: Most ranks of one job.
MAX_WORLD_SIZE = 1_000_000
#: Longest job name (it names run folders and files).
MAX_NAME_CHARS = 100

#: A POSIX environment variable name (what ``export NAME=...`` accepts).
ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_HOST = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]*")
_SLURM_NAME = re.compile(r"[A-Za-z0-9_.+-]+")
_SLURM_NAMES = re.compile(r"[A-Za-z0-9_.+-]+(,[A-Za-z0-9_.+-]+)*")

_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxdict, _REPR.maxlist, _REPR.maxtuple = 2, 4, 6, 6
_REPR.maxset = _REPR.maxfrozenset = _REPR.maxdeque = _REPR.maxarray = 6
_REPR.maxstring, _REPR.maxlong, _REPR.maxother = EXCERPT_CHARS, 40, EXCERPT_CHARS


def excerpt(value: Any, limit: int = EXCERPT_CHARS) -> str:
    """A one-line ``repr`` of ``value`` cut to ``limit`` characters (ending in '…' when cut).

    The cost is bounded whatever the size of ``value``: error messages quote this instead of
    ``repr(value)``, which for an alias-expanded YAML value can be gigabytes.
    """
    if isinstance(value, str):
        text = repr(value[: limit + 1])
    else:
        try:
            text = _REPR.repr(value)
        except Exception:  # noqa: BLE001 - a repr that fails must not hide the real error
            text = f"<{type(value).__name__}>"
    text = _CONTROL.sub(" ", text)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _clip(text: str, limit: int = EXCERPT_CHARS) -> str:
    """``text`` itself (not its repr), cut to ``limit`` characters."""
    text = _CONTROL.sub("?", text)
    return text if len(text) <= limit else text[: limit - 1] + "…"


@dataclass(frozen=True, kw_only=True, slots=True)
class AugmentConfig:
    """Training-time augmentation of (LR, HR) pairs."""

    hflip: bool = True
    """Mirror pairs left-right with probability 0.5."""
    shift_px: int = 0
    """Largest random shift of the pair, in LR pixels (the HR shifts by 4x that)."""
    color_jitter: float = 0.0
    """Largest relative change of brightness/contrast/saturation (0 disables)."""
    rotate_deg: float = 0.0
    """Largest rotation of the HR face about its centre, in degrees (0 disables)."""
    zoom: float = 0.0
    """Largest relative zoom of the HR face, e.g. 0.1 for 0.9x..1.1x (0 disables). Rotated or
    zoomed pairs also get a random sub-pixel offset, and their LR is made again from the warped
    HR with ``data.lr_kernel``, so every warped pair is a new, exactly consistent pair."""

    def __post_init__(self) -> None:
        _check(0 <= self.shift_px <= 4, "shift_px", "must be between 0 and 4")
        _check(0.0 <= self.color_jitter <= 0.5, "color_jitter", "must be between 0 and 0.5")
        _check(0.0 <= self.rotate_deg <= 30.0, "rotate_deg", "must be between 0 and 30")
        _check(0.0 <= self.zoom <= 0.3, "zoom", "must be between 0 and 0.3")


@dataclass(frozen=True, kw_only=True, slots=True)
class DataConfig:
    """Where training and validation pairs come from."""

    train: str = "embedded:train"
    """Training pairs: ``embedded:train`` (240 pairs of the vendored ASC19 set),
    ``embedded:all``, a folder packed by ``harness prepare`` (has ``index.json``), or a folder
    holding ``val_HR``/``val_LR``-style ``HR``/``LR`` sub-folders."""
    val: str = "embedded:heldout"
    """Held-out pairs used for validation IS and checkpoint selection (same forms as ``train``)."""
    lr_kernel: str = "matlab_bicubic"
    """Downsampling kernel used when LR images must be made from HR ones."""
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    """Augmentation of training pairs."""
    workers: int = 0
    """Data-loader worker processes per rank (0 = load in the training process)."""

    def __post_init__(self) -> None:
        _check(bool(self.train), "train", "must not be empty")
        _check(bool(self.val), "val", "must not be empty")
        _check(0 <= self.workers <= 64, "workers", "must be between 0 and 64")
        _check(self.lr_kernel in DEGRADATION_NAMES, "lr_kernel",
               f"unknown degradation (expected one of {', '.join(DEGRADATION_NAMES)})")


@dataclass(frozen=True, kw_only=True, slots=True)
class ModelConfig:
    """The generator network (see ``kernels.MODELS``)."""

    name: str = "srresnet"
    """Generator name: ``bicubic``, ``srresnet`` or ``rrdb``."""
    scale: int = 4
    """Upscaling factor (ASC19: 4)."""
    args: dict[str, float] = field(default_factory=dict)
    """Keyword arguments of the generator, e.g. ``{num_feat: 64, num_blocks: 16}``."""
    init_from: str = ""
    """Start from these generator weights instead of random ones (fine-tuning): a checkpoint
    file (relative paths are taken from the project root if not found from the working
    directory) or ``shipped`` for the weights in ``kernels/weights`` for this model. Only the
    generator weights are taken (optimizer, step and schedule start fresh); ``--resume`` wins."""

    def __post_init__(self) -> None:
        from kernels import MODELS  # the owner of the model names

        _check(self.name in MODELS, "name", f"expected one of {', '.join(MODELS)}")
        _check(self.scale in (2, 4), "scale", "must be 2 or 4")


@dataclass(frozen=True, kw_only=True, slots=True)
class LossConfig:
    """Weights of the loss terms; a zero weight switches a term off."""

    pixel: float = 1.0
    """Weight of the pixel loss."""
    pixel_kind: Literal["l1", "charbonnier"] = "l1"
    """Pixel loss form."""
    identity: float = 0.0
    """Weight of the identity loss, 1 - cos(embed(SR), embed(HR))."""
    feature: float = 0.0
    """Weight of the feature loss on the recognizer's intermediate activations."""
    feature_layers: tuple[str, ...] = ()
    """Recognizer layers used by the feature loss."""
    adversarial: float = 0.0
    """Weight of the relativistic adversarial loss (0 = no discriminator)."""
    recognizer: str = "facenet"
    """Recognizer used by the identity and feature losses (must be differentiable), or several
    with a weight each, ``facenet@0.7,sphere20a:PATH@0.3`` (feature layers ``label/layer``;
    a bare layer name is the first recognizer's)."""

    def __post_init__(self) -> None:
        for name in ("pixel", "identity", "feature", "adversarial"):
            _check(getattr(self, name) >= 0, name, "must be >= 0")
        _check(self.pixel + self.identity + self.feature + self.adversarial > 0, "pixel",
               "at least one loss weight must be > 0")
        _check(self.feature == 0 or bool(self.feature_layers), "feature_layers",
               "must name at least one layer when loss.feature > 0")


@dataclass(frozen=True, kw_only=True, slots=True)
class TrainConfig:
    """The training loop."""

    steps: int = 1000
    """Optimizer steps to run."""
    batch_size: int = 16
    """Global batch size, split evenly across ranks."""
    lr: float = 2e-4
    """Peak learning rate (Adam)."""
    lr_schedule: Literal["constant", "cosine", "step"] = "cosine"
    """Learning-rate schedule after warm-up."""
    warmup_steps: int = 0
    """Linear warm-up steps."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    grad_clip: float = 0.0
    """Clip the global gradient norm to this value (0 disables)."""
    backend: Literal["ddp", "horovod"] = "ddp"
    """Data-parallel engine: torch DistributedDataParallel or Horovod."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """Where to train; ``auto`` uses CUDA when present."""
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    """Training precision: ``bf16`` autocast (fp32 master weights) or ``fp32``; ``auto`` is
    bf16 on CUDA GPUs and on CPUs with bf16 units (AVX-512 BF16/AMX), else fp32 (see the
    README's bf16 study: the same held-out IS, 2.8x the images/s on the demo)."""
    channels_last: bool = True
    """Channels-last memory format for the generator and the loss recognizer (faster
    convolutions on GPUs and CPUs; the generator stays contiguous under Horovod, whose
    collectives take contiguous tensors only)."""
    threads_per_rank: int = 0
    """torch CPU threads per rank (0 = cores / local ranks)."""
    seed: int = 0
    """Seed of model initialisation, sampling and augmentation."""
    log_every: int = 10
    """Write a metrics line every N steps."""
    val_every: int = 100
    """Validate (IS, PSNR on ``data.val``) every N steps; 0 = only at the end."""
    ckpt_every: int = 100
    """Checkpoint every N steps; 0 = only at the end."""
    keep_last: int = 2
    """How many recent checkpoints to keep (the best-by-IS one is always kept)."""
    max_minutes: float = 0.0
    """Stop cleanly (checkpoint, validate) after this many minutes; 0 = no limit."""
    fit_to_minutes: bool = False
    """Fit ``steps`` to this machine: time the first steps of a new run (on rank 0, the same
    plan on every rank) and, when ``steps`` would not finish within ``max_minutes`` (or the
    Slurm time limit), train fewer steps with the learning-rate schedule, ``val_every`` and
    ``ckpt_every`` rescaled to them, so that the run ends on time with a completed schedule
    (see :mod:`harness.training.fit`). A resumed run keeps the plan of its first start."""
    ema: float = 0.0
    """Decay of an exponential moving average of the generator's weights, in (0, 1) (e.g.
    0.999, BasicSR's default for SR); 0 = off. When on, validation, ``best.pt`` and so
    inference use the EMA weights, and checkpoints carry them for ``--resume``."""
    target_is: float = 0.0
    """Validation IS to reach, in (0, 1]; 0 = off. The first validation that reaches it records
    its step, the wall time since the run started and the cluster energy up to that moment
    (from the power samples) as ``summary.json`` ``target``; see ``stop_at_target``."""
    stop_at_target: bool = False
    """End the run cleanly (checkpoint, summary) at the first validation reaching
    ``target_is`` (needs ``target_is``)."""
    tensorboard: bool = False
    """Write TensorBoard scalars (loss terms, validation IS/PSNR, images/s, cluster W,
    J/image, caps) per step under ``<run>/tensorboard/`` on rank 0, and the same scalars to
    ``<run>/scalars.csv`` (needs the ``tensorboard`` package)."""
    fit_margin: float = 0.1
    """With ``fit_to_minutes``: the fraction of the time limit left unplanned, for a machine
    that runs slower later than in the timed first steps (a shared node: raise it)."""
    collective_timeout_s: float = DEFAULT_TIMEOUT_S
    """A wait on another rank (any collective of any command of this job: start-up, a
    training step, inference, scoring, MPI's shutdown) that lasts this long means a rank
    stopped responding (SIGSTOP, a stuck file system, a hung GPU): the job ends with one line
    naming the rank and its host instead of holding the cluster at full power (see
    :mod:`harness.cluster.watchdog`; ``$HARNESS_COLLECTIVE_TIMEOUT_S`` overrides it, and
    applies to commands without a job). Also the timeout of torch.distributed's collectives.
    The first step of a start gets 4x as long (lazy initialisation)."""

    def __post_init__(self) -> None:
        _check(self.steps >= 1, "steps", "must be >= 1")
        _check(MIN_TIMEOUT_S <= self.collective_timeout_s <= MAX_TIMEOUT_S,
               "collective_timeout_s",
               f"must be between {MIN_TIMEOUT_S:g} and {MAX_TIMEOUT_S:g} seconds")
        _check(self.batch_size >= 1, "batch_size", "must be >= 1")
        _check(0 < self.lr < 1, "lr", "must be in (0, 1)")
        _check(self.warmup_steps >= 0, "warmup_steps", "must be >= 0")
        _check(self.weight_decay >= 0, "weight_decay", "must be >= 0")
        _check(self.grad_clip >= 0, "grad_clip", "must be >= 0")
        _check(self.threads_per_rank >= 0, "threads_per_rank", "must be >= 0")
        _check(self.log_every >= 1, "log_every", "must be >= 1")
        _check(self.val_every >= 0, "val_every", "must be >= 0")
        _check(self.ckpt_every >= 0, "ckpt_every", "must be >= 0")
        _check(self.keep_last >= 1, "keep_last", "must be >= 1")
        _check(self.max_minutes >= 0, "max_minutes", "must be >= 0")
        _check(0 <= self.fit_margin < 0.9, "fit_margin", "must be in [0, 0.9)")
        _check(0 <= self.ema < 1, "ema", "must be in (0, 1), or 0 for off")
        _check(0 <= self.target_is <= 1, "target_is", "must be in (0, 1], or 0 for off")
        _check(self.target_is > 0 or not self.stop_at_target, "stop_at_target",
               "needs train.target_is (the IS to stop at)")


@dataclass(frozen=True, kw_only=True, slots=True)
class InferConfig:
    """Inference (``harness infer``)."""

    batch_size: int = 32
    """Images per forward pass on each rank."""
    tta_flip: bool = False
    """Average the outputs of the image and its mirror (test-time augmentation)."""
    checkpoint: str = ""
    """Checkpoint to load; empty = the shipped weights for the model, when there are any."""
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    """SR forward pass precision; ``auto`` is bf16 where the device has bf16 units (CUDA,
    AVX-512 BF16/AMX CPUs: outputs within 3/255 of fp32, see tests/model/test_precision.py)."""
    threads_per_rank: int = 0
    """torch CPU threads per inference rank (0 = cores / local ranks)."""

    def __post_init__(self) -> None:
        _check(self.batch_size >= 1, "batch_size", "must be >= 1")


@dataclass(frozen=True, kw_only=True, slots=True)
class EvalConfig:
    """Scoring (``harness evaluate``, validation during training)."""

    recognizer: str = "facenet"
    """``facenet`` (embedded), ``dlib``, ``sphere20a:PATH`` or ``onnx:PATH``, or a comma list
    (``facenet,dlib``): ``infer --hr`` scores with each (validation uses the first)."""
    metrics: tuple[str, ...] = ("is", "psnr", "ssim")
    """Metrics to compute: any of :data:`harness.scoring.ALL_METRICS` (is, psnr, ssim, psnr_y,
    ssim_y, rmse, niqe)."""
    shave: int = 0
    """Border pixels ignored by PSNR/SSIM."""
    batch_size: int = 64
    """Pairs per recognizer forward pass (each pass embeds twice as many images)."""
    precision: Literal["fp32", "bf16"] = "fp32"
    """Recognizer precision for scores; ``bf16`` is faster and labelled approximate."""

    def __post_init__(self) -> None:
        for m in self.metrics:
            _check(m in METRIC_NAMES, "metrics", f"unknown metric {excerpt(m)} (expected some "
                   f"of {', '.join(METRIC_NAMES)})")
        _check(self.shave >= 0, "shave", "must be >= 0")
        _check(self.batch_size >= 1, "batch_size", "must be >= 1")


@dataclass(frozen=True, kw_only=True, slots=True)
class ReportConfig:
    """The judges' HTML report."""

    samples: int = 6
    """Faces per row group (best, median, worst) in the sample grid."""

    def __post_init__(self) -> None:
        _check(1 <= self.samples <= 50, "samples", "must be between 1 and 50")


@dataclass(frozen=True, kw_only=True, slots=True)
class LaunchConfig:
    """How ``harness launch`` starts the job (an MPI launcher, srun or torchrun; or Slurm).

    Every string here may end up in a shell line or an ``#SBATCH`` line, so control characters
    (newline, NUL, ...) are refused everywhere, environment names must be POSIX identifiers, and
    host, partition and account names are limited to the characters such names use.
    """

    launcher: Literal["auto", "openmpi", "mpich", "intelmpi", "srun", "torchrun"] = "auto"
    """What starts the ranks: ``auto`` (the MPI of ``mpirun``'s ``--version``, else of the
    library mpi4py loads: one of the next three), ``openmpi`` (``mpirun -x``), ``mpich`` or
    ``intelmpi`` (Hydra ``mpiexec -genv``), ``srun`` (inside a Slurm allocation) or
    ``torchrun`` (no MPI: one ``torch.distributed.run`` agent per node, rendezvous on the
    first host)."""
    nodes: int = 1
    """Number of nodes."""
    ranks_per_node: int = 1
    """Ranks per node (one per GPU on a GPU cluster)."""
    gpus_per_node: int = 0
    """GPUs per node requested from the scheduler (0 = none)."""
    hosts: tuple[str, ...] = ()
    """Host names; empty = run locally (or wherever Slurm places the job). With torchrun the
    first host is the rendezvous endpoint."""
    bind_to: Literal["core", "socket", "numa", "none"] = "core"
    """Process binding, the same meaning for every launcher: Open MPI ``--bind-to``, MPICH
    ``-bind-to``, Intel MPI ``I_MPI_PIN_DOMAIN``, srun ``--cpu-bind`` (cores, sockets, ldoms).
    torchrun does not bind."""
    mpirun: str = "mpirun"
    """The MPI launcher executable (``mpirun``, ``mpiexec``, ``mpiexec.hydra``); for Open MPI the
    project's venv one is used when present."""
    mpi_args: tuple[str, ...] = ()
    """Extra arguments for mpirun/mpiexec (not srun or torchrun), passed through verbatim."""
    env: dict[str, str] = field(default_factory=dict)
    """Environment variables exported to every rank (names: letters, digits and ``_``)."""
    oversubscribe: bool = False
    """Allow more ranks than cores (needed for demos on small machines)."""
    partition: str = ""
    """Slurm partition, or a comma-separated list (``--scheduler slurm``)."""
    account: str = ""
    """Slurm account."""
    time: str = "01:00:00"
    """Slurm wall-time limit, HH:MM:SS."""
    signal_lead_s: int = 120
    """Under Slurm, every rank gets SIGUSR1 this many seconds before the time limit
    (``#SBATCH --signal=USR1@N``; Slurm may send it up to 60 s earlier); 0 = no signal."""
    srun_mpi: str = ""
    """srun's ``--mpi`` plugin; empty = ``pmix`` for Open MPI and srun, ``pmi2`` for MPICH and
    Intel MPI (which may also need ``I_MPI_PMI_LIBRARY`` in ``env``: the path of Slurm's
    ``libpmi2.so``); with ``auto``, that of the MPI mpi4py loads."""
    rdzv_port: int = 29500
    """torchrun's rendezvous port on the first host."""
    run_dir: str = "runs"
    """Parent folder of run directories (and of Slurm's ``slurm-<jobid>.out`` logs)."""
    exclusive: bool | None = None
    """Ask Slurm for whole nodes (``#SBATCH --exclusive``); empty = yes when ``power`` is
    enabled (per-node power accounting needs nodes no other job shares), else no."""

    @property
    def world_size(self) -> int:
        """Total number of ranks."""
        return self.nodes * self.ranks_per_node

    def __post_init__(self) -> None:
        _check(1 <= self.nodes <= MAX_NODES, "nodes", f"must be between 1 and {MAX_NODES:,}, "
               f"got {self.nodes:,}")
        _check(1 <= self.ranks_per_node <= MAX_PER_NODE, "ranks_per_node",
               f"must be between 1 and {MAX_PER_NODE}, got {self.ranks_per_node:,}")
        _check(0 <= self.gpus_per_node <= MAX_PER_NODE, "gpus_per_node",
               f"must be between 0 and {MAX_PER_NODE}, got {self.gpus_per_node:,}")
        _check(self.world_size <= MAX_WORLD_SIZE, "ranks_per_node",
               f"{self.nodes:,} nodes x {self.ranks_per_node} ranks is more than "
               f"{MAX_WORLD_SIZE:,} ranks")
        _check(not self.hosts or len(self.hosts) == self.nodes, "hosts",
               f"lists {len(self.hosts)} hosts but launch.nodes is {self.nodes}")
        for i, host in enumerate(self.hosts):
            _check(bool(_HOST.fullmatch(host)), f"hosts[{i}]",
                   f"{excerpt(host)} is not a host name (letters, digits, '.', '-', '_')")
        parts = self.time.split(":")
        _check(len(parts) == 3 and all(p.isdigit() for p in parts), "time",
               "expected HH:MM:SS")
        _check(bool(self.mpirun), "mpirun", "must not be empty")
        _no_control(self.mpirun, "mpirun")
        for i, arg in enumerate(self.mpi_args):
            _no_control(arg, f"mpi_args[{i}]")
        for name, value in self.env.items():
            _check(bool(ENV_NAME.fullmatch(name)), "env",
                   f"{excerpt(name)} is not a valid environment variable name (letters, "
                   "digits and '_', not starting with a digit)")
            _no_control(value, f"env.{name}")
        _check(not self.partition or bool(_SLURM_NAMES.fullmatch(self.partition)), "partition",
               f"{excerpt(self.partition)} is not a Slurm partition name (letters, digits, "
               "'.', '-', '_', '+'; several separated by commas)")
        _check(not self.account or bool(_SLURM_NAME.fullmatch(self.account)), "account",
               f"{excerpt(self.account)} is not a Slurm account name (letters, digits, "
               "'.', '-', '_', '+')")
        _check(0 <= self.signal_lead_s <= 65535, "signal_lead_s", "must be between 0 and 65535")
        _check(not self.srun_mpi or bool(re.fullmatch(r"[a-z0-9_]+", self.srun_mpi)), "srun_mpi",
               "expected an srun --mpi plugin name such as pmix, pmi2 or none")
        _check(1 <= self.rdzv_port <= 65535, "rdzv_port", "must be between 1 and 65535")
        _check(bool(self.run_dir), "run_dir", "must not be empty")
        _no_control(self.run_dir, "run_dir")


def _no_control(value: str, key: str) -> None:
    _check(not _CONTROL.search(value), key,
           f"{excerpt(value)} contains a control character (newline, NUL, ...)")


@dataclass(frozen=True, kw_only=True, slots=True)
class JobConfig:
    """A whole job: what to train/infer, where, and under which power budget."""

    name: str = "job"
    """Short name; run directories are called ``<name>-<timestamp>``."""
    description: str = ""
    """Free text shown in reports."""
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    infer: InferConfig = field(default_factory=InferConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    power: PowerConfig = field(default_factory=PowerConfig)
    report: ReportConfig = field(default_factory=ReportConfig)
    launch: LaunchConfig = field(default_factory=LaunchConfig)

    def __post_init__(self) -> None:
        _check(len(self.name) <= MAX_NAME_CHARS, "name",
               f"{len(self.name):,} characters long; at most {MAX_NAME_CHARS}")
        _check(bool(self.name) and all(c.isalnum() or c in "-_." for c in self.name), "name",
               "must be non-empty and use only letters, digits, '-', '_' and '.'")

    def to_dict(self) -> dict[str, Any]:
        """The resolved job as plain data (for run manifests and reports)."""
        return _to_plain(self)


def _to_plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value):
        return {f.name: _to_plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, tuple):
        return [_to_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _to_plain(v) for k, v in value.items()}
    return value


# --------------------------------------------------------------------------- conversion

def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin is tuple:
        item = typing.get_args(tp)[0]
        plural = {int: "integers", float: "numbers", str: "strings", bool: "true/false values"}
        return "a list of " + plural.get(item, f"items, each {_type_name(item)}")
    if origin is dict:
        return "a mapping"
    if dataclasses.is_dataclass(tp):
        return "a mapping"
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false"}.get(
        tp, getattr(tp, "__name__", str(tp)))


def _convert(tp: Any, value: Any, key: str) -> Any:
    """Convert a parsed YAML value to the annotated type, or raise FieldError."""
    origin = typing.get_origin(tp)
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return _build(tp, value, key)
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(arg, value, key)
            except FieldError as exc:
                errors.append(exc.message)
        raise FieldError(key, errors[0] if errors else "invalid value")
    if origin is Literal:
        if value in typing.get_args(tp):
            return value
        raise FieldError(key, f"expected {_type_name(tp)}, got {excerpt(value)}")
    if origin is tuple:
        if isinstance(value, str) or not isinstance(value, Sequence):
            raise FieldError(key, f"expected {_type_name(tp)}, got {excerpt(value)}")
        (item,) = typing.get_args(tp)[:1]
        return tuple(_convert(item, v, f"{key}[{i}]") for i, v in enumerate(value))
    if origin is dict:
        ktype, vtype = typing.get_args(tp)
        if not isinstance(value, Mapping):
            raise FieldError(key, f"expected a mapping, got {excerpt(value)}")
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise FieldError(key, f"keys must be strings, got {excerpt(k)}")
            if vtype is str:
                if isinstance(v, bool) or not isinstance(v, (str, int, float)):
                    raise FieldError(f"{key}.{k}", f"expected a string, got {excerpt(v)}")
                out[k] = str(v)
            elif vtype is float:
                out[k] = _convert(float, v, f"{key}.{k}")
            else:
                out[k] = v
        return out
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise FieldError(key, f"expected true or false, got {excerpt(value)}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise FieldError(key, f"expected an integer, got {excerpt(value)}")
    if tp is float:
        number = None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            number = float(value)
        elif isinstance(value, str):  # YAML 1.1 reads 2e-4 as a string
            try:
                number = float(value)
            except ValueError:
                pass
        if number is None or not math.isfinite(number):
            raise FieldError(key, f"expected a finite number, got {excerpt(value)}")
        return number
    if tp is str:
        if isinstance(value, str):
            return value
        raise FieldError(key, f"expected a string, got {excerpt(value)}")
    raise TypeError(f"unsupported config type {tp!r} at {key}")  # a bug in this module


def _build(cls: type, data: Any, prefix: str) -> Any:
    """Build dataclass ``cls`` from a mapping, checking keys, types and ranges."""
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise FieldError(prefix, f"expected a mapping, got {excerpt(data)}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    kwargs: dict[str, Any] = {}
    for raw_key, value in data.items():
        key = raw_key if isinstance(raw_key, str) else excerpt(raw_key)
        path = f"{prefix}.{_clip(key)}" if prefix else _clip(key)
        if key not in fields:
            close = difflib.get_close_matches(key, list(fields), n=1) if len(key) <= 64 else []
            hint = f" (did you mean {close[0]}?)" if close else (
                f" (expected one of: {', '.join(fields)})")
            raise FieldError(path, "unknown key" + hint)
        kwargs[key] = _convert(hints[key], value, path)
    try:
        return cls(**kwargs)
    except FieldError as exc:
        raise FieldError(f"{prefix}.{exc.key}" if prefix else exc.key, exc.message) from None


# --------------------------------------------------------------------------- loading

class _YamlLimit(Exception):
    """YAML refused for its shape (too deep, too many values), not for its syntax."""

    def __init__(self, message: str, mark: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.mark = mark


@functools.cache
def _bounded_loader() -> type:
    """``yaml.SafeLoader`` that refuses documents too deep or too large once aliases expand.

    PyYAML shares one node between an anchor and its aliases, so parsing a "billion laughs"
    document is cheap; what explodes is everything after it that walks the data (validation,
    ``repr`` in error messages, copies, JSON dumps). The composer therefore counts, for every
    node, its size with all aliases expanded, and stops as soon as the document's total passes
    :data:`MAX_YAML_NODES`: a 9-level bomb is refused after a few dozen nodes.
    """
    import yaml
    from yaml.events import AliasEvent, ScalarEvent

    class BoundedLoader(yaml.SafeLoader):
        def __init__(self, stream: str) -> None:
            super().__init__(stream)
            self._expanded = 0              # values so far, aliases counted in full
            self._depth = 0
            self._sizes: dict[int, int] = {}  # id(node) -> its expanded size

        def _count(self, n: int, mark: Any) -> None:
            self._expanded += n
            if self._expanded > MAX_YAML_NODES:
                raise _YamlLimit(f"more than {MAX_YAML_NODES} YAML values (an alias counts as "
                                 "a full copy of what it names)", mark)

        def compose_node(self, parent: Any, index: Any) -> Any:
            event = self.peek_event()
            if isinstance(event, AliasEvent):
                target = self.anchors.get(event.anchor)
                if target is not None:  # an unknown anchor is PyYAML's own error
                    self._count(self._sizes.get(id(target), 1), event.start_mark)
                return super().compose_node(parent, index)
            if self._depth >= MAX_YAML_DEPTH:
                raise _YamlLimit(f"nested deeper than {MAX_YAML_DEPTH} levels", event.start_mark)
            before = self._expanded
            cost = 1 + len(event.value) // 1024 if isinstance(event, ScalarEvent) else 1
            self._count(cost, event.start_mark)
            self._depth += 1
            try:
                node = super().compose_node(parent, index)
            finally:
                self._depth -= 1
            self._sizes[id(node)] = self._expanded - before
            return node

        def construct_mapping(self, node: Any, deep: bool = False) -> Any:
            # PyYAML keeps the last of two equal keys; a job file that says a thing twice is
            # refused, naming the key and the line of its second appearance.
            seen: dict[Any, Any] = {}
            for key_node, _ in getattr(node, "value", []):
                if (isinstance(key_node, yaml.ScalarNode)
                        and key_node.tag != "tag:yaml.org,2002:merge"):  # << merges, once
                    key = self.construct_object(key_node)
                    try:
                        first = seen.setdefault(key, key_node)
                    except TypeError:  # an unhashable key is PyYAML's own error
                        continue
                    if first is not key_node:
                        raise _YamlLimit(f"duplicate key {excerpt(key)} (first on line "
                                         f"{first.start_mark.line + 1})", key_node.start_mark)
            return super().construct_mapping(node, deep=deep)

        def construct_yaml_int(self, node: Any) -> int:
            if len(node.value) > MAX_INT_DIGITS:
                raise _YamlLimit(f"integer longer than {MAX_INT_DIGITS} characters",
                                 node.start_mark)
            return super().construct_yaml_int(node)

    BoundedLoader.add_constructor("tag:yaml.org,2002:int", BoundedLoader.construct_yaml_int)
    return BoundedLoader


def _where(mark: Any) -> str:
    return f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""


def _parse(text: str) -> Any:
    """Parse with the limits; raises _YamlLimit, yaml.YAMLError, ValueError or OverflowError."""
    loader = _bounded_loader()(text)
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


def parse_yaml(text: str, source: str) -> Any:
    """Parse one YAML document with the limits above; the only YAML reader of job data.

    Args:
        text: The document.
        source: What to name in errors (a file path).

    Raises:
        UserError: one line, ``source: line L, column C: what is wrong``.
    """
    import yaml

    try:
        return _parse(text)
    except _YamlLimit as exc:
        raise UserError(f"{source}: {_where(exc.mark)}refused: {exc.message}") from None
    except yaml.YAMLError as exc:
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise UserError(f"{source}: {_where(getattr(exc, 'problem_mark', None))}invalid YAML "
                        f"({_clip(problem)})") from None
    except (ValueError, OverflowError) as exc:  # e.g. the timestamp 2024-02-30
        raise UserError(f"{source}: invalid YAML value ({_clip(str(exc))})") from None


def parse_override(text: str) -> tuple[list[str], Any]:
    """Parse one ``--set section.key=value`` override into (key path, YAML value).

    A value that is not valid YAML is taken as a plain string; one that breaks the YAML limits
    (see :func:`parse_yaml`) is refused.
    """
    import yaml

    shown = f"--set {_clip(text)}"
    if len(text) > MAX_OVERRIDE_CHARS:
        raise UserError(f"{shown}: longer than {MAX_OVERRIDE_CHARS} characters")
    if "=" not in text:
        raise UserError(f"{shown}: expected KEY=VALUE, e.g. train.lr=2e-4")
    key, raw = text.split("=", 1)
    parts = [p for p in key.strip().split(".")]
    if not all(parts):
        raise UserError(f"{shown}: empty key")
    if len(parts) > MAX_YAML_DEPTH:
        raise UserError(f"{shown}: key nested deeper than {MAX_YAML_DEPTH} levels")
    if not raw.strip():
        return parts, ""
    try:
        value = _parse(raw)
    except _YamlLimit as exc:
        raise UserError(f"{shown}: {_where(exc.mark)}refused: {exc.message}") from None
    except (yaml.YAMLError, ValueError, OverflowError):
        value = raw
    return parts, value


def apply_overrides(data: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Return a copy of parsed job data with ``--set`` overrides applied (no validation)."""
    import copy

    out = copy.deepcopy(data)
    for text in overrides:
        parts, value = parse_override(text)
        node = out
        for part in parts[:-1]:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise UserError(f"--set {_clip(text)}: {_clip(part)} is not a section")
            node = child
        old = node.get(parts[-1])
        # A mapping merges into the section it names (`train={steps: 3}` changes steps and
        # keeps the file's other train keys) instead of replacing it with defaults; a free
        # mapping (model.args, launch.env) is replaced whole, as before.
        section = _section_type(parts)
        node[parts[-1]] = (_merged(old, value, section) if isinstance(old, dict)
                           and section is not None else value)
    return out


def _section_type(parts: Sequence[str]) -> Any:
    """The config dataclass that the key ``parts`` names, or None (a value, a free mapping)."""
    tp: Any = JobConfig
    for part in parts:
        if not dataclasses.is_dataclass(tp):
            return None
        hints = typing.get_type_hints(tp)
        if part not in hints:
            return None
        tp = hints[part]
    return tp if dataclasses.is_dataclass(tp) else None


def _merged(base: dict[str, Any], value: Any, section: Any) -> Any:
    """``value`` laid over ``base`` key by key, into nested sections too.

    Free mappings and non-mappings replace what was there.
    """
    if not isinstance(value, dict):
        return value
    out = dict(base)
    hints = typing.get_type_hints(section)
    for key, item in value.items():
        inner = hints.get(key)
        nested = inner if dataclasses.is_dataclass(inner) else None
        out[key] = (_merged(out[key], item, nested) if nested is not None
                    and isinstance(out.get(key), dict) else item)
    return out


def job_from_dict(data: Any, source: str = "<job>") -> JobConfig:
    """Validate plain data (parsed YAML) into a :class:`JobConfig`.

    Raises:
        UserError: one line ``source: key.path: what was expected``.
    """
    try:
        return _build(JobConfig, data, "")
    except FieldError as exc:
        where = exc.key or "top level"
        raise UserError(f"{source}: {where}: {exc.message}") from None


def load_job(path: str | Path, overrides: Sequence[str] = ()) -> JobConfig:
    """Read, override and validate a job file.

    Args:
        path: The YAML job file (at most :data:`MAX_JOB_BYTES`).
        overrides: ``section.key=value`` strings applied before validation.

    Raises:
        UserError: the file is missing, unreadable or too large, is not valid YAML or breaks
            the YAML limits, or fails validation.
    """
    p = Path(path)
    try:
        with p.open("rb") as f:  # bounded read: also safe on /dev/zero or a huge file
            raw = f.read(MAX_JOB_BYTES + 1)
    except FileNotFoundError:
        raise UserError(f"{path}: job file not found") from None
    except OSError as exc:
        raise UserError(f"{path}: cannot read job file ({exc.__class__.__name__})") from None
    if len(raw) > MAX_JOB_BYTES:
        raise UserError(f"{path}: job file larger than {MAX_JOB_BYTES} bytes; refused")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UserError(f"{path}: cannot read job file ({exc.__class__.__name__})") from None
    data = parse_yaml(text, str(path))
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise UserError(f"{path}: top level: expected a mapping of sections, got "
                        f"{type(data).__name__}")
    data = apply_overrides(data, overrides)
    return job_from_dict(data, str(path))


def dump_job(job: JobConfig) -> str:
    """The resolved job as YAML text (loadable again with :func:`load_job`)."""
    import yaml

    return yaml.safe_dump(job.to_dict(), sort_keys=False)
