"""The folder tree is the architecture: each domain one package, placed in a layer; a package
imports only packages of lower layers (data flows facts -> plan -> steps -> records -> report),
no module imports another in a circle, and the package root holds only the base layer."""
import ast
from collections import defaultdict
from pathlib import Path

from dpdeploy import paths

# layer -> packages; a package may import from strictly lower layers (and within itself)
LAYERS = {
    0: {"base"},                          # runner (the one module that runs commands), fsutil, paths
    1: {"host", "inenv", "fleet"},        # facts + probe; code run inside the env; the Ansible driver
    2: {"plan", "records"},               # matrix, settings, rules; the on-disk records
    3: {"envs", "state"},                 # locks and envs; the state root's lock and debris
    4: {"build", "diagnose"},             # the build; live checks, log signatures, drift
    5: {"inference", "container"},
    6: {"ui", "bundle"},                  # terminal output; offline bundles (make, check, unpack)
    7: {"report"},
    8: {"steps"},
    9: {"cli"},
}
LAYER = {pkg: n for n, pkgs in LAYERS.items() for pkg in pkgs}
BASE = {"__init__", "runner", "fsutil", "paths"}


def modules() -> dict[str, Path]:
    found = {}
    for path in paths.PACKAGE.rglob("*.py"):
        rel = path.relative_to(paths.ROOT).with_suffix("")
        name = ".".join(rel.parts)
        found[name.removesuffix(".__init__")] = path
    return found


def imports(path: Path, known: dict[str, Path]) -> set[str]:
    """The dpdeploy modules ``path`` imports (``from a import b`` counts b when b is a module)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "dpdeploy":
            for alias in node.names:
                full = f"{node.module}.{alias.name}"
                out.add(full if full in known else node.module)
        elif isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.split(".")[0] == "dpdeploy"}
    return out


def package(module: str, known: dict[str, Path]) -> str:
    parts = module.split(".")
    if len(parts) == 1 or (len(parts) == 2 and known[module].name != "__init__.py"):
        return "base"
    return parts[1]


def graph() -> dict[str, set[str]]:
    known = modules()
    return {m: imports(p, known) - {m} for m, p in known.items()}


def test_every_package_has_a_layer_and_the_root_holds_only_the_base():
    known = modules()
    packages = {package(m, known) for m in known}
    assert packages <= set(LAYER), f"place these packages in LAYERS: {sorted(packages - set(LAYER))}"
    root = {p.stem for p in paths.PACKAGE.glob("*.py")}
    assert root <= BASE, f"modules at the package root that belong in a domain folder: {sorted(root - BASE)}"


def test_no_upward_or_sideways_imports():
    known = modules()
    bad = []
    for module, targets in graph().items():
        here = package(module, known)
        for target in targets:
            there = package(target, known)
            if there != here and LAYER[there] >= LAYER[here]:
                bad.append(f"{module} -> {target} ({here} layer {LAYER[here]}, {there} layer {LAYER[there]})")
    assert not bad, "imports against the layers:\n" + "\n".join(sorted(bad))


def test_no_import_circles():
    edges = graph()
    state: dict[str, int] = defaultdict(int)   # 0 new, 1 on the stack, 2 done
    cycles = []

    def visit(node, stack):
        state[node] = 1
        for nxt in sorted(edges.get(node, ())):
            if state[nxt] == 1:
                cycles.append(" -> ".join(stack[stack.index(nxt):] + [nxt]))
            elif state[nxt] == 0:
                visit(nxt, stack + [nxt])
        state[node] = 2

    for node in sorted(edges):
        if state[node] == 0:
            visit(node, [node])
    assert not cycles, "import circles:\n" + "\n".join(cycles)


def test_the_engine_never_imports_the_task_file():
    for module, path in modules().items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        names = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        names |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
        assert "tasks" not in names, f"{module} imports tasks.py (tasks.py imports the engine)"
