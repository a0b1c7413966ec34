"""``python -m harness.train``: the module that ``mpirun`` starts on every rank (see
:mod:`harness.commands.train`)."""
import sys

from harness.commands.train import main

if __name__ == "__main__":
    sys.exit(main())
