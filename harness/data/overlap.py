"""Faces that are in both the training and the validation set, found by content hash.

A team that packs its own folder (``harness prepare``) with the validation faces inside and
validates on ``embedded:heldout`` trains on the faces it selects checkpoints by: the "best
held-out IS" is then a score on training data. Names differ between sets, so faces are compared
by the bytes of their HR pixels (an exact copy, whatever its file name or format).
"""
from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np

from harness.data.pairs import PairSet


def face_hash(hr: np.ndarray) -> str:
    """A content hash of one HR face: its shape and its uint8 pixels."""
    pixels = np.ascontiguousarray(hr)
    digest = hashlib.blake2b(repr(pixels.shape).encode(), digest_size=16)
    digest.update(pixels.tobytes())
    return digest.hexdigest()


def shared_faces(train: PairSet, val: PairSet) -> list[tuple[str, str]]:
    """(training name, validation name) of every validation face also in the training set."""
    wanted = {face_hash(hr): name for name, hr in zip(val.names, val.hr, strict=True)}
    shared: list[tuple[str, str]] = []
    for name, hr in zip(train.names, train.hr, strict=True):
        val_name = wanted.pop(face_hash(hr), None)
        if val_name is not None:
            shared.append((name, val_name))
            if not wanted:
                break
    return shared


def overlap_message(shared: Sequence[tuple[str, str]], train_source: str, val_source: str,
                    n_val: int) -> str:
    """The one line that says the sets overlap and what to do."""
    train_name, val_name = shared[0]
    return (f"data.train {train_source} holds {len(shared)} of the {n_val} validation faces of "
            f"data.val {val_source} (e.g. {train_name} is {val_name}): validation would score "
            "faces the model trained on; remove them from the training folder, or split it with "
            "`harness prepare SRC --out TRAIN --heldout-out VAL` and set data.train=TRAIN "
            "data.val=VAL")
