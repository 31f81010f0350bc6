"""Write a quantized model in the packed format (SPEC.md): real 1-/2-bit weights on disk.

The file is the model as trained and evaluated: each quantized weight stores the
codes and scales its quantizer computes, every kept tensor the values it computes
with. It is written to a temporary folder and renamed into place, so a failed
export leaves nothing behind.
"""

import hashlib
import json
import tempfile
from pathlib import Path

import numpy as np
import torch
from safetensors.numpy import save_file

from xtc.errors import XtcError
from xtc.packed.codecs import CODECS, KEPT, TERNARY_PACKINGS, unstorable, weight_encoding
from xtc.packed.layout import FORMAT, FORMAT_VERSION, META_FORMAT, META_HEADER, META_VERSION, TOKENIZER_FILES, WEIGHTS_FILE
from xtc.packed.read import tensor_digests
from xtc.quant.apply import quantized_modules
from xtc.quant.config import recorded_quant_config
from xtc.quant.modules import QuantLinear
from xtc.quant.primitives import weight_codes
from xtc.rundir import publish

# config keys not stored in the header's architecture: the quantization config has its own field, and
# _name_or_path is the folder the model was loaded from (config.json omits it too; with it, exports of
# one model from two folders differed)
_NOT_ARCHITECTURE = ("xtc_quantization", "_name_or_path")


def write_packed(model, out_dir: str | Path, tokenizer, *, ternary: str = "ternary2",
                 int8_tensors: tuple[str, ...] = (), kept: str | None = None) -> Path:
    """Write ``model`` (in memory, quantized with ``quantize_``) and ``tokenizer`` packed into ``out_dir``.

    Kept tensors are stored as the quantization config's ``kept`` says (the precision the model was
    trained and evaluated in), or as ``kept`` (fp16 or fp32) when given; those named in ``int8_tensors``
    in int8 with a scale per row (both overrides change the model: evaluate the packed folder).
    """
    if kept is not None and kept not in KEPT:
        raise XtcError(f"unknown kept-tensor dtype {kept!r}; valid: {', '.join(KEPT)}")
    if ternary not in TERNARY_PACKINGS:
        raise XtcError(f"unknown ternary packing {ternary!r}; valid: {', '.join(TERNARY_PACKINGS)}")
    quantized = _storable_quantized(model)
    trained_fp16 = recorded_quant_config(model.config.xtc_quantization).kept == "fp16"
    ruled = [n for n in int8_tensors if n.removesuffix(".weight") in quantized]
    if ruled:
        raise XtcError(f"int8_tensors: {ruled[0]} is already stored by its quantization rule "
                       f"({quantized[ruled[0].removesuffix('.weight')].spec.weight_bits}-bit)")
    tensors, entries = _encoded(model, quantized, ternary, int8_tensors, kept or ("fp16" if trained_fp16 else "fp32"),
                                trained_fp16)
    missing = set(int8_tensors) - set(entries)
    if missing:
        raise XtcError(f"int8_tensors names no tensor of the model: {', '.join(sorted(missing))}")
    return _write(Path(out_dir), model, tokenizer, tensors, entries)


def _storable_quantized(model) -> dict:
    quantized = dict(quantized_modules(model))
    if not quantized:
        raise XtcError("the model is not quantized: quantize it (xtc.quantize_ or an xtc run stage) first")
    problems = {name: unstorable(m.spec, isinstance(m, QuantLinear)) for name, m in quantized.items()}
    problems = {name: p for name, p in problems.items() if p}
    if problems:
        name, problem = next(iter(problems.items()))
        raise XtcError(f"cannot export {name} ({len(problems)} such modules): {problem}; keep the stage folder "
                       "(it evaluates as trained) or change its quantization rule")
    return quantized


