"""xtc: extreme compression (1-/2-bit weights, fewer layers) of BERT-family encoders.

The public API is imported lazily so that ``import xtc`` stays light (no torch
or transformers until a function that needs them is used).
"""

from importlib import import_module

# public name -> module that defines it
_EXPORTS = {
    "XtcError": "xtc.errors",
    "GLUE_TASKS": "xtc.data.tasks",
    "get_task": "xtc.data.tasks",
    "load_examples": "xtc.data.glue",
    "compute_metrics": "xtc.data.metrics",
    "resolve_model": "xtc.models",
    "load_model": "xtc.models",
    "FinetuneConfig": "xtc.recipe",
    "EvalConfig": "xtc.recipe",
    "RunConfig": "xtc.recipe",
    "Recipe": "xtc.recipe",
    "load_recipe": "xtc.recipe_io",
    "finetune": "xtc.train",
    "evaluate": "xtc.evaluation",
    "run_recipe": "xtc.pipeline",
    "compress": "xtc.compression",
    "CompressResult": "xtc.compression",
    "quantize_": "xtc.quant.apply",
    "QuantConfig": "xtc.quant.config",
    "QuantRule": "xtc.quant.config",
    "reduce_layers": "xtc.reduce",
    "DistillationLoss": "xtc.distill",
    "export": "xtc.compression",
    "load": "xtc.engine",
    "size_report": "xtc.size",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str):
    if name == "__version__":  # on first use: importlib.metadata is a sizeable part of a fresh process's start
        return import_module("xtc.provenance").VERSION
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'xtc' has no attribute {name!r}")
