"""Training and validation pairs: sources, the embedded split, sampling and augmentation.

Data sources (``data.train`` / ``data.val`` in a job):

- ``embedded:train`` / ``embedded:heldout`` / ``embedded:all`` — the vendored ASC19 validation
  set in ``data/asc19-val`` (300 pairs, 301.png … 600.png). **The fixed split:** in name order,
  every fifth pair (positions 4, 9, 14, …, i.e. 305.png, 310.png, …, 600.png) is held out —
  60 pairs spread evenly over the set; the other 240 are for training. Checkpoints are
  selected on the held-out pairs; training never sees them.
- a folder packed by ``harness prepare`` (it holds ``index.json``), read through memory maps;
- a folder with HR and LR sub-folders (``val_HR``/``val_LR``, ``HR``/``LR`` or ``hr``/``lr``),
  paired by file name; a folder of HR images alone gets its LR made with ``data.lr_kernel``.

Sampling is deterministic and resumable from the step number alone: epoch ``e`` visits a
permutation seeded by ``(seed, e)``; rank ``r`` takes every ``world``-th index of each global
batch, and augmentation draws from a generator seeded by ``(seed, step, rank)``.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fileio.user_error import UserError
from harness.config import AugmentConfig
from harness.data.degradation import downscale
from harness.data.locations import embedded_asc19_dir
from harness.lists import shard

HELDOUT_EVERY = 5
"""Every fifth embedded pair (positions 4, 9, …) is held out."""


@dataclass(frozen=True)
class PairSet:
    """A list of (LR, HR) uint8 image pairs with their names, held in memory or memory-mapped."""

    names: tuple[str, ...]
    lr: Sequence[np.ndarray]
    hr: Sequence[np.ndarray]
    source: str

    def __len__(self) -> int:
        return len(self.names)

    def subset(self, indices: Sequence[int], label: str) -> PairSet:
        """The pairs at ``indices``, in that order."""
        return PairSet(tuple(self.names[i] for i in indices), [self.lr[i] for i in indices],
                       [self.hr[i] for i in indices], label)


def embedded_split(names: Sequence[str]) -> tuple[list[int], list[int]]:
    """Indices (train, held-out) of the fixed embedded split, for names in natural order."""
    heldout = [i for i in range(len(names)) if i % HELDOUT_EVERY == HELDOUT_EVERY - 1]
    held = set(heldout)
    return [i for i in range(len(names)) if i not in held], heldout


def _find_sub(root: Path, options: Sequence[str]) -> Path | None:
    for name in options:
        if (root / name).is_dir():
            return root / name
    return None


def _read_folder_pairs(root: Path, lr_kernel: str, label: str) -> PairSet:
    from harness.data.imageio import list_images, read_rgb

    hr_dir = _find_sub(root, ("val_HR", "HR", "hr")) or root
    lr_dir = _find_sub(root, ("val_LR", "LR", "lr"))
    hr_files = list_images(hr_dir)
    names, lrs, hrs = [], [], []
    for path in hr_files:
        hr = read_rgb(path)
        if lr_dir is not None:
            candidates = [p for p in lr_dir.glob(path.stem + ".*")]
            if not candidates:
                raise UserError(f"{lr_dir}: no LR image named {path.stem}.* for {path}")
            lr = read_rgb(candidates[0])
        else:
            lr = downscale(hr, lr_kernel)
        if hr.shape[0] != 4 * lr.shape[0] or hr.shape[1] != 4 * lr.shape[1]:
            raise UserError(f"{path}: HR {hr.shape[1]}x{hr.shape[0]} is not 4x its LR "
                            f"{lr.shape[1]}x{lr.shape[0]}")
        names.append(path.stem)
        lrs.append(lr)
        hrs.append(hr)
    return PairSet(tuple(names), lrs, hrs, label)


def load_pairs(source: str, lr_kernel: str = "matlab_bicubic") -> PairSet:
    """Load the pairs a job's ``data.train``/``data.val`` names.

    Raises:
        UserError: unknown source, missing or empty folder, corrupt image (named).
    """
    if source.startswith("embedded:"):
        part = source.split(":", 1)[1]
        if part not in ("train", "heldout", "all"):
            raise UserError(f"data source {source!r}: expected embedded:train, "
                            "embedded:heldout or embedded:all")
        full = _read_folder_pairs(embedded_asc19_dir(), lr_kernel, "embedded:all")
        if part == "all":
            return full
        train, held = embedded_split(full.names)
        return full.subset(train if part == "train" else held, source)
    root = Path(source)
    if not root.is_dir():
        raise UserError(f"data source {source}: no such folder")
    if (root / "index.json").is_file():
        from harness.data.shards import PackedPairs

        packed = PackedPairs(root)
        if len(packed) == 0:
            raise UserError(f"{root}: packed set holds no pairs")
        lrs, hrs = _LazyColumn(packed, 0), _LazyColumn(packed, 1)
        names = tuple(packed.names) if hasattr(packed, "names") else tuple(
            str(i) for i in range(len(packed)))
        return PairSet(names, lrs, hrs, source)
    return _read_folder_pairs(root, lr_kernel, source)


class _LazyColumn(Sequence):
    """One side (LR or HR) of a packed set, read on access."""

    def __init__(self, packed, column: int) -> None:  # noqa: ANN001 - PackedPairs
        self._packed, self._column = packed, column

    def __len__(self) -> int:
        return len(self._packed)

    def __getitem__(self, i):  # noqa: ANN001, ANN204 - Sequence protocol
        return np.asarray(self._packed[i][self._column])


# --------------------------------------------------------------------------- sampling


def batches_per_epoch(n_items: int, global_batch: int) -> int:
    """Full global batches in one pass over the data (the last partial batch is dropped)."""
    return max(n_items // global_batch, 1)


def batch_indices(n_items: int, global_batch: int, step: int, rank: int, world: int,
                  seed: int) -> list[int]:
    """Indices this rank trains on at ``step`` (0-based): a pure function of its arguments.

    The global batch of ``global_batch`` items is split round-robin over ranks.
    """
    per_epoch = batches_per_epoch(n_items, global_batch)
    epoch, pos = divmod(step, per_epoch)
    perm = np.random.default_rng([seed, epoch]).permutation(n_items)
    if n_items < global_batch:  # tiny sets: repeat the permutation
        perm = np.resize(perm, global_batch)
    chunk = perm[pos * global_batch:(pos + 1) * global_batch]
    return [int(i) for i in shard(list(chunk), rank, world)]


def check_split(n_items: int, global_batch: int, world: int, source: str) -> None:
    """Reject batch/rank combinations that cannot be split evenly.

    Raises:
        UserError: batch not divisible by ranks, or more ranks than training images.
    """
    if world > n_items:
        raise UserError(f"{world} ranks but only {n_items} training pairs in {source}: "
                        "use fewer ranks or more data")
    if global_batch % world:
        raise UserError(f"train.batch_size {global_batch} cannot be split across {world} ranks "
                        f"(use a multiple of {world})")


# --------------------------------------------------------------------------- augmentation


def augment_pair(lr: np.ndarray, hr: np.ndarray, cfg: AugmentConfig,
                 rng: np.random.Generator, scale: int = 4,
                 lr_kernel: str = "matlab_bicubic") -> tuple[np.ndarray, np.ndarray, bool]:
    """Apply the same random warp, flip, shift and colour change to an (LR, HR) pair.

    A warp (``rotate_deg``/``zoom``) turns the HR about its centre and makes the LR again from
    it with ``lr_kernel``. Shifts move the LR by whole pixels and the HR by ``scale`` times as
    many, with edge replication, so the pair stays aligned. Returns float32 HxWx3 arrays in
    [0, 1] and whether the pair was mirrored.
    """
    if cfg.rotate_deg or cfg.zoom:
        angle_deg = float(rng.uniform(-cfg.rotate_deg, cfg.rotate_deg))
        zoom = 1.0 + float(rng.uniform(-cfg.zoom, cfg.zoom))
        dx, dy = (float(v) for v in rng.uniform(-scale / 2, scale / 2, 2))
        hr = warp_hr(hr, angle_deg=angle_deg, zoom=zoom, offset_px=(dx, dy))
        lr = downscale(hr, lr_kernel, scale)
    lr_f = lr.astype(np.float32) / 255.0
    hr_f = hr.astype(np.float32) / 255.0
    flipped = bool(cfg.hflip and rng.random() < 0.5)
    if flipped:
        lr_f, hr_f = lr_f[:, ::-1], hr_f[:, ::-1]
    if cfg.shift_px:
        dy, dx = (int(v) for v in rng.integers(-cfg.shift_px, cfg.shift_px + 1, size=2))
        lr_f = _shift(lr_f, dy, dx)
        hr_f = _shift(hr_f, dy * scale, dx * scale)
    if cfg.color_jitter:
        j = cfg.color_jitter
        b, c, s = (1.0 + float(v) for v in rng.uniform(-j, j, size=3))
        lr_f, hr_f = _jitter(lr_f, b, c, s), _jitter(hr_f, b, c, s)
    return np.ascontiguousarray(lr_f), np.ascontiguousarray(hr_f), flipped


def only_flips(cfg: AugmentConfig) -> bool:
    """True when augmentation can only mirror a pair (so HR targets take two forms each)."""
    return cfg.shift_px == 0 and cfg.color_jitter == 0 and cfg.rotate_deg == 0 and cfg.zoom == 0


def warp_hr(hr: np.ndarray, angle_deg: float, zoom: float,
            offset_px: tuple[float, float] = (0.0, 0.0)) -> np.ndarray:
    """Rotate, zoom and shift a uint8 HxWx3 image.

    Rotate (counter-clockwise) and zoom a uint8 HxWx3 image about its centre, then move it
    by ``offset_px`` (dx, dy); bicubic, borders reflected; returns uint8 of the same size.
    """
    import cv2

    h, w = hr.shape[:2]
    matrix = cv2.getRotationMatrix2D(((w - 1) / 2.0, (h - 1) / 2.0), angle_deg, zoom)
    matrix[:, 2] += np.asarray(offset_px, dtype=np.float64)
    return cv2.warpAffine(np.ascontiguousarray(hr), matrix, (w, h), flags=cv2.INTER_CUBIC,
                          borderMode=cv2.BORDER_REFLECT_101)


def _shift(img: np.ndarray, dy: int, dx: int) -> np.ndarray:
    if dy == 0 and dx == 0:
        return img
    h, w = img.shape[:2]
    pad = ((abs(dy), abs(dy)), (abs(dx), abs(dx)), (0, 0))
    padded = np.pad(img, pad, mode="edge")
    y0, x0 = abs(dy) - dy, abs(dx) - dx
    return padded[y0:y0 + h, x0:x0 + w]


def _jitter(img: np.ndarray, brightness: float, contrast: float,
            saturation: float) -> np.ndarray:
    out = img * brightness
    mean = out.mean()
    out = (out - mean) * contrast + mean
    grey = out @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    out = (out - grey[..., None]) * saturation + grey[..., None]
    return np.clip(out, 0.0, 1.0).astype(np.float32)


def make_batch(pairs: PairSet, indices: Sequence[int], cfg: AugmentConfig | None,
               rng: np.random.Generator, return_flips: bool = False,
               lr_kernel: str = "matlab_bicubic"):  # noqa: ANN201
    """Stack (augmented) pairs into float tensors ``(lr, hr)`` of shape (N,3,h,w)/(N,3,H,W).

    With ``return_flips`` also returns the list of per-item mirror flags. ``lr_kernel`` makes
    the LR of warped pairs (see :func:`augment_pair`).
    """
    import torch

    lrs, hrs, flips = [], [], []
    for i in indices:
        lr, hr = pairs.lr[i], pairs.hr[i]
        if cfg is not None:
            lr_f, hr_f, flipped = augment_pair(lr, hr, cfg, rng, lr_kernel=lr_kernel)
        else:
            lr_f, hr_f = lr.astype(np.float32) / 255.0, hr.astype(np.float32) / 255.0
            flipped = False
        lrs.append(lr_f)
        hrs.append(hr_f)
        flips.append(flipped)
    lr_t = torch.from_numpy(np.stack(lrs)).permute(0, 3, 1, 2).contiguous()
    hr_t = torch.from_numpy(np.stack(hrs)).permute(0, 3, 1, 2).contiguous()
    return (lr_t, hr_t, flips) if return_flips else (lr_t, hr_t)


def materialize_split(source: str, dest: str | Path) -> tuple[Path, Path]:
    """Copy an embedded split's LR and HR files into ``dest/LR`` and ``dest/HR``.

    Lets folder-based tools (``harness infer``/``evaluate``, the report) work on a split.

    Returns:
        (lr_dir, hr_dir).
    """
    import shutil

    if not source.startswith("embedded:"):
        raise UserError(f"{source}: only embedded:train|heldout|all can be materialised")
    pairs = load_pairs(source)
    root = embedded_asc19_dir()
    lr_dir, hr_dir = Path(dest) / "LR", Path(dest) / "HR"
    for d in (lr_dir, hr_dir):
        d.mkdir(parents=True, exist_ok=True)
    for name in pairs.names:
        shutil.copyfile(root / "val_LR" / f"{name}.png", lr_dir / f"{name}.png")
        shutil.copyfile(root / "val_HR" / f"{name}.png", hr_dir / f"{name}.png")
    return lr_dir, hr_dir
