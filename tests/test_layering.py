"""The import layering of the checkout (scripts/layering.py): no two rooms import each other,
config on the ground floor, nothing below commands imports them, reports/fileio/power apart."""
from __future__ import annotations

import ast
import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def layering():
    spec = importlib.util.spec_from_file_location("layering", ROOT / "scripts" / "layering.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["layering"] = module
    spec.loader.exec_module(module)
    return module


def test_the_tree_is_layered(layering):
    graph = layering.import_graph(ROOT)
    assert "harness.cluster" in graph and "harness.commands" in graph  # it saw the rooms
    assert layering.violations(graph) == []


def test_config_imports_no_room_of_harness(layering):
    graph = layering.import_graph(ROOT)
    assert not [b for b in graph["harness.config"] if b.startswith("harness")]


def test_violations_are_found(layering):
    """The rules can fail: a graph with each kind of mistake yields one line for each."""
    graph = {
        "harness.cluster": {"harness.data": {"c.py"}},
        "harness.data": {"harness.cluster": {"d.py"}},
        "harness.config": {"harness.scoring": {"config.py"}},
        "harness.training": {"harness.commands": {"t.py"}},
        "harness.commands": {},
        "reports": {"~torch": {"r.py"}},
        "fileio": {"power": {"f.py"}},
        "power": {"harness.config": {"p.py"}},
    }
    found = layering.violations(graph)
    assert len(found) == 6, found
    assert any("harness.cluster <-> harness.data" in line for line in found)


def _imports_anywhere(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
    return names


def test_watchdog_does_not_import_distributed():
    """The stall watchdog is below the communicator: distributed starts it, not the reverse."""
    imports = _imports_anywhere(ROOT / "harness" / "cluster" / "watchdog.py")
    assert "harness.cluster.distributed" not in imports
    # (`from harness.cluster import watchdog` inside get_comm)
    assert "harness.cluster.watchdog" in _imports_anywhere(
        ROOT / "harness" / "cluster" / "distributed.py")


def test_constants_config_validates_against_match_their_owners():
    from harness.cluster import watchdog
    from harness.config import DEFAULT_TIMEOUT_S, DEGRADATION_NAMES, METRIC_NAMES
    from harness.data.degradation import DEGRADATIONS
    from harness.scoring import ALL_METRICS

    assert tuple(DEGRADATIONS) == DEGRADATION_NAMES
    assert ALL_METRICS == METRIC_NAMES
    assert watchdog.DEFAULT_TIMEOUT_S == DEFAULT_TIMEOUT_S == 30.0


def test_at_most_a_dozen_functions_below_commands_take_the_whole_job(layering):
    takers = layering.job_takers(ROOT)
    assert any(t.endswith(" train") for t in takers)  # it saw the entry points
    assert len(takers) <= layering.MAX_JOB_TAKERS == 12, "\n".join(takers)


def test_the_job_taker_count_can_fail(layering, tmp_path):
    """A function below commands that takes the job counts; commands and top modules don't."""
    (tmp_path / "harness" / "training").mkdir(parents=True)
    (tmp_path / "harness" / "commands").mkdir()
    (tmp_path / "harness" / "training" / "x.py").write_text(
        "def a(job: JobConfig): ...\n"
        "def b(job: 'JobConfig | None', t: TrainConfig): ...\n"
        "class C:\n    def m(self, *, job: JobConfig): ...\n"
        "def d(t: TrainConfig): ...\n")
    (tmp_path / "harness" / "commands" / "y.py").write_text("def e(job: JobConfig): ...\n")
    (tmp_path / "harness" / "cli.py").write_text("def f(job: JobConfig): ...\n")
    assert layering.job_takers(tmp_path) == ["harness/training/x.py:1 a",
                                             "harness/training/x.py:2 b",
                                             "harness/training/x.py:4 m"]


def test_generators_are_built_through_make_generator_only(layering, tmp_path):
    assert layering.model_builders(ROOT) == []
    (tmp_path / "harness" / "model").mkdir(parents=True)
    (tmp_path / "harness" / "workloads").mkdir()
    (tmp_path / "harness" / "model" / "g.py").write_text("m = build_generator('x', {})\n")
    (tmp_path / "harness" / "workloads" / "w.py").write_text(
        "from harness.model import generators as g\n"
        "m = g.build_generator('x', {})\nn = make_generator(cfg)\n")
    assert layering.model_builders(tmp_path) == ["harness/workloads/w.py:2 build_generator"]
