"""Held-out validation during training: IS (and PSNR) of the model on the validation pairs.

SR outputs are quantised to 8 bits first, exactly as saved PNGs would be, and IS comes from
:mod:`harness.scoring.identity` like every other score in the harness, with the same checks
(embeddings, and the recognizer's power to tell faces apart: :func:`judge_scores`; SR at
chance level is warned of, not refused, since an untrained model's SR carries no identity yet).
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from harness.cluster.distributed import Comm, DistInfo
from harness.data.pairs import PairSet, make_batch
from harness.lists import shard
from harness.scoring.recognizers import Recognizer


def validate(model: torch.nn.Module, pairs: PairSet, recognizer: Recognizer | None,
             info: DistInfo, comm: Comm, *, device: str, batch_size: int = 32,
             metrics: Sequence[str] = ("is", "psnr")) -> dict[str, float]:
    """Score the model on ``pairs``, sharded over ranks; every rank gets the same means.

    Returns:
        ``val_n`` and, as asked and possible, ``val_is`` (with ``val_rank1`` and
        ``val_is_normalized``, see :class:`~harness.scoring.identity.SeparationStats`) and
        ``val_psnr``.

    Raises:
        UserError: On every rank, when the recognizer's scores cannot mean anything.
    """
    from harness.data.imageio import from_tensor
    from harness.scoring.identity import Separation, identity_similarity, judge_scores
    from harness.scoring.metrics import psnr

    want_is = recognizer is not None and "is" in metrics
    mine = shard(list(range(len(pairs))), info.rank, info.world_size)
    records: list[tuple[int, float, float]] = []
    separation = Separation()
    was_training = model.training
    model.eval()
    with torch.no_grad():
        for start in range(0, len(mine), batch_size):
            idx = mine[start:start + batch_size]
            lr, hr = make_batch(pairs, idx, None, np.random.default_rng(0))
            sr_u8 = from_tensor(model(lr.to(device)).float().clamp(0, 1).cpu())
            # Kept in the (N, H, W, C) memory layout the arrays have: the recognizer's
            # kernels then run as they always did here (bit-identical validation IS).
            sr_q = torch.from_numpy(np.stack(sr_u8)).permute(0, 3, 1, 2).float() / 255.0
            cos = (identity_similarity(recognizer, sr_q.to(device), hr.to(device),
                                       separation=separation)
                   if want_is and recognizer is not None else np.full(len(idx), np.nan))
            for j, i in enumerate(idx):
                p = psnr(sr_u8[j], pairs.hr[i]) if "psnr" in metrics else float("nan")
                records.append((i, float(cos[j]), float(p)))
    model.train(was_training)
    parts = comm.allgather((records, separation.part()))
    every = sorted(r for part, _ in parts for r in part)
    out: dict[str, float] = {"val_n": len(every)}
    if every and want_is and recognizer is not None:
        out["val_is"] = float(np.mean([r[1] for r in every]))
        stats = Separation.merge([i for _, i in parts]).measure()
        judge_scores(stats, recognizer.name, "validation IS", chance="warn")
        if stats is not None:
            out["val_rank1"] = stats.rank1
            out["val_is_normalized"] = stats.normalized_is
    if every and "psnr" in metrics:
        out["val_psnr"] = float(np.mean([r[2] for r in every]))
    return out
