"""Export a quantized model to the packed format (SPEC.md): real 1-/2-bit weights on disk."""

import hashlib
import json
import tempfile
from pathlib import Path

import numpy as np
import torch
from safetensors.numpy import save_file

from xtc.errors import XtcError
from xtc.packed import bits as packing
from xtc.packed.layout import (FORMAT, FORMAT_VERSION, META_FORMAT, META_HEADER, META_VERSION, TERNARY_PACKINGS,
                               TOKENIZER_FILES, WEIGHTS_FILE, weight_encoding)
from xtc.quant.apply import quantized_modules
from xtc.quant.config import recorded_quant_config
from xtc.quant.modules import QuantLinear
from xtc.quant.primitives import weight_codes
from xtc.rundir import publish


# config keys not stored in the header's architecture: the quantization config has its own field, and
# _name_or_path is the folder the model was loaded from (config.json omits it too; with it, exports of
# one model from two folders differed)
_NOT_ARCHITECTURE = ("xtc_quantization", "_name_or_path")


def _rows(t: np.ndarray) -> np.ndarray:
    return t.reshape(t.shape[0], -1)  # (rows, cols)


def _input_bits(module) -> int | None:
    """A quantized module's activation bits (an embedding has no inputs to quantize)."""
    return module.spec.act_bits if isinstance(module, QuantLinear) else None


def _quantized_entries(name: str, weight: torch.Tensor, module, ternary: str) -> tuple[dict, dict]:
    """Stored tensors and header entry of one quantized weight: the codes and scales it was trained with."""
    spec = module.spec
    codes, scale = weight_codes(weight.detach(), spec.weight_bits, spec.granularity, spec.group_size)
    codes = _rows(codes.numpy())
    scale = scale.reshape(scale.shape[0], scale.shape[1]).numpy().astype(np.float32)  # (R, G)
    encoding = weight_encoding(spec.weight_bits, spec.granularity, _input_bits(module), ternary)
    if encoding == "binary":
        stored = {f"{name}.bits": packing.pack_signs(codes)}
    elif encoding == "ternary2":
        stored = {f"{name}.codes2": packing.pack_ternary2(codes)}
    elif encoding == "ternary_base3":
        stored = {f"{name}.trits": packing.pack_trits(codes)}
    else:
        assert encoding == "int8_row", encoding
        stored = {f"{name}.int8": codes.astype(np.int8)}
    stored[f"{name}.scale"] = scale
    entry = {"encoding": encoding, "shape": list(weight.shape), "bits": spec.weight_bits,
             "granularity": spec.granularity, "group_size": spec.group_size}
    return stored, entry


def _int8_rows(name: str, tensor: torch.Tensor) -> tuple[dict, dict]:
    values = _rows(tensor.detach().float().numpy())
    scale = np.abs(values).max(axis=1, keepdims=True) / 127  # (rows, 1)
    scale = np.where(scale > 0, scale, 1.0).astype(np.float32)
    codes = np.clip(np.round(values / scale), -127, 127).astype(np.int8)
    return {f"{name}.int8": codes, f"{name}.scale": scale}, {"encoding": "int8_row", "shape": list(tensor.shape)}


def export(model, out_dir: str | Path, tokenizer=None, *, ternary: str = "ternary2",
           int8_tensors: tuple[str, ...] = (), kept: str | None = None) -> Path:
    """Write ``model`` (quantized with ``quantize_``) packed into ``out_dir``.

    ``model`` is an in-memory model or a stage folder (its tokenizer comes with
    it; pass ``tokenizer`` for an in-memory model). Kept tensors are stored as
    the quantization config's ``kept`` says (the precision the model was trained and
    evaluated in), or as ``kept`` (float16 or float32) when given; those named in
    ``int8_tensors`` in int8 with a scale per row (both overrides change the model:
    evaluate the packed folder).
    """
    from xtc.models import load_model, load_tokenizer

    if kept is not None and kept not in ("fp16", "fp32"):
        raise XtcError(f"unknown kept-tensor dtype {kept!r}; valid: fp16, fp32")
    if ternary not in TERNARY_PACKINGS:
        raise XtcError(f"unknown ternary packing {ternary!r}; valid: {', '.join(TERNARY_PACKINGS)}")
    if isinstance(model, (str, Path)):
        source = Path(model)
        tokenizer = tokenizer or load_tokenizer(source)
        model, _ = load_model(source)
    if tokenizer is None:
        raise XtcError("export of an in-memory model needs its tokenizer")
    quantized = dict(quantized_modules(model))
    if not quantized:
        raise XtcError("the model is not quantized: quantize it (xtc.quantize_ or an xtc run stage) first")
    unstorable = {name: m for name, m in quantized.items() if m.spec.weight_bits is not None and
                  weight_encoding(m.spec.weight_bits, m.spec.granularity, _input_bits(m)) is None}
    if unstorable:
        name, module = next(iter(unstorable.items()))
        acts = _input_bits(module)
        raise XtcError(f"the packed format stores 1- and 2-bit weights, and 8-bit weights with one scale per row "
                       f"and full-precision inputs; {name} has {module.spec.weight_bits}-bit weights "
                       f"({module.spec.granularity}{f', {acts}-bit inputs' if acts else ''}; {len(unstorable)} such "
                       "modules): keep the stage folder (it evaluates as trained) or change its quantization rule")
    trained_fp16 = recorded_quant_config(model.config.xtc_quantization).kept == "fp16"
    kept = kept or ("fp16" if trained_fp16 else "fp32")
    ruled = [n for n in int8_tensors if n.removesuffix(".weight") in quantized]
    if ruled:
        raise XtcError(f"int8_tensors: {ruled[0]} is already stored by its quantization rule "
                       f"({quantized[ruled[0].removesuffix('.weight')].spec.weight_bits}-bit)")

    tensors, entries = {}, {}
    for name, tensor in model.state_dict().items():
        module = name.removesuffix(".weight")
        if name.endswith(".weight") and module in quantized and quantized[module].spec.weight_bits:
            stored, entry = _quantized_entries(name, tensor, quantized[module], ternary)
        elif name in int8_tensors:
            stored, entry = _int8_rows(name, tensor)
        elif tensor.is_floating_point():
            values = tensor.detach().half() if trained_fp16 else tensor.detach()  # what the model computes with
            dtype = torch.float16 if kept == "fp16" else torch.float32
            stored, entry = {name: values.to(dtype).numpy()}, {"encoding": kept, "shape": list(tensor.shape)}
        else:
            continue  # integer buffers (position ids) are rebuilt from the config
        tensors.update(stored)
        entries[name] = entry
    missing = set(int8_tensors) - set(entries)
    if missing:
        raise XtcError(f"int8_tensors names no tensor of the model: {', '.join(sorted(missing))}")

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out, prefix=".export-") as scratch:
        tmp = Path(scratch)  # same filesystem as out: files move into place by rename
        tokenizer.save_pretrained(tmp)
        for f in tmp.iterdir():
            if f.name not in TOKENIZER_FILES:
                f.unlink()
        header = {
            "architecture": {k: v for k, v in model.config.to_dict().items() if k not in _NOT_ARCHITECTURE},
            "quantization": model.config.xtc_quantization,
            "tensors": entries,
            "tokenizer_sha256": {f.name: hashlib.sha256(f.read_bytes()).hexdigest() for f in sorted(tmp.iterdir())},
        }
        metadata = {META_FORMAT: FORMAT, META_VERSION: FORMAT_VERSION, META_HEADER: json.dumps(header)}
        save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, tmp / WEIGHTS_FILE, metadata=metadata)
        publish(tmp, out)
    return out
