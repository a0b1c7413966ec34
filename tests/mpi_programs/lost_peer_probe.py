"""Run under mpirun -np 2: the collectives of training (``steps_comm``) after DDP's
torch.distributed start-up; rank 1 SIGKILLs itself mid-way, rank 0 reports what it saw."""
import json
import os
import signal
import sys

from harness.cluster.distributed import (
    describe_peer_loss,
    get_comm,
    get_dist_info,
    init_torch_distributed,
    steps_comm,
)


def main() -> None:
    info = get_dist_info()
    comm = get_comm()
    init_torch_distributed(info, comm, backend="gloo")
    steps = steps_comm(comm, timeout_s=60)
    if os.environ.get("PROBE_COMM") == "job":  # the job's own communicator (MPI), to compare
        steps = comm
    row = {"rank": info.rank, "comm": type(steps.inner).__name__,
           "ints": steps.allgather_ints((info.rank, 7)),
           "objects": steps.allgather({"rank": info.rank})}
    sys.stdout.write(json.dumps(row) + "\n")
    sys.stdout.flush()
    rounds = int(os.environ.get("PROBE_KILL_AFTER", "0"))
    if not rounds:
        return
    try:
        for n in range(100000):
            if info.rank == 1 and n == rounds:
                os.kill(os.getpid(), signal.SIGKILL)
            steps.allgather_ints((n, 0))
    except Exception as exc:  # noqa: BLE001 - what the harness's commands do with it
        sys.stdout.write(json.dumps({"rank": info.rank, "lost": describe_peer_loss(exc)}) + "\n")
        sys.stdout.flush()
        os._exit(1)


if __name__ == "__main__":
    main()
