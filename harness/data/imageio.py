"""Reading, pairing and writing face images, plus PIL bicubic resampling (the baseline).

Every image inside the harness is a ``uint8`` numpy array of shape ``(H, W, 3)`` in RGB order.
Network code works on ``float32`` tensors ``(N, 3, H, W)`` in [0, 1]: :func:`to_tensor` and
:func:`from_tensor` convert between the two.

Example:
    >>> pairs = pair_by_name("data/asc19-val/val_HR", "out/sr", lr_dir="data/asc19-val/val_LR")
    ...                                                     # doctest: +SKIP
    >>> hr = read_rgb(pairs[0].hr)                          # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import logging
import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, UnidentifiedImageError

from fileio.atomic import atomic_write
from fileio.user_error import UserError

if TYPE_CHECKING:  # torch is imported lazily: reading images must not pay its import time
    import torch

__all__ = [
    "IMAGE_SUFFIXES",
    "Pair",
    "from_tensor",
    "list_images",
    "pair_by_name",
    "pil_bicubic_upscale",
    "read_rgb",
    "to_tensor",
    "write_png",
]

log = logging.getLogger(__name__)

#: File suffixes (lower case) recognised as images.
IMAGE_SUFFIXES: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".bmp", ".webp")

#: Most pixels an image may declare in its header: 8192 x 8192, far beyond any face crop
#: (96x112). Checked before decoding, so a tiny file declaring a gigapixel never allocates it.
MAX_IMAGE_PIXELS: int = 8192 * 8192

#: How many names an error message lists before "...".
_MAX_NAMES_SHOWN = 10


def _natural_key(text: str) -> list[object]:
    """Sort key that orders "2.png" before "10.png"."""
    return [int(tok) if tok.isdigit() else tok.lower() for tok in re.split(r"(\d+)", text)]


def _name_list(names: Sequence[str]) -> str:
    shown = ", ".join(names[:_MAX_NAMES_SHOWN])
    return shown + (", ..." if len(names) > _MAX_NAMES_SHOWN else "")


def is_image_file(path: Path) -> bool:
    """True for a regular file whose suffix is in :data:`IMAGE_SUFFIXES` (case-insensitive)."""
    return path.suffix.lower() in IMAGE_SUFFIXES and path.is_file()


def read_rgb(path: str | Path) -> np.ndarray:
    """Reads an image file as an 8-bit RGB array, converting faithfully or refusing.

    8-bit RGB, grey and palette images are converted as PIL does. 16-bit PNGs (grey, RGB, with
    alpha) are scaled to 8 bits with rounding (``round(v * 255 / 65535)``), never clipped.
    An alpha channel is dropped only when every pixel is opaque: what lies under a transparent
    pixel is undefined, so such an image is refused rather than scored.

    Args:
        path: Image file (any format PIL reads).

    Returns:
        ``(H, W, 3)`` uint8 array.

    Raises:
        UserError: The file is missing, unreadable, truncated, not an image, declares more
            than :data:`MAX_IMAGE_PIXELS` pixels, partly transparent, or in a pixel format
            with no faithful 8-bit RGB form.
    """
    p = Path(path)
    if not p.is_file():
        raise UserError(f"{p}: no such image file")
    try:
        with Image.open(p) as img:  # reads the header only
            width, height = img.size
            if width * height > MAX_IMAGE_PIXELS:
                raise UserError(f"{p}: declares {width}x{height} pixels, more than the "
                                f"{MAX_IMAGE_PIXELS:,} an input image may have; refused "
                                "before decoding")
            img.load()  # decode now, so truncated files fail here and not later
            if _png_bit_depth(p) == 16:
                return _sixteen_bit_png(p)
            return _pil_to_rgb8(img, p)
    except (
        OSError,
        UnidentifiedImageError,
        ValueError,
        SyntaxError,
        Image.DecompressionBombError,
    ) as exc:
        raise UserError(f"{p}: cannot read as an image ({exc})") from exc


def _png_bit_depth(path: Path) -> int | None:
    """Bits per sample of a PNG (from its IHDR chunk), None for other files."""
    with open(path, "rb") as fh:
        head = fh.read(25)
    if len(head) == 25 and head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR":
        return head[24]
    return None


def _drop_alpha(arr: np.ndarray, opaque: int, path: Path) -> np.ndarray:
    """RGB of an RGBA array whose alpha must be ``opaque`` everywhere."""
    if arr.shape[2] == 4:
        if not np.all(arr[..., 3] == opaque):
            raise UserError(f"{path}: has transparent pixels; save it without transparency "
                            "(what lies under them is undefined)")
        arr = arr[..., :3]
    return arr


def _pil_to_rgb8(img: Image.Image, path: Path) -> np.ndarray:
    mode = img.mode
    if mode in ("I", "I;16", "I;16B", "I;16L", "I;16N"):  # 16-bit grey (not a PNG file)
        grey = np.asarray(img).astype(np.float64)
        if grey.size and (grey.min() < 0 or grey.max() > 65535):
            raise UserError(f"{path}: {mode} values outside 0..65535; convert it to 8-bit RGB")
        g8 = np.rint(grey * (255.0 / 65535.0)).astype(np.uint8)
        return np.repeat(g8[..., None], 3, axis=2)
    if mode == "F":
        raise UserError(f"{path}: floating-point pixels have no defined 8-bit range; "
                        "convert it to 8-bit RGB")
    has_alpha = mode in ("RGBA", "LA", "PA", "La", "RGBa") or (
        mode in ("P", "L", "RGB") and "transparency" in img.info)
    if has_alpha:
        return np.ascontiguousarray(_drop_alpha(np.asarray(img.convert("RGBA")), 255, path))
    return np.asarray(img.convert("RGB"), dtype=np.uint8)


def _sixteen_bit_png(path: Path) -> np.ndarray:
    """A 16-bit PNG as 8-bit RGB, rounded (PIL would truncate RGB and clip grey to white)."""
    import cv2

    raw = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if raw is None or raw.dtype != np.uint16:
        raise UserError(f"{path}: cannot read this 16-bit PNG")
    if raw.ndim == 2:
        raw = raw[..., None]
    if raw.shape[2] == 1:
        raw = np.repeat(raw, 3, axis=2)
    elif raw.shape[2] == 2:  # grey + alpha
        raw = np.concatenate([np.repeat(raw[..., :1], 3, axis=2), raw[..., 1:]], axis=2)
    else:
        order = [2, 1, 0, 3] if raw.shape[2] == 4 else [2, 1, 0]
        raw = raw[..., order]
    rgb = _drop_alpha(raw, 65535, path)
    out = np.rint(rgb.astype(np.float64) * (255.0 / 65535.0)).astype(np.uint8)
    return np.ascontiguousarray(out)


def list_images(directory: str | Path) -> list[Path]:
    """Image files directly inside a folder, in natural name order ("2.png" before "10.png").

    Args:
        directory: Folder to list (not recursive).

    Returns:
        Paths of files with an image suffix (png, jpg, jpeg, bmp, webp).

    Raises:
        UserError: The folder does not exist, holds no image files, or holds image links
            that point nowhere (named: a face silently dropped would change the score).
    """
    d = Path(directory)
    if not d.is_dir():
        raise UserError(f"{d}: no such folder")
    dangling = sorted(p.name for p in d.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES
                      and p.is_symlink() and not p.exists())
    if dangling:
        raise UserError(f"{d}: {len(dangling)} image links point nowhere "
                        f"({_name_list(dangling)}); fix or remove them")
    files = sorted((p for p in d.iterdir() if is_image_file(p)), key=lambda p: _natural_key(p.name))
    if not files:
        raise UserError(f"{d}: no image files ({', '.join(IMAGE_SUFFIXES)})")
    return files


@dataclasses.dataclass(frozen=True, slots=True)
class Pair:
    """One evaluation item: the HR reference, the SR output and optionally the LR input."""

    name: str
    """File stem shared by the images (e.g. ``"301"``)."""
    hr: Path
    """High-resolution reference image."""
    sr: Path
    """Super-resolved image to score."""
    lr: Path | None = None
    """Low-resolution input (for the bicubic baseline), if given."""


def _by_stem(directory: str | Path, role: str) -> dict[str, Path]:
    files = list_images(directory)
    out: dict[str, Path] = {}
    clashes: list[str] = []
    for f in files:
        if f.stem in out:
            clashes.append(f"{out[f.stem].name}/{f.name}")
        else:
            out[f.stem] = f
    if clashes:
        raise UserError(
            f"{directory}: {len(clashes)} {role} names have more than one file "
            f"({_name_list(clashes)}); keep one image per name"
        )
    return out


def pair_by_name(
    hr_dir: str | Path, sr_dir: str | Path, lr_dir: str | Path | None = None
) -> list[Pair]:
    """Matches images of the HR, SR (and LR) folders by file stem, in HR's natural order.

    ``301.png`` in HR matches ``301.png`` or ``301.jpg`` in SR. SR files with no HR counterpart
    are ignored with one logged warning.

    Args:
        hr_dir: Folder of reference images; defines the set of names.
        sr_dir: Folder of super-resolved images.
        lr_dir: Optional folder of low-resolution inputs.

    Returns:
        One :class:`Pair` per HR image.

    Raises:
        UserError: A folder is missing or empty, a name has two files in one folder, or SR/LR
            lack some HR names (the message says how many and lists the first ones).
    """
    hr = _by_stem(hr_dir, "HR")
    sr = _by_stem(sr_dir, "SR")
    lr = _by_stem(lr_dir, "LR") if lr_dir is not None else None
    names = list(hr)  # already in natural order
    for role, found, where in (("SR", sr, sr_dir), ("LR", lr, lr_dir)):
        if found is None:
            continue
        missing = [n for n in names if n not in found]
        if missing:
            raise UserError(
                f"{where}: {len(missing)} of {len(names)} HR images have no {role} counterpart "
                f"({_name_list(missing)})"
            )
    extra = sorted((n for n in sr if n not in hr), key=_natural_key)
    if extra:  # once per folder and job, on rank 0 (callers pair the same folders twice)
        from harness.cluster.rank_log import warn_once

        warn_once(
            log,
            f"sr without hr {sr_dir}",
            "%s: ignoring %d SR images with no HR counterpart (%s)",
            sr_dir,
            len(extra),
            _name_list(extra),
        )
    return [Pair(name=n, hr=hr[n], sr=sr[n], lr=lr[n] if lr is not None else None) for n in names]


def _check_image(arr: np.ndarray) -> np.ndarray:
    a = np.asarray(arr)
    if a.dtype != np.uint8 or not (a.ndim == 2 or (a.ndim == 3 and a.shape[2] == 3)):
        raise ValueError(f"expected a uint8 (H, W, 3) or (H, W) image, got {a.dtype} {a.shape}")
    return a


def write_png(path: str | Path, arr: np.ndarray) -> Path:
    """Writes an image as PNG atomically (temporary file in the same folder, then rename).

    Args:
        path: Destination; parent folders are created.
        arr: ``(H, W, 3)`` RGB or ``(H, W)`` grey uint8 array.

    Returns:
        The destination path.
    """
    img = Image.fromarray(_check_image(arr))
    return atomic_write(path, lambda fh: img.save(fh, format="PNG"))


def pil_bicubic_upscale(lr: np.ndarray, size_wh: tuple[int, int]) -> np.ndarray:
    """Resizes with PIL's BICUBIC filter to ``size_wh`` = (width, height) — the bicubic baseline.

    Args:
        lr: ``(h, w, 3)`` uint8 image.
        size_wh: Output (width, height), e.g. ``(96, 112)``.

    Returns:
        ``(height, width, 3)`` uint8 image.
    """
    img = Image.fromarray(_check_image(lr))
    return np.asarray(img.resize((int(size_wh[0]), int(size_wh[1])), Image.Resampling.BICUBIC))


def to_tensor(images: Sequence[np.ndarray]) -> torch.Tensor:
    """Stacks same-sized uint8 RGB images into a float32 ``(N, 3, H, W)`` tensor in [0, 1].

    Args:
        images: uint8 ``(H, W, 3)`` arrays, all of one size.

    Returns:
        CPU float32 tensor.
    """
    import torch

    if len(images) == 0:
        raise ValueError("no images to stack")
    shapes = {np.shape(im) for im in images}
    if len(shapes) != 1:
        raise ValueError(f"images differ in shape: {sorted(shapes)}")
    batch = np.stack([_check_image(im) for im in images])
    if batch.ndim != 4:
        raise ValueError(f"expected (H, W, 3) images, got {batch.shape[1:]}")
    return torch.from_numpy(batch).permute(0, 3, 1, 2).float().div_(255.0).contiguous()


def from_tensor(batch: torch.Tensor) -> list[np.ndarray]:
    """Converts a ``(N, 3, H, W)`` tensor in [0, 1] back to uint8 RGB images (clamped, rounded).

    Args:
        batch: Tensor on any device, any float dtype.

    Returns:
        List of ``(H, W, 3)`` uint8 arrays.
    """
    import torch

    if batch.ndim != 4 or batch.shape[1] != 3:
        raise ValueError(f"expected an (N, 3, H, W) tensor, got {tuple(batch.shape)}")
    arr = batch.detach().float().clamp(0.0, 1.0).mul(255.0).round().to("cpu", dtype=torch.uint8)
    return list(arr.permute(0, 2, 3, 1).contiguous().numpy())


def quantize_8bit(batch: torch.Tensor) -> torch.Tensor:
    """What saving ``batch`` (values in [0, 1]) as 8-bit PNGs and reading it back gives."""
    return to_tensor(from_tensor(batch))
