"""The recognizers' cache of converted and compiled models, every entry checked before use.

``<cache>`` is ``$HARNESS_CACHE`` or ``~/.cache/facesr-harness``. Each cached file (the FaceNet
state dict, its ONNX graph) and each cached folder (OpenVINO's compile cache) has a sidecar
``<name>.json`` with the SHA-256 of what was written and the SHA-256 of its source (the file it
was made from). An entry is used only when both still match: a flipped byte in the middle of
a graph that the runtime would load anyway (``onnx.checker`` accepts many) is found here,
logged, and the entry rebuilt, so a damaged cache can never change a score. An entry with no
sidecar (written by an older harness) is rebuilt once.

The source is checked by its size and modification time, and hashed again only when those
changed (it is an installed package file, not a cache); the entry itself is hashed on every
use (~0.2 s for FaceNet's 94 MB).

This module imports no torch.
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import json
import logging
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fileio.atomic import write_json_atomic

log = logging.getLogger(__name__)

#: Bytes read at a time when hashing.
_CHUNK = 1 << 22


def cache_dir() -> Path:
    """Directory for converted weights: ``$HARNESS_CACHE`` or ``~/.cache/facesr-harness``."""
    env = os.environ.get("HARNESS_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "facesr-harness"


def sha256_file(path: Path) -> str:
    """SHA-256 (hex) of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def sidecar(path: Path) -> Path:
    """The record of cache entry ``path``: ``<path>.json``."""
    return path.with_name(path.name + ".json")


def source_record(source: Path | None, recipe: str) -> dict[str, Any]:
    """What an entry was made from: the source file (path, size, mtime, SHA-256) and how.

    Args:
        source: The file the entry is made from (None: not available here).
        recipe: How it is made, e.g. ``"onnx opset 17 of InceptionResnetV1"``; a new recipe
            makes old entries stale.
    """
    rec: dict[str, Any] = {"recipe": recipe}
    if source is not None:
        st = source.stat()
        rec.update(path=str(source), size=st.st_size, mtime_ns=st.st_mtime_ns,
                   sha256=sha256_file(source))
    return rec


def _same_source(recorded: Any, source: Path | None, recipe: str) -> bool:
    """Whether ``recorded`` (a sidecar's ``source``) describes ``source`` made by ``recipe``."""
    if not isinstance(recorded, dict) or recorded.get("recipe") != recipe:
        return False
    if source is None:  # the source is not installed here: the entry's own hash decides
        return True
    try:
        st = source.stat()
    except OSError:
        return False
    if (recorded.get("path"), recorded.get("size"), recorded.get("mtime_ns")) == (
            str(source), st.st_size, st.st_mtime_ns):
        return True
    return recorded.get("sha256") == sha256_file(source)


def _read_sidecar(path: Path) -> dict[str, Any] | None:
    try:
        doc = json.loads(sidecar(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


def _discard(path: Path) -> None:
    """Remove a cache entry (file or folder) and its record."""
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)
    sidecar(path).unlink(missing_ok=True)


def _digest(path: Path) -> str:
    """SHA-256 of a file."""
    return sha256_file(path)


def _folder_digests(path: Path) -> dict[str, str]:
    """SHA-256 of every file in a folder, by relative name."""
    return {str(f.relative_to(path)): sha256_file(f)
            for f in sorted(p for p in path.rglob("*") if p.is_file())}


def check_folder(path: Path, source: Path | None, recipe: str, what: str) -> None:
    """Prune a runtime's cache folder to the files whose SHA-256 still matches.

    Prune a cache folder a runtime manages (OpenVINO's compile cache) to the files whose
    recorded SHA-256 still matches; damaged files are logged and removed, unrecorded ones
    removed (the runtime writes them again). A folder made from another source is emptied.
    """
    if not path.is_dir():
        sidecar(path).unlink(missing_ok=True)
        return
    doc = _read_sidecar(path) or {}
    if not _same_source(doc.get("source"), source, recipe):
        if doc:
            log.info("%s %s was made from another source; emptying it", what, path)
        _discard(path)
        return
    files = doc.get("files")
    recorded: dict[str, Any] = files if isinstance(files, dict) else {}
    for name, actual in _folder_digests(path).items():
        if recorded.get(name) != actual:
            if name in recorded:
                log.warning("%s %s is damaged (SHA-256 %s..., recorded %s...); removing it",
                            what, path / name, actual[:12], str(recorded[name])[:12])
            (path / name).unlink(missing_ok=True)


def record_folder(path: Path, source: Path | None, recipe: str, what: str) -> None:
    """Record the SHA-256 of every file of a cache folder after the runtime wrote it."""
    if not path.is_dir():
        return
    _write_sidecar(path, {"files": _folder_digests(path)}, source, recipe, what)


def check_entry(path: Path, source: Path | None, recipe: str, what: str) -> bool:
    """Whether cache entry ``path`` may be used; a damaged or stale one is removed.

    Args:
        path: The cached file or folder.
        source: The file it was made from (see :func:`source_record`).
        recipe: How it is made.
        what: How log lines name it (``"facenet: ONNX graph"``).

    Returns:
        True when the entry exists and matches its record; False when it must be (re)built.
    """
    if not path.exists():
        sidecar(path).unlink(missing_ok=True)
        return False
    doc = _read_sidecar(path)
    if doc is None:
        log.info("%s %s has no checksum record; rebuilding it", what, path)
        _discard(path)
        return False
    if not _same_source(doc.get("source"), source, recipe):
        log.info("%s %s was made from another source; rebuilding it", what, path)
        _discard(path)
        return False
    try:
        actual = _digest(path)
    except OSError as exc:
        log.warning("%s %s cannot be read (%s); rebuilding it", what, path, exc)
        _discard(path)
        return False
    if actual != doc.get("sha256"):
        log.warning("%s %s is damaged (SHA-256 %s..., recorded %s...); rebuilding it", what,
                    path, actual[:12], str(doc.get("sha256"))[:12])
        _discard(path)
        return False
    return True


def record_entry(path: Path, source: Path | None, recipe: str, what: str) -> None:
    """Write the sidecar of a freshly built entry.

    Write the sidecar of a freshly built entry (a cache that cannot be written is skipped:
    the entry is then rebuilt next time).
    """
    _write_sidecar(path, {"sha256": _digest(path)}, source, recipe, what)


def _write_sidecar(path: Path, digests: dict[str, Any], source: Path | None, recipe: str,
                   what: str) -> None:
    """Write ``path``'s sidecar: its digests, its source and when.

    ``path``'s sidecar: its digests, its source and when (a cache that cannot be written
    is skipped: the entry is then rebuilt next time).
    """
    doc = {**digests, "source": source_record(source, recipe),
           "created_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}
    try:
        write_json_atomic(sidecar(path), doc)
    except OSError as exc:
        log.warning("%s: cannot record the checksum of %s (%s)", what, path, exc)


def cached_file(path: Path, source: Path | None, recipe: str, build: Callable[[Path], None],
                what: str) -> Path:
    """``path`` checked (:func:`check_entry`), or built by ``build(path)`` and recorded.

    Args:
        path: The cache entry.
        source: The file the entry is built from (its digest is recorded), or None.
        recipe: What identifies how the entry is built (recorded; a change rebuilds it).
        build: Writes the entry at the path it is given (atomically); may raise ``OSError``
            when the cache cannot be written.
        what: Names the entry in log lines.

    Returns:
        ``path``.
    """
    if not check_entry(path, source, recipe, what):
        build(path)
        record_entry(path, source, recipe, what)
    return path
