"""Time identity-similarity scoring: batched (the harness way) vs one pair per forward (official).

The official ASC19 ``evaluation_script/evaluate.py`` reads each HR/SR pair with OpenCV and runs
the recognizer on that pair alone. The harness scores pre-loaded tensors ``--batch-size`` pairs
at a time with :func:`harness.scoring.identity.identity_similarity`. Both use the same network:
sphere20a with random weights (the real weights are not redistributable) and the FaceNet port.
SR images are the bicubic-upscaled ASC19 validation LR images.

Run::

    .venv/bin/python benchmarks/bench_identity.py                 # CPU, 2 threads, 300 pairs
    .venv/bin/python benchmarks/bench_identity.py --device cuda   # on a GPU node

Figures printed: seconds per way, pairs/s, speed-up, mean IS of each way (a sanity check: the
two must agree to 1e-4), and FaceNet's batched embedding time per image.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from harness.scoring.identity import identity_similarity
from harness.scoring.recognizers import load_recognizer
from harness.scoring.recognizers.sphereface import Sphere20a

DATA = Path(__file__).resolve().parents[1] / "data" / "asc19-val"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def official_loop_sphere(
    model: torch.nn.Module, hr_dir: Path, sr_dir: Path, names: list[str], device: torch.device
) -> np.ndarray:
    """evaluate.py's loop: cv2.imread + INTER_CUBIC resize, one pair per forward."""
    import cv2

    scores = []
    for name in names:
        img1 = cv2.resize(cv2.imread(str(hr_dir / name)), (96, 112), interpolation=cv2.INTER_CUBIC)
        img2 = cv2.resize(cv2.imread(str(sr_dir / name)), (96, 112), interpolation=cv2.INTER_CUBIC)
        pair = [
            (im.transpose(2, 0, 1).reshape((1, 3, 112, 96)) - 127.5) / 128.0 for im in (img1, img2)
        ]
        with torch.no_grad():
            f = model(torch.from_numpy(np.vstack(pair)).float().to(device)).cpu()
        scores.append(float(f[0].dot(f[1]) / f[0].norm() / f[1].norm()))
    return np.array(scores)


def official_loop_facenet(rec, hr_dir: Path, sr_dir: Path, names: list[str]) -> np.ndarray:
    """The same loop for FaceNet: read the pair from disk, one pair per forward."""
    scores = []
    for name in names:
        pair = np.stack([np.asarray(Image.open(d / name).convert("RGB")) for d in (hr_dir, sr_dir)])
        with torch.no_grad():
            emb = rec.embed(torch.from_numpy(pair).permute(0, 3, 1, 2).float() / 255.0).cpu()
        scores.append(float(emb[0].dot(emb[1])))
    return np.array(scores)


def _load(dir_: Path, names: list[str]) -> torch.Tensor:
    arr = np.stack([np.asarray(Image.open(dir_ / n).convert("RGB")) for n in names])
    return torch.from_numpy(arr).permute(0, 3, 1, 2).float() / 255.0


def _row(label: str, seconds: float, pairs: int, mean_is: float) -> None:
    print(f"  {label:<44s} {seconds:8.2f} s  {pairs / seconds:8.1f} pairs/s  mean IS {mean_is:.4f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=300, help="number of pairs (max 300)")
    parser.add_argument("--batch-size", type=int, default=64, help="pairs per batched forward")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    names = [f"{i}.png" for i in range(301, 601)][: args.pairs]
    hr_dir = DATA / "val_HR"
    print(f"device={device} threads={args.threads} pairs={len(names)} batch={args.batch_size}")

    with tempfile.TemporaryDirectory() as tmp:
        sr_dir = Path(tmp) / "sr"
        sr_dir.mkdir()
        for name in names:  # SR = PIL bicubic-upscaled LR, written as the official loop reads it
            Image.open(DATA / "val_LR" / name).convert("RGB").resize((96, 112), Image.BICUBIC).save(
                sr_dir / name
            )
        hr, sr = _load(hr_dir, names), _load(sr_dir, names)

        torch.manual_seed(0)
        weights = Path(tmp) / "sphere20a_random.pth"
        torch.save(Sphere20a().state_dict(), weights)
        for label in ("sphere20a (random weights)", "facenet"):
            rec = load_recognizer(
                f"sphere20a:{weights}" if label.startswith("sphere") else "facenet", device=device
            )
            identity_similarity(rec, sr[:2], hr[:2])  # warm-up
            _sync(device)
            start = time.perf_counter()
            batched = identity_similarity(rec, sr, hr, batch_size=args.batch_size)
            _sync(device)
            t_batched = time.perf_counter() - start
            start = time.perf_counter()
            if label.startswith("sphere"):
                official = official_loop_sphere(rec.model, hr_dir, sr_dir, names, device)
            else:
                official = official_loop_facenet(rec, hr_dir, sr_dir, names)
            _sync(device)
            t_official = time.perf_counter() - start
            print(label)
            _row(
                f"batched, {args.batch_size} pairs/forward (harness)",
                t_batched,
                len(names),
                batched.mean(),
            )
            _row(
                "one pair/forward + file reads (official)", t_official, len(names), official.mean()
            )
            print(
                f"  speed-up {t_official / t_batched:.1f}x   max |IS diff| "
                f"{np.abs(batched - official).max():.2e}"
            )
            if label == "facenet":
                _sync(device)
                start = time.perf_counter()
                with torch.no_grad():
                    for chunk in hr.split(args.batch_size):
                        rec.embed(chunk)
                _sync(device)
                per_image_ms = (time.perf_counter() - start) / len(names) * 1e3
                print(f"  facenet batched embedding: {per_image_ms:.1f} ms/image")


if __name__ == "__main__":
    main()
