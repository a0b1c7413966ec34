"""Print the import graph between the rooms of this checkout and check its layering.

Usage: ``python scripts/layering.py`` prints one line per room with the rooms it imports,
then the layering violations (none on a clean tree; exit code 1 otherwise), then the functions
below ``harness/commands/`` that still take the whole ``JobConfig`` (at most
:data:`MAX_JOB_TAKERS`, the entry points of a workload: the rest take their section) and any
place outside ``harness/model/`` that builds a generator itself instead of through
``harness.model.generators.make_generator``.

Rooms are the top-level packages (``harness``, ``power``, ``reports``, ``fileio``,
``kernels``) and, inside ``harness``, each sub-package (``harness.cluster``, ...) and each
top module (``harness.config``, ``harness.cli``, ...). Every import counts, at module level or
inside a function, ``TYPE_CHECKING`` blocks included: a room that needs another's names only
for types still depends on it.
"""
from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TOP_PACKAGES = ("harness", "power", "reports", "fileio", "kernels")
THIRD_PARTY_FORBIDDEN = {"reports": ("torch",)}
MAX_JOB_TAKERS = 12
"""The most functions below ``harness/commands/`` that may take the whole ``JobConfig``."""
MODEL_BUILDERS = ("build_generator", "build_model", "load_initial_weights", "load_generator",
                  "_load_generator")
"""What builds or loads a generator; outside ``harness/model/`` only ``make_generator`` may."""


def room_of(module: str) -> str | None:
    """The room a dotted module name belongs to, or None if it is not of this project.

    Args:
        module: a dotted module name, e.g. ``harness.cluster.launcher``.

    Returns:
        ``harness.cluster`` for anything inside that sub-package, ``harness.config`` for the
        module, ``harness`` for the package itself, ``power`` for ``power.governor``, ...
    """
    parts = module.split(".")
    if parts[0] not in TOP_PACKAGES:
        return None
    if parts[0] != "harness" or len(parts) == 1:
        return parts[0]
    return ".".join(parts[:2])


