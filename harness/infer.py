"""``python -m harness.infer``: the module that ``mpirun`` starts on every rank (see
:mod:`harness.commands.infer`)."""
import sys

from harness.commands.infer import main

if __name__ == "__main__":
    sys.exit(main())
