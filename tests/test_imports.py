"""Import hygiene: no side effects on import, heavy frameworks only in the edge modules, layering."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PKG = Path(__file__).resolve().parent.parent / "arvid_ray"

# Modules allowed to import each framework (DESIGN.md). Paths are relative module names.
RAY_OK = {"ingest", "clips", "tokens", "data", "train.worker", "launch", "sweep", "searcher", "evaluate", "preflight",
          "console", "ray_session"}  # console: quiets the frameworks' own logging where Ray starts
MLFLOW_OK = {"tracking.tracker", "tracking.journal", "tracking.server", "sweep"}  # the tracking package
OPTUNA_OK = {"sweep", "searcher", "console"}

# Layer of each top-level module/subpackage: a module may import only same-or-lower layers.
LAYERS = [
    {"config", "schemas", "storage", "console", "cuda_check", "ray_session"},
    {"video"},
    {"tokenizer", "ingest"},
    {"model", "tokens", "clips"},
    {"data", "objectives", "sampling", "tracking", "metrics"},
    {"train"},
    {"launch", "evaluate", "report", "preflight"},
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
    assert not missing, f"add these modules to LAYERS in this test (and DESIGN.md): {missing}"


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
