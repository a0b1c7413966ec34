"""Turning a folder of face images into packed HR/LR training shards.

``harness prepare`` walks any folder tree of face images — FFHQ's aligned 1024x1024 faces or
their 128x128 thumbnails, or ASC19-style 96x112 crops — and for each image:

1. makes the 96x112 (W x H) HR crop with the ASC19 framing (see :func:`crop_box`);
2. makes the 24x28 LR image with a selectable kernel
   (:data:`harness.data.degradation.DEGRADATIONS`). The default, ``matlab_bicubic`` (MATLAB
   ``imresize(hr, 1/4)``, antialiased bicubic), reproduces the organiser's ASC19 LR images bit for
   bit (:func:`harness.data.degradation.fingerprint` on the 300 validation pairs: MAE 0.000; PIL's
   antialiased BICUBIC comes next with MAE 0.29 grey levels);
3. appends both to packed shards ``hr-00000.npy`` (N, 112, 96, 3) uint8 and ``lr-00000.npy``
   (N, 28, 24, 3) uint8, described by ``index.json`` (names, shard and offset of each item,
   kernel, crop, source). Training reads them with :class:`PackedPairs`, memory-mapped.

Files that cannot be decoded are skipped (not fatal): they are counted, named in
``index.json`` under ``"skipped"`` and reported in one warning.

Distributed use: rank ``r`` of ``w`` handles the files with ``i % w == r`` (``i`` = position in
the sorted file list) and writes ``hr-r{r}-00000.npy``, ``lr-r{r}-00000.npy`` and
``index-r{r}.json``. After a barrier, rank 0 calls :func:`merge_index` to write ``index.json``,
whose item order is the sorted file order, whatever the number of ranks. With one process
:func:`prepare` writes ``hr-00000.npy`` ... and ``index.json`` itself.

Example::

    prepare("/data/ffhq/thumbnails128x128", "/scratch/ffhq-asc19", progress=False)
    pairs = PackedPairs("/scratch/ffhq-asc19")
    lr, hr = pairs[0]           # (28, 24, 3) and (112, 96, 3) uint8
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from fileio.atomic import atomic_write, write_json_atomic
from fileio.user_error import UserError
from harness.data.degradation import DEFAULT_DEGRADATION, check_degradation, downscale
from harness.data.imageio import IMAGE_SUFFIXES, read_rgb
from harness.lists import shard

__all__ = [
    "ASC19_TEMPLATE",
    "CROPS",
    "HR_SIZE_WH",
    "LR_SIZE_WH",
    "PackedPairs",
    "crop_box",
    "make_hr",
    "merge_index",
    "prepare",
]

log = logging.getLogger(__name__)

#: HR crop size (width, height) of the ASC19 task.
HR_SIZE_WH: tuple[int, int] = (96, 112)
#: Super-resolution factor.
SCALE = 4
#: LR size (width, height).
LR_SIZE_WH: tuple[int, int] = (HR_SIZE_WH[0] // SCALE, HR_SIZE_WH[1] // SCALE)
#: Images per shard file (112*96*3 bytes each: 8192 HR images = 264 MB).
DEFAULT_SHARD_SIZE = 8192
INDEX_VERSION = 1

#: The five-point template of 96x112 SphereFace/CASIA face crops, which the ASC19 images follow
#: (left eye, right eye, nose tip, left and right mouth corner; x, y in pixels).
ASC19_TEMPLATE: tuple[tuple[float, float], ...] = (
    (30.2946, 51.6963),
    (65.5318, 51.5014),
    (48.0252, 71.7366),
    (33.5493, 92.3655),
    (62.7299, 92.2041),
)

#: Crop policies: ``asc19`` (FFHQ rule for square images, see :func:`crop_box`) or ``center``
#: (largest central 96:112 box, for unaligned or unknown framings).
CROPS: tuple[str, ...] = ("asc19", "center")


# --------------------------------------------------------------------------------------------
# Cropping
# --------------------------------------------------------------------------------------------
def _ffhq_box_fraction() -> tuple[float, float, float, float]:
    """(left, top, right, bottom) of the ASC19 crop as fractions of an FFHQ-aligned square.

    FFHQ aligns a face so that the square image spans ``2 * max(2 * |eye_to_eye|,
    1.8 * |eye_to_mouth|)`` centred on ``eye_mid + 0.1 * eye_to_mouth`` (Karras et al. 2019,
    ``ffhq-dataset/download_ffhq.py``). On the ASC19 template the mouth term is the larger, so
    the eye-to-mouth distance is 1/3.6 of the side. Scaling the template so its eye-to-mouth
    distance matches, and placing its eye midpoint on FFHQ's, gives the box.
    """
    (lx, ly), (rx, ry), _, (mlx, mly), (mrx, mry) = ASC19_TEMPLATE
    eye = np.array([(lx + rx) / 2, (ly + ry) / 2])
    mouth = np.array([(mlx + mrx) / 2, (mly + mry) / 2])
    eye_to_mouth = float(np.hypot(*(mouth - eye)))
    px = 1.0 / (3.6 * eye_to_mouth)  # one template pixel, as a fraction of the FFHQ side
    eye_x, eye_y = 0.5, 0.5 - 0.1 / 3.6
    left, top = eye_x - eye[0] * px, eye_y - eye[1] * px
    return left, top, left + HR_SIZE_WH[0] * px, top + HR_SIZE_WH[1] * px


def crop_box(
    size_wh: tuple[int, int], crop: str = "asc19"
) -> tuple[float, float, float, float] | None:
    """The source box (left, top, right, bottom; float pixels) that becomes the 96x112 HR crop.

    * An image already 96x112: ``None`` (used unchanged).
    * ``crop="asc19"`` and a square image (FFHQ 1024x1024 or 128x128 aligned faces): the box
      that frames the face as the ASC19 crops do, about the central 65.5 % of the width and
      76.5 % of the height, from 17.3 % of the side on the left and 12.0 % from the top
      (derivation in :func:`_ffhq_box_fraction`).
    * Otherwise (or ``crop="center"``): the largest centred box of aspect 96:112.

    Args:
        size_wh: Source size (width, height).
        crop: One of :data:`CROPS`.

    Returns:
        The box, or None for pass-through.
    """
    if crop not in CROPS:
        raise UserError(f"unknown crop {crop!r}: choose from {', '.join(CROPS)}")
    w, h = size_wh
    if (w, h) == HR_SIZE_WH:
        return None
    if crop == "asc19" and w == h:
        fl, ft, fr, fb = _ffhq_box_fraction()
        return fl * w, ft * h, fr * w, fb * h
    aspect = HR_SIZE_WH[0] / HR_SIZE_WH[1]
    if w / h > aspect:
        bw, bh = h * aspect, float(h)
    else:
        bw, bh = float(w), w / aspect
    left, top = (w - bw) / 2, (h - bh) / 2
    return left, top, left + bw, top + bh


def make_hr(img: np.ndarray, crop: str = "asc19") -> np.ndarray:
    """The 112x96 HR crop of a face image (PIL bicubic, antialiased, sub-pixel box).

    Args:
        img: ``(H, W, 3)`` uint8 RGB image.
        crop: One of :data:`CROPS`.

    Returns:
        ``(112, 96, 3)`` uint8 array.
    """
    box = crop_box((img.shape[1], img.shape[0]), crop)
    if box is None:
        return np.ascontiguousarray(img)
    out = Image.fromarray(img).resize(HR_SIZE_WH, Image.Resampling.BICUBIC, box=box)
    return np.asarray(out)




# --------------------------------------------------------------------------------------------
# Writing shards
# --------------------------------------------------------------------------------------------
def _natural_key(text: str) -> list[object]:
    return [int(tok) if tok.isdigit() else tok.lower() for tok in re.split(r"(\d+)", text)]


def walk_images(src_dir: str | Path) -> list[Path]:
    """All image files under ``src_dir`` (recursively), sorted by relative path (natural order).

    Raises:
        UserError: The folder is missing or holds no images.
    """
    root = Path(src_dir)
    if not root.is_dir():
        raise UserError(f"{root}: no such folder")
    found: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        found.extend(
            Path(dirpath) / f
            for f in filenames
            if Path(f).suffix.lower() in IMAGE_SUFFIXES and not f.startswith(".")
        )
    if not found:
        raise UserError(f"{root}: no image files ({', '.join(IMAGE_SUFFIXES)}) in this folder tree")
    return sorted(found, key=lambda p: _natural_key(p.relative_to(root).as_posix()))


def _save_npy(path: Path, arr: np.ndarray) -> None:
    atomic_write(path, lambda fh: np.save(fh, arr))


def _prefix(rank: int, world_size: int) -> str:
    return "" if world_size == 1 else f"r{rank}-"


@dataclasses.dataclass(slots=True)
class _ShardWriter:
    out_dir: Path
    prefix: str
    shard_size: int
    shards: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    hr: list[np.ndarray] = dataclasses.field(default_factory=list)
    lr: list[np.ndarray] = dataclasses.field(default_factory=list)

    def add(self, hr: np.ndarray, lr: np.ndarray) -> tuple[int, int]:
        """Queues one pair; returns its (shard number, offset)."""
        self.hr.append(hr)
        self.lr.append(lr)
        where = (len(self.shards), len(self.hr) - 1)
        if len(self.hr) >= self.shard_size:
            self.flush()
        return where

    def flush(self) -> None:
        if not self.hr:
            return
        k = len(self.shards)
        names = {"hr": f"hr-{self.prefix}{k:05d}.npy", "lr": f"lr-{self.prefix}{k:05d}.npy"}
        _save_npy(self.out_dir / names["hr"], np.stack(self.hr))
        _save_npy(self.out_dir / names["lr"], np.stack(self.lr))
        self.shards.append({**names, "count": len(self.hr)})
        self.hr, self.lr = [], []


def prepare(
    src_dir: str | Path,
    out_dir: str | Path,
    *,
    kernel: str = DEFAULT_DEGRADATION,
    crop: str = "asc19",
    rank: int = 0,
    world_size: int = 1,
    shard_size: int = DEFAULT_SHARD_SIZE,
    progress: bool = True,
    overwrite: bool = False,
    keep: Callable[[int], bool] | None = None,
) -> dict[str, Any]:
    """Makes packed HR/LR shards from a folder tree of face images (this rank's share).

    Args:
        src_dir: Folder tree of face images (any depth).
        out_dir: Output folder (created).
        kernel: LR degradation, one of :data:`harness.data.degradation.DEGRADATIONS`
            (default: the organiser's, see above).
        crop: Crop policy, one of :data:`CROPS`.
        rank: This process's rank; it handles files ``i`` with ``i % world_size == rank``.
        world_size: Number of processes.
        shard_size: Images per shard file.
        progress: Show a rich progress bar (rank 0 only).
        overwrite: Replace an earlier result in ``out_dir`` instead of refusing.
        keep: Pack only the files whose position ``i`` in the sorted walk has ``keep(i)``
            (a split of one tree into training and held-out sets); default: every file.

    Returns:
        ``{"rank", "files", "written", "skipped", "reframed", "shards", "index"}``: files seen
        by this rank, pairs written, names of undecodable files skipped, images that were
        neither square nor 96x112 (centre-cropped), shard descriptions, and the path of the
        index written (``index.json`` with one process, ``index-r{rank}.json`` otherwise).

    Raises:
        UserError: Bad kernel/crop, missing or empty source, or ``out_dir`` already prepared.
    """
    check_degradation(kernel)
    if crop not in CROPS:
        raise UserError(f"unknown crop {crop!r}: choose from {', '.join(CROPS)}")
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"bad rank {rank} for world_size {world_size}")
    if shard_size < 1:
        raise ValueError(f"shard_size must be >= 1, got {shard_size}")
    src = Path(src_dir)
    files = walk_images(src)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    prefix = _prefix(rank, world_size)
    index_path = out / ("index.json" if world_size == 1 else f"index-r{rank}.json")
    _clear_earlier(out, prefix, index_path, overwrite)
    mine = shard([(i, f) for i, f in enumerate(files) if keep is None or keep(i)], rank,
                 world_size)
    writer = _ShardWriter(out, prefix, shard_size)
    packed = _pack(src, mine, writer, kernel, crop, progress and rank == 0)
    partial = {
        "version": INDEX_VERSION, "rank": rank, "world_size": world_size, "kernel": kernel,
        "crop": crop, "source": str(src.resolve()), "scale": SCALE,
        "hr_size_wh": list(HR_SIZE_WH), "lr_size_wh": list(LR_SIZE_WH), "files": len(files),
        "shards": writer.shards, **packed,
    }
    write_json_atomic(index_path, _merge([partial]) if world_size == 1 else partial, indent=1)
    return {"rank": rank, "files": len(mine), "written": len(packed["items"]),
            "skipped": packed["skipped"], "reframed": packed["reframed"],
            "shards": writer.shards, "index": index_path}


def _clear_earlier(out: Path, prefix: str, index_path: Path, overwrite: bool) -> None:
    """Refuse (or, with ``overwrite``, remove) this rank's earlier shards and index in ``out``."""
    own = [p for p in out.glob("*.npy") if re.fullmatch(rf"(hr|lr)-{prefix}\d{{5}}\.npy", p.name)]
    stale = own + [p for p in (out / "index.json", index_path) if p.exists()]
    if stale and not overwrite:
        raise UserError(f"{out}: already holds prepared data ({stale[0].name}); "
                        "use an empty folder or overwrite")
    for p in stale:
        p.unlink(missing_ok=True)


def _pack(src: Path, mine: Sequence[tuple[int, Path]], writer: _ShardWriter, kernel: str,
          crop: str, progress: bool) -> dict[str, Any]:
    """Crop, degrade and append every file of ``mine``; undecodable files are skipped.

    Returns:
        ``{"items", "skipped", "reframed"}`` for the index.
    """
    items: list[dict[str, Any]] = []
    skipped: list[str] = []
    reframed = 0
    bar = None
    if progress:
        from rich.progress import Progress

        bar = Progress(transient=True)
        bar.start()
        task = bar.add_task(f"prepare ({kernel})", total=len(mine))
    try:
        for i, path in mine:
            name = path.relative_to(src).as_posix()
            try:
                img = read_rgb(path)
            except UserError as exc:
                log.debug("skipping %s", exc)
                skipped.append(name)
                continue
            h, w = img.shape[:2]
            if (w, h) != HR_SIZE_WH and (w != h or crop == "center"):
                reframed += 1
            hr = make_hr(img, crop)
            shard_no, offset = writer.add(hr, downscale(hr, kernel))
            items.append({"name": name, "index": i, "shard": shard_no, "offset": offset})
            if bar is not None:
                bar.advance(task)
        writer.flush()
    finally:
        if bar is not None:
            bar.stop()
    if skipped:
        log.warning("%d of %d files could not be decoded and were skipped (first: %s)",
                    len(skipped), len(mine), ", ".join(skipped[:10]))
    if reframed and crop == "asc19":
        log.warning("%d images were neither square (FFHQ-aligned) nor 96x112: centre-cropped "
                    "to 96:112, so their framing may differ from ASC19's", reframed)
    return {"items": items, "skipped": skipped, "reframed": reframed}


def _merge(partials: Sequence[dict[str, Any]]) -> dict[str, Any]:
    first = partials[0]
    for key in ("kernel", "crop", "source", "world_size", "files"):
        values = {json.dumps(p[key]) for p in partials}
        if len(values) > 1:
            raise UserError(
                f"partial indexes disagree on {key!r} ({', '.join(sorted(values))}): "
                "were they written by one prepare run?"
            )
    shards: list[dict[str, Any]] = []
    items: list[dict[str, Any]] = []
    for part in partials:
        base = len(shards)
        shards.extend(part["shards"])
        items.extend({**it, "shard": it["shard"] + base} for it in part["items"])
    items.sort(key=lambda it: it["index"])
    skipped = sorted((s for p in partials for s in p["skipped"]), key=_natural_key)
    if not items:
        raise UserError(f"{first['source']}: none of {first['files']} image files could be read")
    return {
        "version": INDEX_VERSION,
        "count": len(items),
        "kernel": first["kernel"],
        "crop": first["crop"],
        "source": first["source"],
        "scale": first["scale"],
        "hr_size_wh": first["hr_size_wh"],
        "lr_size_wh": first["lr_size_wh"],
        "shards": shards,
        "items": [
            {"name": it["name"], "shard": it["shard"], "offset": it["offset"]} for it in items
        ],
        "skipped": skipped,
        "reframed": sum(p["reframed"] for p in partials),
    }


def merge_index(out_dir: str | Path) -> dict[str, Any]:
    """Merges the ``index-r{rank}.json`` files of a distributed prepare into ``index.json``.

    Call it on one process after every rank's :func:`prepare` returned (after a barrier).

    Args:
        out_dir: The folder all ranks wrote to.

    Returns:
        The merged index (as written).

    Raises:
        UserError: A rank's partial index is missing or they disagree.
    """
    out = Path(out_dir)
    first_path = out / "index-r0.json"
    if not first_path.is_file():
        raise UserError(f"{out}: no index-r0.json; run prepare on every rank first")
    partials = [json.loads(first_path.read_text(encoding="utf-8"))]
    world_size = int(partials[0]["world_size"])
    for r in range(1, world_size):
        path = out / f"index-r{r}.json"
        if not path.is_file():
            raise UserError(f"{path}: missing; rank {r} of {world_size} did not finish prepare")
        partials.append(json.loads(path.read_text(encoding="utf-8")))
    index = _merge(partials)
    write_json_atomic(out / "index.json", index, indent=1)
    return index


# --------------------------------------------------------------------------------------------
# Reading shards
# --------------------------------------------------------------------------------------------
class PackedPairs:
    """Random access to prepared pairs, memory-mapped (cheap to open, shareable by workers).

    Args:
        directory: A folder written by :func:`prepare` (with ``index.json``).

    Example:
        >>> pairs = PackedPairs("/scratch/ffhq-asc19")          # doctest: +SKIP
        >>> lr, hr = pairs[3]                                   # doctest: +SKIP
    """

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        path = self.directory / "index.json"
        if not path.is_file():
            raise UserError(f"{path}: missing; run 'harness prepare' (and merge its ranks) first")
        try:
            index = json.loads(path.read_text(encoding="utf-8"))
            self.index: dict[str, Any] = index
            self._shards: list[dict[str, Any]] = index["shards"]
            items = index["items"]
        except (ValueError, KeyError, TypeError) as exc:
            raise UserError(f"{path}: not a prepare index ({exc})") from exc
        self.names: list[str] = [it["name"] for it in items]
        self._shard_of = np.fromiter(
            (it["shard"] for it in items), dtype=np.int64, count=len(items)
        )
        self._offset_of = np.fromiter(
            (it["offset"] for it in items), dtype=np.int64, count=len(items)
        )
        self._arrays: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    @property
    def kernel(self) -> str:
        """Name of the kernel that made the LR images."""
        return str(self.index["kernel"])

    def __len__(self) -> int:
        return len(self.names)

    def _shard(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        if k not in self._arrays:
            meta = self._shards[k]
            try:
                hr = np.load(self.directory / meta["hr"], mmap_mode="r")
                lr = np.load(self.directory / meta["lr"], mmap_mode="r")
            except (OSError, ValueError) as exc:
                raise UserError(
                    f"{self.directory}: cannot open shard {meta['hr']} ({exc})"
                ) from exc
            self._arrays[k] = (lr, hr)
        return self._arrays[k]

    def __getitem__(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """Returns ``(lr, hr)``: ``(28, 24, 3)`` and ``(112, 96, 3)`` uint8 arrays (copies)."""
        n = len(self.names)
        if not -n <= i < n:
            raise IndexError(f"index {i} out of range for {n} pairs")
        i %= n
        lr, hr = self._shard(int(self._shard_of[i]))
        j = int(self._offset_of[i])
        return np.array(lr[j]), np.array(hr[j])

    def __getstate__(self) -> dict[str, Any]:
        # Memory maps are reopened lazily in each DataLoader worker instead of being pickled.
        state = self.__dict__.copy()
        state["_arrays"] = {}
        return state


# --------------------------------------------------------------------------------------------
# Which kernel made these LR images?
# --------------------------------------------------------------------------------------------
