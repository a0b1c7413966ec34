r"""``harness power-calibrate``: fit the wall model a job holds the judges' meter with.

Examples::

    harness power-calibrate --job jobs/demo.yaml --set power.sim_pdu=true --out wall.json
    harness power-calibrate --job jobs/asc19-final.yaml \
        --set 'power.pdu_command=snmpget -Oqv -v2c -c public pdu1 ...' --set power.pdu_scale=10 \
        --out cluster-wall.json

Caps every GPU of this node at a staircase of levels (down from the highest limit to the
lowest and back up) with the rack meter attached, records the components (GPU W and the
node's other W) at 10 Hz and each meter reading as it arrives, and fits per node
``wall = intercept + a * GPU W + b * CPU W [+ q * node kW^2]`` (the PSU-curve term only where it
cuts the error), with the meter's lag measured and the residual's spread. Simulated
(``power.backend: simulated`` with ``power.sim_pdu: true``): runs on simulated time, in about a
second. A real rack (``power.pdu_command``): real time, levels x 2 x hold seconds; keep the GPUs
under a steady load meanwhile. The original power limits are put back at the end.

The model goes to ``--out`` (a new file: an existing one is never replaced); name it in a job
with ``power.wall_model: FILE``: the governor then predicts the wall through it and corrects it
online from the meter. Exit 0 on success, 2 on a user error (one line).
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from fileio.user_error import UserError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``harness power-calibrate``."""
    from harness.commands.common import add_job_arguments

    add_job_arguments(parser, required=False,
                      job_help="YAML job whose power section names the GPUs and the meter "
                               "(default: jobs/demo.yaml)")
    parser.add_argument("--out", required=True, metavar="FILE",
                        help="the wall model to write (JSON; must not exist yet); a job "
                             "names it with power.wall_model: FILE, and its governor then "
                             "predicts the wall through it, corrected online by the meter")
    parser.epilog = ("Simulated (power.backend: simulated, power.sim_pdu: true): runs on "
                     "simulated time, about a second. A real rack (power.pdu_command): real "
                     "time, 2 x levels x hold seconds, GPUs under a steady load; the caps "
                     "step down and back up and the original limits are put back.")
    parser.add_argument("--levels", type=int, default=6, metavar="N",
                        help="cap levels between each GPU's lowest and highest limit, stepped "
                             "down and back up (default: 6)")
    parser.add_argument("--hold-s", type=float, default=4.0, metavar="S",
                        help="seconds at each level (default: 4; at least 3 meter readings)")


def run(args: argparse.Namespace) -> int:
    """Calibrate, write the model, print the fit in one line."""
    import logging

    from harness.commands.common import job_or_default
    from harness.config import load_job
    from harness.outputs.write_checks import check_output_file
    from power.calibrate import calibrate
    from power.wall_model import save_wall_model

    if not 2 <= args.levels <= 50:
        raise UserError(f"--levels: must be between 2 and 50, got {args.levels}")
    if not 2.0 <= args.hold_s <= 120.0:
        raise UserError(f"--hold-s: must be between 2 and 120 s, got {args.hold_s:g}")
    job = load_job(job_or_default(args.job, "demo.yaml"), args.overrides)
    p = job.power
    if not (p.sim_pdu or p.pdu_command):
        raise UserError("power-calibrate: no wall meter in the job; add --set "
                        "power.sim_pdu=true (simulated) or --set power.pdu_command=CMD")
    from pathlib import Path

    if Path(args.out).exists():
        raise UserError(f"--out {args.out}: already exists; choose another name (a wall "
                        "model is never replaced)")
    out = check_output_file(args.out, [p.wall_model] if p.wall_model else [], what="--out")
    log = logging.getLogger("harness.power_calibrate")

    def progress(i: int, n: int, cap: float) -> None:
        log.info("level %d/%d: every GPU capped at %.0f W", i, n, cap)

    try:
        cal = calibrate(p, levels=args.levels, hold_s=args.hold_s, progress=progress)
    except ValueError as exc:
        raise UserError(f"power-calibrate: {exc}") from None
    try:
        save_wall_model(cal.model, out)
    except FileExistsError:
        raise UserError(f"--out {args.out}: already exists; choose another name") from None
    except OSError as exc:
        raise UserError(f"--out {args.out}: cannot write: {exc}") from None
    m = cal.model
    quad = f" + {m.quad_w_per_kw2:.1f} W/kW^2" if m.form == "linear+psu" else ""
    print(f"wall model {out}: wall = {m.intercept_w:.0f} W + {m.gpu_coef:.3f} x GPU W + "
          f"{m.cpu_coef:.3f} x CPU W{quad} per node; residual sd {m.residual_sd_w:.1f} W "
          f"(max {m.residual_max_w:.1f} W), meter lag {m.lag_s:.1f} s, {m.samples} readings "
          f"({m.meter}); use it with --set power.wall_model={out}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m harness.commands.power_calibrate``."""
    from harness.commands.common import command_main

    return command_main("power-calibrate", __doc__, add_arguments, run, argv)


if __name__ == "__main__":
    sys.exit(main())
