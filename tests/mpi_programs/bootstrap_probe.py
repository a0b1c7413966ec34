"""Run under mpirun: bootstrap through harness.cluster.distributed, report what this rank sees."""
import json
import sys

from harness.cluster.distributed import (
    get_comm,
    get_dist_info,
    init_torch_distributed,
    rendezvous,
)


def main() -> None:
    info = get_dist_info()
    comm = get_comm()
    addr, port = rendezvous(comm)
    init_torch_distributed(info, comm, backend="gloo")
    import torch
    import torch.distributed as dist

    t = torch.tensor([float(info.rank + 1)])
    dist.all_reduce(t)
    row = json.dumps({"rank": info.rank, "world_size": info.world_size,
                      "local_rank": info.local_rank, "launcher": info.launcher,
                      "addr": addr, "port": port, "allreduce": t.item(),
                      "comm_size": comm.size})
    # One write per line: two ranks share the pipe, and a write below PIPE_BUF is atomic.
    sys.stdout.write(row + "\n")
    sys.stdout.flush()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
