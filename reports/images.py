"""Face images for the sample grid: find LR/SR/HR files, make the bicubic baseline, inline PNGs."""
from __future__ import annotations

import base64
import glob
import io
import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image, UnidentifiedImageError

__all__ = ["Sample", "bicubic_upscale", "find_image", "image_size", "pick_samples",
           "png_data_uri"]

_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".webp")


@dataclass(frozen=True, slots=True)
class Sample:
    """One face picked for the grid."""

    group: str
    """``best``, ``median`` or ``worst``."""
    record: dict[str, Any]
    """Its per-image record from ``scores.json``."""


def png_data_uri(source: Path | Image.Image) -> str:
    """A ``data:image/png;base64,…`` URI of a PNG file (bytes kept) or of a PIL image.

    Args:
        source: A PNG file (embedded verbatim), another image file (re-encoded as PNG) or an
            image.

    Raises:
        OSError: The file cannot be read or decoded.
    """
    if isinstance(source, Path):
        data = source.read_bytes()
        _check_size(data, source)
        if not data.startswith(_PNG_MAGIC):
            try:
                with Image.open(io.BytesIO(data)) as im:
                    return png_data_uri(im.convert("RGB"))
            except UnidentifiedImageError as exc:
                raise OSError(f"{source.name}: not an image") from exc
    else:
        buf = io.BytesIO()
        source.save(buf, format="PNG", optimize=False)
        data = buf.getvalue()
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


#: Largest image a report embeds or resizes (a face is 96x112; this is generous).
MAX_PIXELS = 4096 * 4096


def _check_size(data: bytes, source: Path) -> tuple[int, int]:
    """Refuse a decompression bomb (a small file that decodes to gigapixels) before decoding.

    The limit is :data:`MAX_PIXELS`, this module's own, whatever PIL's global one is set to.

    Returns:
        The image's (width, height).
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # ours decides
            with Image.open(io.BytesIO(data)) as im:  # reads the header only
                w, h = im.size
    except (UnidentifiedImageError, Image.DecompressionBombError, ValueError) as exc:
        raise OSError(f"{source.name}: not a usable image ({exc.__class__.__name__})") from exc
    _check_pixels(w, h, source)
    return w, h


def _check_pixels(w: int, h: int, source: Path) -> None:
    if w * h > MAX_PIXELS:
        raise OSError(f"{source.name}: {w}x{h} is too large for a report face (at most "
                      f"{MAX_PIXELS:,} pixels)")


def image_size(path: Path) -> tuple[int, int]:
    """(width, height) of an image file, from its header, within :data:`MAX_PIXELS`.

    Raises:
        OSError: Unreadable, not an image, or larger than :data:`MAX_PIXELS`.
    """
    return _check_size(Path(path).read_bytes(), Path(path))


def find_image(folder: Path | None, name: str) -> Path | None:
    """The image file for a per-image record's ``name`` in ``folder`` (None when absent).

    Scores name images by stem (``305``) or by file name (``305.png``).
    """
    if folder is None or not name or "/" in name or name in (".", ".."):
        return None
    direct = folder / name
    if direct.suffix.lower() in _IMAGE_EXTS and direct.is_file():
        return direct
    for ext in _IMAGE_EXTS:
        p = folder / f"{name}{ext}"
        if p.is_file():
            return p
    matches = sorted(glob.glob(glob.escape(str(folder / name)) + ".*"))
    for m in matches:
        if Path(m).suffix.lower() in _IMAGE_EXTS:
            return Path(m)
    return None


def bicubic_upscale(lr_path: Path, size: tuple[int, int] | None = None) -> Image.Image:
    """The bicubic baseline: the LR face upscaled with PIL's bicubic filter.

    Args:
        lr_path: LR image.
        size: Output (width, height); default 4x the LR size (96x112 for ASC19's 24x28).
    """
    w, h = _check_size(Path(lr_path).read_bytes(), Path(lr_path))
    if size is None:
        size = (w * 4, h * 4)
    _check_pixels(size[0], size[1], Path(lr_path))  # the enlarged face, before allocating it
    with Image.open(lr_path) as im:
        rgb = im.convert("RGB")
    return rgb.resize(size, Image.Resampling.BICUBIC)


def pick_samples(records: list[dict[str, Any]], key: str, per_group: int) -> list[Sample]:
    """The best, median and worst faces by ``key`` (each group best-first; no repeats).

    Args:
        records: Per-image records; those without a finite ``key`` are ignored.
        key: Score to rank by (``is``, or ``psnr`` when IS was not scored).
        per_group: Faces per group.

    Returns:
        Up to ``3 * per_group`` samples: best group, median group, worst group.
    """
    scored = [r for r in records if isinstance(r.get(key), (int, float))
              and not isinstance(r.get(key), bool) and math.isfinite(r[key])]
    scored.sort(key=lambda r: (-float(r[key]), str(r.get("name", ""))))
    n = len(scored)
    k = max(1, min(per_group, n // 3 if n >= 3 else n))
    if n == 0:
        return []
    best = list(range(min(k, n)))
    mid_start = max(0, (n - k) // 2)
    median = list(range(mid_start, min(n, mid_start + k)))
    worst = list(range(max(0, n - k), n))
    used: set[int] = set()
    out: list[Sample] = []
    for group, idxs in (("best", best), ("median", median), ("worst", worst)):
        for i in idxs:
            if i not in used:
                used.add(i)
                out.append(Sample(group=group, record=scored[i]))
    return out
