"""Import hygiene: no side effects on import, heavy frameworks only in the edge modules, layering."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PKG = Path(__file__).resolve().parents[2] / "arvid_ray"

# Modules allowed to import each framework (docs/design.md). Paths are relative module names.
RAY_OK = {"ingest.stage", "clips", "tokens", "data", "train.worker", "launch", "sweep.driver", "sweep.tuner", "searcher",
          "evaluate.run", "evaluate.during", "preflight", "console", "ray_session", "node_types"}  # console: quiets the frameworks' own logging where Ray starts
MLFLOW_OK = {"tracking.tracker", "tracking.shipper", "tracking.journal", "tracking.server", "tracking.runs"}  # the tracking package
OPTUNA_OK = {"searcher", "console"}

# Layer of each top-level module/subpackage: a module may import only same-or-lower layers.
LAYERS = [
    {"config", "schemas", "storage", "console", "cuda_check", "ray_session", "node_types"},  # config: its own rows below
    {"video"},
    {"tokenizer", "ingest"},
    {"model", "tokens", "clips"},
    {"data", "objectives", "sampling", "tracking", "metrics", "runs"},  # runs: resolves the tracking URI
    {"train"},
    {"evaluate", "report", "preflight"},
    {"launch"},  # calls evaluation (the final-evaluation hook), never the reverse
    {"sweep", "search", "searcher"},
    {"cli"},
]
LAYER_OF = {name: i for i, names in enumerate(LAYERS) for name in names}


def _modules():
    for path in sorted(PKG.rglob("*.py")):
        rel = path.relative_to(PKG).with_suffix("")
        parts = [p for p in rel.parts if p != "__init__"]
        yield ".".join(parts) or "__init__", path


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def _module_edges() -> dict[str, set[str]]:
    """arvid_ray module → the arvid_ray modules it imports, at module granularity (a package is its
    __init__), from every import statement in the file: module level and inside functions alike, since a
    function-level import only postpones a circle to the first call. ``from pkg import sub`` points at
    the submodule ``pkg.sub`` when that is a module, else at ``pkg``."""
    files = {("arvid_ray." + mod) if mod != "__init__" else "arvid_ray": path for mod, path in _modules()}

    def known(name: str) -> str | None:  # the longest prefix of ``name`` that is one of our modules
        while name and name not in files:
            name = name.rpartition(".")[0]
        return name or None

    edges: dict[str, set[str]] = {}
    for mod, path in files.items():
        package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
        targets: set[str | None] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets.update(known(alias.name) for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative: from the package, up level - 1 packages
                    anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                    base = f"{anchor}.{base}" if base else anchor
                targets.update(known(f"{base}.{alias.name}") if f"{base}.{alias.name}" in files else known(base)
                               for alias in node.names)
        edges[mod] = {t for t in targets if t and t != mod}
    return edges


def _find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One import circle as [a, b, ..., a], or None (depth-first search, deterministic order)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(mod: str) -> list[str] | None:
        state[mod] = 1
        path.append(mod)
        for nxt in sorted(edges.get(mod, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        path.pop()
        state[mod] = 2
        return None

    for mod in sorted(edges):
        if mod not in state and (found := visit(mod)):
            return found
    return None


def test_no_import_cycles_between_modules():
    """Every arvid_ray module, one node each (so a circle inside one layer or one package counts too)."""
    edges, circles = _module_edges(), []
    while (cycle := _find_cycle(edges)) and len(circles) < 20:  # name each circle, not just the first
        circles.append(" → ".join(cycle))
        edges[cycle[-2]].discard(cycle[-1])
    assert not circles, "import circles (move what both sides need into a lower module):\n" + "\n".join(circles)


def test_cycle_finder_sees_a_function_level_circle():
    assert _find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert _find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


def test_frameworks_only_in_edge_modules():
    offenders = []
    for mod, path in _modules():
        for name in _imports(path):
            root = name.split(".")[0]
            for fw, allowed in (("ray", RAY_OK), ("mlflow", MLFLOW_OK), ("optuna", OPTUNA_OK)):
                if root == fw and mod not in allowed:
                    offenders.append(f"arvid_ray.{mod} imports {name}")
    assert not offenders, "\n".join(offenders)


def test_layering_points_downwards():
    offenders = []
    for mod, path in _modules():
        top = mod.split(".")[0]
        if top not in LAYER_OF:
            continue
        for name in _imports(path):
            if not name.startswith("arvid_ray."):
                continue
            target = name.split(".")[1]
            if target in LAYER_OF and LAYER_OF[target] > LAYER_OF[top]:
                offenders.append(f"arvid_ray.{mod} (layer {LAYER_OF[top]}) imports {name} (layer {LAYER_OF[target]})")
    assert not offenders, "\n".join(offenders)


def test_every_module_is_in_a_layer():
    missing = sorted({mod.split(".")[0] for mod, _ in _modules()} - set(LAYER_OF) - {"__init__"})
    assert not missing, f"add these modules to LAYERS in this test (and docs/design.md): {missing}"


def test_import_has_no_side_effects(tmp_path):
    code = (
        "import sys, os, logging\n"
        "before = set(os.listdir('.'))\n"
        "import arvid_ray, arvid_ray.config, arvid_ray.schemas, arvid_ray.cli\n"
        "import pkgutil, importlib\n"
        "for m in pkgutil.walk_packages(arvid_ray.__path__, 'arvid_ray.'):\n"
        "    importlib.import_module(m.name)\n"
        "heavy = sorted(k for k in ('ray', 'mlflow', 'optuna') if k in sys.modules)\n"
        "assert not heavy, heavy\n"
        "assert set(os.listdir('.')) == before\n"
        "assert not logging.getLogger().handlers\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


# Inside arvid_ray.config, one row per layer: a module imports only modules of rows above it (the
# sections never import each other), and nothing of arvid_ray outside the package.
CONFIG_LAYERS = [
    {"base"},  # ConfigError, range checks, field roles
    {"build"},  # dicts and dotted keys <-> dataclasses
    {"data", "model", "train", "evaluate", "sweep", "tracking"},  # the sections
    {"experiment"},  # ExperimentConfig
    {"load", "roles"},  # files and overrides; what the roles mean to the run name, MLflow and --resume
    {"__init__"},
]


def test_config_package_layers():
    rows = {name: i for i, names in enumerate(CONFIG_LAYERS) for name in names}
    files = sorted((PKG / "config").glob("*.py"))
    assert {p.stem for p in files} == set(rows), "add new config modules to CONFIG_LAYERS"
    offenders = []
    for path in files:
        for name in _imports(path):
            if not name.startswith("arvid_ray"):
                continue
            parts = name.split(".")
            if parts[:2] != ["arvid_ray", "config"] or len(parts) < 3:
                offenders.append(f"config.{path.stem} imports {name} (config imports nothing else of arvid_ray)")
            elif rows[parts[2]] >= rows[path.stem]:
                offenders.append(f"config.{path.stem} (row {rows[path.stem]}) imports {name} (row {rows[parts[2]]})")
    assert not offenders, "\n".join(offenders)


def test_config_modules_stay_small():
    big = {p.name: n for p in (PKG / "config").glob("*.py") if (n := len(p.read_text().splitlines())) > 400}
    assert not big, f"split these config modules by concern (~400 lines at most): {big}"
