"""Run by the cluster tests on every rank: one JSON line with the rank's world, host, the result
of an allreduce, and the TCP connections this process holds (read from the kernel while the MPI
connections are still open, by psutil and by ``ss`` inside the rank's own network namespace)."""
from __future__ import annotations

import json
import os
import socket
import subprocess

import numpy as np
import psutil
from mpi4py import MPI

comm = MPI.COMM_WORLD
# 8 MiB per rank: more than one eager message, so the data really goes over the BTL.
send = np.full(1 << 20, comm.rank + 1.0)
recv = np.empty_like(send)
comm.Allreduce(send, recv)
comm.Barrier()
conns = [[c.laddr.ip, c.laddr.port, c.raddr.ip, c.raddr.port]
         for c in psutil.Process().net_connections(kind="tcp")
         if c.raddr and c.status == psutil.CONN_ESTABLISHED]
ss = subprocess.run(["ss", "-tnpH", "state", "established"], capture_output=True, text=True,
                    timeout=10, check=False).stdout
mine = f"pid={os.getpid()},"
ss_conns = [line.split()[2:4] for line in ss.splitlines() if mine in line]
comm.Barrier()
print(json.dumps({"rank": comm.rank, "size": comm.size, "host": socket.gethostname(),
                  "sum": float(recv[0]), "all_equal": bool((recv == recv[0]).all()),
                  "tcp": conns, "ss": ss_conns}), flush=True)
