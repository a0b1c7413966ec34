"""Run under torchrun: bootstrap through harness.cluster.distributed with no MPI, report what
this rank sees and the results of every collective of the communicator."""
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
    gathered = comm.gather({"rank": info.rank}, root=0)
    leaders = comm.node_leaders(info.local_rank)
    leader_view = leaders.allgather(info.rank) if leaders is not None else None
    comm.barrier()
    init_torch_distributed(info, comm, backend="gloo")  # joins the group the Comm made
    import torch
    import torch.distributed as dist

    t = torch.tensor([float(info.rank + 1)])
    dist.all_reduce(t)
    row = json.dumps({
        "rank": info.rank, "world_size": info.world_size, "local_rank": info.local_rank,
        "local_world_size": info.local_world_size, "launcher": info.launcher,
        "comm": type(getattr(comm, "inner", comm)).__name__,
        "watched": type(comm).__name__ == "WatchedComm",
        "comm_rank": comm.rank, "comm_size": comm.size,
        "allgather": comm.allgather(info.rank * 10), "bcast": comm.bcast(f"from {info.rank}"),
        "gather": gathered, "allreduce": comm.allreduce_sum(info.rank + 1.5),
        "tensor_allreduce": t.item(), "leaders": leader_view, "addr": addr, "port": port,
        "mpi4py_loaded": "mpi4py" in sys.modules, "argv": sys.argv[1:]})
    # One write per line: two ranks share the pipe, and a write below PIPE_BUF is atomic.
    sys.stdout.write(row + "\n")
    sys.stdout.flush()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