def _module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path) -> Iterator[str]:
    """Every module name ``path`` imports (absolute; relative imports resolved)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = _module_name(path).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            yield module
            for alias in node.names:  # `from harness import config` imports harness.config
                yield f"{module}.{alias.name}"


def import_graph(root: Path = ROOT) -> dict[str, dict[str, set[str]]]:
    """The import graph between rooms.

    Args:
        root: the checkout's root folder.

    Returns:
        For each room, the rooms and third-party top-level modules it imports, each mapped to
        the files (relative to ``root``) that import it. A room's imports of itself are left out.
    """
    graph: dict[str, dict[str, set[str]]] = {}
    for top in TOP_PACKAGES:
        for path in sorted((root / top).rglob("*.py")):
            src = room_of(_module_name(path))
            assert src is not None
            edges = graph.setdefault(src, {})
            for module in _imports(path):
                dst = room_of(module)
                if dst is None:
                    dst = "~" + module.split(".")[0]  # third party / standard library
                elif dst == "harness" and src.startswith("harness.") and module != "harness":
                    continue  # `from harness import x` resolved above as harness.x
                if dst != src:
                    edges.setdefault(dst, set()).add(str(path.relative_to(root)))
    return graph


def violations(graph: dict[str, dict[str, set[str]]]) -> list[str]:
    """The layering rules ``graph`` breaks, one line each (empty when clean).

    The rules: no two rooms import each other; ``harness.config`` imports no other room of
    harness; nothing but ``harness.cli`` and the entry modules imports ``harness.commands``
    from below it; ``reports`` imports neither harness nor torch; ``fileio`` imports nothing
    of the project; ``power`` imports nothing of harness.
    """
    found: list[str] = []
    project = {room for room in graph}

    def deps(room: str) -> dict[str, set[str]]:
        return graph.get(room, {})

    for a in sorted(project):
        for b in sorted(deps(a)):
            if b in project and a < b and a in deps(b):
                found.append(f"{a} <-> {b}: {sorted(deps(a)[b])[0]} / {sorted(deps(b)[a])[0]}")
    for b, files in deps("harness.config").items():
        if b.startswith("harness"):
            found.append(f"harness.config imports {b} ({sorted(files)[0]})")
    above_commands = {"harness", "harness.cli", "harness.__main__", "harness.commands",
                      "harness.train", "harness.infer"}
    for a in sorted(project):
        if a.startswith("harness.") and a not in above_commands and "harness.commands" in deps(a):
            found.append(f"{a} imports harness.commands ({sorted(deps(a)['harness.commands'])[0]})")
    for b, files in deps("reports").items():
        if b.startswith("harness") or b in ("harness", "~torch"):
            found.append(f"reports imports {b.lstrip('~')} ({sorted(files)[0]})")
    for b, files in deps("fileio").items():
        if b in project:
            found.append(f"fileio imports {b} ({sorted(files)[0]})")
    for b, files in deps("power").items():
        if b.startswith("harness"):
            found.append(f"power imports {b} ({sorted(files)[0]})")
    return found


def _below_commands(root: Path) -> Iterator[tuple[Path, ast.AST]]:
    """(path, parsed module) of every module of ``harness`` below ``harness/commands/``.

    Left out: ``harness/commands/`` and the top modules (``cli``, ``config``, ``train``,
    ``infer``, ...), which sit at or above the commands.
    """
    for path in sorted((root / "harness").rglob("*.py")):
        rel = path.relative_to(root)
        if len(rel.parts) == 2 or rel.parts[1] == "commands":
            continue
        yield path, ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def job_takers(root: Path = ROOT) -> list[str]:
    """Functions below ``harness/commands/`` with a parameter annotated ``JobConfig``.

    Args:
        root: the checkout's root folder.

    Returns:
        ``path:line name`` for each (methods included; ``JobConfig | None`` counts too).
    """
    hits = []
    for path, tree in _below_commands(root):
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                args = node.args.posonlyargs + node.args.args + node.args.kwonlyargs
                if any(a.annotation is not None and "JobConfig" in ast.unparse(a.annotation)
                       for a in args):
                    hits.append(f"{path.relative_to(root)}:{node.lineno} {node.name}")
    return hits


def model_builders(root: Path = ROOT) -> list[str]:
    """Places in ``harness`` outside ``harness/model/`` that build a generator themselves.

    Args:
        root: the checkout's root folder.

    Returns:
        ``path:line name`` for each call of one of :data:`MODEL_BUILDERS` (empty when every
        generator is built through ``make_generator``).
    """
    hits = []
    for path in sorted((root / "harness").rglob("*.py")):
        rel = path.relative_to(root)
        if rel.parts[1] == "model":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
            if isinstance(node, ast.Call):
                f = node.func
                name = f.id if isinstance(f, ast.Name) else f.attr if isinstance(
                    f, ast.Attribute) else None
                if name in MODEL_BUILDERS:
                    hits.append(f"{rel}:{node.lineno} {name}")
    return hits


def main() -> int:
    """Print the graph (project rooms only) and the violations; 1 if there are any."""
    graph = import_graph()
    for room in sorted(graph):
        inner = sorted(b for b in graph[room] if not b.startswith("~"))
        print(f"{room:28s} -> {', '.join(inner) if inner else '(nothing of the project)'}")
    found = violations(graph)
    print()
    print("\n".join(found) if found else "layering: clean")
    takers = job_takers()
    print(f"\n{len(takers)} function(s) below harness/commands/ take the whole JobConfig "
          f"(at most {MAX_JOB_TAKERS}):")
    print("\n".join(f"  {t}" for t in takers))
    builders = model_builders()
    print("\n".join(f"builds a generator outside harness/model/: {b}" for b in builders)
          or "generators: built through harness.model.generators.make_generator only")
    return 1 if found or len(takers) > MAX_JOB_TAKERS or builders else 0


if __name__ == "__main__":
    sys.exit(main())