def _encoded(model, quantized: dict, ternary: str, int8_tensors, kept: str, trained_fp16: bool) -> tuple[dict, dict]:
    """({stored name: array}, {logical name: header entry}) of every floating tensor of ``model``."""
    tensors, entries = {}, {}
    for name, tensor in model.state_dict().items():
        module = quantized.get(name.removesuffix(".weight")) if name.endswith(".weight") else None
        if module is not None and module.spec.weight_bits:
            stored, entry = _quantized_weight(tensor, module, ternary)
        elif name in int8_tensors:
            stored, entry = _rounded_int8_rows(tensor), {"encoding": "int8_row", "shape": list(tensor.shape)}
        elif tensor.is_floating_point():
            values = tensor.detach().half() if trained_fp16 else tensor.detach()  # what the model computes with
            stored, entry = CODECS[kept].encode(values.float().numpy()), {"encoding": kept, "shape": list(tensor.shape)}
        else:
            continue  # integer buffers (position ids) are rebuilt from the config
        problem = CODECS[entry["encoding"]].invalid(stored)
        if problem:
            raise XtcError(f"cannot export {name}: it {problem}")
        tensors.update({name + suffix: array for suffix, array in stored.items()})
        entries[name] = entry
    return tensors, entries


def _rows(t: np.ndarray) -> np.ndarray:
    return t.reshape(t.shape[0], -1)  # (rows, cols)


def _rounded_int8_rows(tensor: torch.Tensor) -> dict:
    """A kept tensor rounded at export to int8 rows (not trained so): scale = max |row| / 127, so that
    every value is within half a step (the trained 8-bit quantizer's max / 128 clips the maximum)."""
    values = _rows(tensor.detach().float().numpy())
    scale = np.abs(values).max(axis=1, keepdims=True) / 127  # (rows, 1)
    scale = np.where(scale > 0, scale, 1.0).astype(np.float32)
    return CODECS["int8_row"].encode(np.clip(np.round(values / scale), -127, 127), scale)


def _quantized_weight(weight: torch.Tensor, module, ternary: str) -> tuple[dict, dict]:
    """Stored tensors (by suffix) and header entry of one quantized weight: the codes and scales it was
    trained with, and for a Linear the activation settings it runs with."""
    spec = module.spec
    codes, scale = weight_codes(weight.detach(), spec.weight_bits, spec.granularity, spec.group_size)
    linear = isinstance(module, QuantLinear)
    encoding = weight_encoding(spec.weight_bits, spec.granularity, spec.act_bits if linear else None, ternary)
    stored = CODECS[encoding].encode(_rows(codes.numpy()), scale.reshape(scale.shape[0], scale.shape[1]).numpy())
    entry = {"encoding": encoding, "shape": list(weight.shape), "bits": spec.weight_bits,
             "granularity": spec.granularity, "group_size": spec.group_size,
             "act_bits": spec.act_bits if linear and encoding != "int8_row" else None,
             "act_mode": spec.act_mode if linear and encoding != "int8_row" else None}
    return stored, entry


def _write(out: Path, model, tokenizer, tensors: dict, entries: dict) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=f".{out.name}.export-") as scratch:
        tmp = Path(scratch)  # same filesystem as out: the files move into place by rename, once all are written
        tokenizer.save_pretrained(tmp)
        for f in tmp.iterdir():
            if f.name not in TOKENIZER_FILES:
                f.unlink()
        tensors = {k: np.ascontiguousarray(v) for k, v in tensors.items()}
        header = {
            "architecture": {k: v for k, v in model.config.to_dict().items() if k not in _NOT_ARCHITECTURE},
            "quantization": model.config.xtc_quantization,
            "tensors": entries,
            "tokenizer_sha256": {f.name: hashlib.sha256(f.read_bytes()).hexdigest() for f in sorted(tmp.iterdir())},
            "tensor_sha256": tensor_digests(tensors),
        }
        metadata = {META_FORMAT: FORMAT, META_VERSION: FORMAT_VERSION, META_HEADER: json.dumps(header)}
        save_file(tensors, tmp / WEIGHTS_FILE, metadata=metadata)
        out.mkdir(exist_ok=True)
        publish(tmp, out)
    return out
