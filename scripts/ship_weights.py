"""Ship a trained generator with the project: ``kernels/weights/<name>.pt`` + MANIFEST.json.

Usage::

    python scripts/ship_weights.py runs/asc19-cpu-latest/checkpoints/best.pt \\
        --name asc19-cpu-srresnet64x8 --recipe jobs/asc19-cpu.yaml \\
        --recipe jobs/asc19-cpu-ft.yaml --note "..."

Only the model's weights are kept (no optimizer state), with the model name and keyword
arguments, so ``harness infer`` finds them by model and loads them with
``torch.load(weights_only=True)``; the manifest records the SHA-256, the recipe, the held-out
scores given with ``--score KEY=VALUE`` and the note.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> int:
    import torch

    from harness.outputs.checkpoints import load, save_atomic
    from kernels.shipped import WEIGHTS_DIR, sha256

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoint")
    ap.add_argument("--name", required=True, help="file stem under kernels/weights/")
    ap.add_argument("--recipe", required=True, action="append",
                    help="job file that produced the checkpoint; repeat for a multi-stage "
                    "recipe, first stage first")
    ap.add_argument("--score", action="append", default=[], metavar="KEY=VALUE",
                    help="measured figures to record, e.g. heldout_is_facenet=0.80")
    ap.add_argument("--note", default="", help="how it was trained (data, steps, split)")
    args = ap.parse_args()
    state = load(args.checkpoint)
    out = WEIGHTS_DIR / f"{args.name}.pt"
    weights = {k: v.detach().to(torch.float32).contiguous() for k, v in state["model"].items()}
    save_atomic({"model": weights, "model_name": state["model_name"],
                 "model_kwargs": state["model_kwargs"]}, out)
    manifest_path = WEIGHTS_DIR / "MANIFEST.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {}
    entries = [e for e in manifest.get("weights", []) if e.get("file") != out.name]
    entries.append({
        "file": out.name, "sha256": sha256(out), "model": state["model_name"],
        "model_kwargs": state["model_kwargs"], "recipe": args.recipe,
        "step": state.get("step"), "scores": dict(s.split("=", 1) for s in args.score),
        "note": args.note,
    })
    manifest_path.write_text(json.dumps({"weights": entries}, indent=2) + "\n")
    print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB) and {manifest_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
