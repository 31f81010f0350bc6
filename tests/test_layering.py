"""The layers of xtc (ARCHITECTURE.md), enforced: every import, function-level ones included, goes to
the same layer or a lower one, and no chain of imports comes back to where it started."""

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
ARCHITECTURE = Path(__file__).resolve().parents[1] / "ARCHITECTURE.md"

# bottom-up; a module may import its own layer and the ones above it in this list
LAYERS = {
    "base": ["xtc.errors", "xtc.arch", "xtc.schema", "xtc.provenance", "xtc.rundir", "xtc.text", "xtc.progress"],
    "config": ["xtc.quant.config", "xtc.recipe", "xtc.data.tasks", "xtc.layer_choice"],
    "quant": ["xtc.quant", "xtc.quant.primitives", "xtc.quant.modules", "xtc.quant.apply", "xtc.quant.runtime_order"],
    "packed": ["xtc.packed", "xtc.packed.layout", "xtc.packed.bits", "xtc.packed.codecs", "xtc.packed.header",
               "xtc.packed.read", "xtc.packed.export"],
    "models and engine": ["xtc.models", "xtc.onnx_import", "xtc.recipe_io", "xtc.checkpoint", "xtc.hf_export",
                          "xtc.size", "xtc.kernels", "xtc.runtime", "xtc.engine", "xtc.bench"],
    "training": ["xtc.data", "xtc.data.glue", "xtc.data.batching", "xtc.data.metrics", "xtc.data.augment",
                 "xtc.distill", "xtc.reduce", "xtc.vocab", "xtc.teacher_cache", "xtc.evaluation", "xtc.predict", "xtc.train",
                 "xtc.deepspeed_config", "xtc.packed_eval"],
    "pipeline": ["xtc.pipeline", "xtc.preflight", "xtc.compression", "xtc.study", "xtc.study.config", "xtc.study.runner",
                 "xtc.study.report"],
    "cli": ["xtc", "xtc.cli", "xtc.__main__"],
}
LAYER_OF = {module: i for i, modules in enumerate(LAYERS.values()) for module in modules}


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(SRC.rglob("*.py"))}


def imports_in(code: str, name: str, is_package: bool = False) -> set[str]:
    """Every xtc module that the source ``code`` of module ``name`` imports, at any depth (functions, branches)."""
    package = name if is_package else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(code)):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from . import x, from ..y import z
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}" if base else anchor
            # `from xtc.packed import bits` imports the module xtc.packed.bits
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names]
        else:
            continue
        found.update(t for t in targets if t == "xtc" or t.startswith("xtc."))
    return found - {name}


def imports_of(name: str) -> set[str]:
    path = MODULES[name]
    return imports_in(path.read_text(), name, path.name == "__init__.py")


GRAPH = {name: imports_of(name) for name in MODULES}


def test_every_module_has_a_layer():
    assert sorted(set(MODULES) - set(LAYER_OF)) == []
    assert sorted(set(LAYER_OF) - set(MODULES)) == []  # no stale names in the table


def test_no_import_goes_up_the_layers():
    layer_names = list(LAYERS)
    upward = [f"{m} ({layer_names[LAYER_OF[m]]}) imports {t} ({layer_names[LAYER_OF[t]]})"
              for m, targets in GRAPH.items() for t in sorted(targets) if LAYER_OF[t] > LAYER_OF[m]]
    assert upward == []


def test_no_import_cycles():
    cycles, state = [], {}  # state: 1 on the current path, 2 done

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for target in sorted(GRAPH[node]):
            if state.get(target) == 1:
                cycles.append(" -> ".join([*path[path.index(target):], target]))
            elif target not in state:
                visit(target, [*path, target])
        state[node] = 2

    for name in sorted(GRAPH):
        if name not in state:
            visit(name, [name])
    assert cycles == []


def test_the_checker_sees_every_form_of_import():
    code = ("import xtc.errors\nfrom xtc.packed import bits as packing\n"
            "def f():\n    if True:\n        from xtc.cli import main\n    from .. import arch\n    from .codecs import CODECS\n")
    assert imports_in(code, "xtc.packed.read") == {"xtc.errors", "xtc.packed.bits", "xtc.cli", "xtc.arch",
                                                   "xtc.packed.codecs"}
    assert "xtc.pipeline" in GRAPH["xtc.compression"]  # imported inside compress()


@pytest.mark.parametrize("layer", LAYERS)
def test_architecture_md_names_every_module_of_the_layer(layer):
    text = ARCHITECTURE.read_text()
    missing = [m for m in LAYERS[layer] if f"`{m}`" not in text]
    assert missing == [], f"ARCHITECTURE.md does not place {missing} in layer {layer}"
