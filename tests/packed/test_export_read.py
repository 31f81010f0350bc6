"""Export of a quantized bert-tiny, read back: exact quantized weights, validation of bad files."""

import copy
import hashlib
import json
import random
import re

import numpy as np
import pytest
import torch
from safetensors.numpy import save_file

from xtc.data.tasks import get_task
from xtc.errors import XtcError
from xtc.models import load_model, load_tokenizer
from xtc.compression import export
from xtc.packed.layout import WEIGHTS_FILE
from xtc.packed.read import read_packed
from xtc.quant.apply import quantize_, quantized_modules
from xtc.quant.config import QuantConfig, QuantRule
from xtc.quant.modules import QuantLinear
from xtc.quant.primitives import round_fp16
from xtc.engine import Engine
from xtc.runtime import load
from xtc.size import size_report


def sha256(array: np.ndarray) -> str:
    return hashlib.sha256(array.tobytes()).hexdigest()


def rewrite(folder, packed, stored=None, header=None, version="2"):
    """Write ``packed``'s file again with other tensors or header (digests of the given tensors kept valid)."""
    stored = dict(packed.stored) if stored is None else stored
    header = dict(packed.header if header is None else header)
    header["tensor_sha256"] = {k: sha256(v) for k, v in stored.items()}
    metadata = {"xtc_format": "xtc-packed", "xtc_format_version": version, "xtc_header": json.dumps(header)}
    save_file(stored, folder / WEIGHTS_FILE, metadata=metadata)


@pytest.fixture(scope="module")
def fp_model():
    model, _ = load_model("bert-tiny", get_task("RTE"))
    return model.eval()


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer("bert-tiny")


def quantized(fp_model, config):
    return quantize_(copy.deepcopy(fp_model), config)


@pytest.mark.parametrize("preset,ternary", [("w1a8", "ternary2"), ("w2a8", "ternary2"), ("w2a8", "ternary_base3")])
def test_round_trip_is_exact_for_quantized_weights(fp_model, tokenizer, tmp_path, preset, ternary):
    model = quantized(fp_model, preset)
    packed = read_packed(export(model, tmp_path, tokenizer, ternary=ternary))
    for name, module in quantized_modules(model):
        expected = (module.quantized_weight() if isinstance(module, QuantLinear)
                    else module(torch.arange(module.weight.shape[0]))).detach().numpy()
        assert np.array_equal(packed.dequantized(f"{name}.weight"), expected), name
    for name, tensor in model.state_dict().items():
        if packed.header["tensors"][name]["encoding"] == "fp16":
            assert np.allclose(packed.dequantized(name), tensor.numpy(), rtol=1e-3, atol=1e-4), name
    assert packed.header["quantization"] == model.config.xtc_quantization
    assert packed.header["architecture"]["num_hidden_layers"] == 2


def test_groups_that_do_not_divide_rows(fp_model, tokenizer, tmp_path):
    config = QuantConfig(rules=[QuantRule(pattern=r".*\.(query|intermediate\.dense)", weight_bits=2,
                                          granularity="group", group_size=48, act_bits=8)])
    model = quantized(fp_model, config)  # 128 and 512 inputs: the last group of each row is shorter
    packed = read_packed(export(model, tmp_path, tokenizer, ternary="ternary_base3"))
    for name, module in quantized_modules(model):
        assert np.array_equal(packed.dequantized(f"{name}.weight"), module.quantized_weight().detach().numpy())


def test_packed_file_is_small(fp_model, tokenizer, tmp_path):
    export(quantized(fp_model, "w1a8"), tmp_path, tokenizer)
    fp32_bytes = sum(t.numel() * 4 for t in fp_model.state_dict().values())
    # bert-tiny is mostly its 30522 x 128 word embeddings, packed at 1 bit + a scale per row
    assert (tmp_path / WEIGHTS_FILE).stat().st_size < fp32_bytes / 8


def test_int8_kept_tensors(fp_model, tokenizer, tmp_path):
    name = "bert.embeddings.token_type_embeddings.weight"
    packed = read_packed(export(quantized(fp_model, "w1a8"), tmp_path, tokenizer, int8_tensors=(name,)))
    original = fp_model.state_dict()[name].numpy()
    step = np.abs(original).max(axis=1, keepdims=True) / 127
    assert packed.header["tensors"][name]["encoding"] == "int8_row"
    assert (np.abs(packed.dequantized(name) - original) <= step / 2 + 1e-7).all()


def test_8_bit_rows_and_fp16_kept_tensors_store_the_trained_values(fp_model, tokenizer, tmp_path):
    """The preset's position embeddings and pooler are trained as 8-bit rows and the rest in float16:
    the default export stores exactly the values the fake-quant model computes with."""
    model = quantized(fp_model, "w1a8")
    packed = read_packed(export(model, tmp_path, tokenizer))
    entries = packed.header["tensors"]
    positions = model.bert.embeddings.position_embeddings
    assert entries["bert.embeddings.position_embeddings.weight"]["encoding"] == "int8_row"
    assert entries["bert.pooler.dense.weight"]["encoding"] == "int8_row"
    expected = positions(torch.arange(positions.num_embeddings)).detach().numpy()
    assert np.array_equal(packed.dequantized("bert.embeddings.position_embeddings.weight"), expected)
    assert np.array_equal(packed.dequantized("bert.pooler.dense.weight"),
                          model.bert.pooler.dense.quantized_weight().detach().numpy())
    layer_norm = model.bert.embeddings.LayerNorm
    assert entries["bert.embeddings.LayerNorm.weight"]["encoding"] == "fp16"
    assert np.array_equal(packed.dequantized("bert.embeddings.LayerNorm.weight"),
                          round_fp16(layer_norm.weight).detach().numpy())
    with pytest.raises(XtcError, match="already stored by its quantization rule"):
        export(model, tmp_path / "again", tokenizer, int8_tensors=("bert.pooler.dense.weight",))


def test_export_refuses_a_full_precision_model(fp_model, tokenizer, tmp_path):
    with pytest.raises(XtcError, match="not quantized"):
        export(fp_model, tmp_path, tokenizer)


def test_export_refuses_weights_wider_than_2_bits(fp_model, tokenizer, tmp_path):
    # 3..8-bit weights train (fake quantization) but have no packed encoding
    config = QuantConfig(rules=[QuantRule(pattern=r".*\.query", weight_bits=4)])
    with pytest.raises(XtcError, match=r"cannot export bert\.encoder\.layer\.0\.attention\.self\.query \(2 such "
                                       r"modules\): 4-bit weights \(tensor\): the packed format stores 1- and 2-bit "
                                       r"weights, and 8-bit weights with one scale per row and full-precision inputs"):
        export(quantized(fp_model, config), tmp_path / "out", tokenizer)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("rule, reason", [
    (dict(weight_bits=1, act_bits=8, act_mode="static"), r"static activation ranges \(act_mode: static\)"),
    (dict(weight_bits=1, act_bits=4), r"4-bit inputs: the packed runtime runs 1- and 2-bit Linears on 8-bit inputs"),
    (dict(weight_bits=2), r"full-precision inputs: the packed runtime runs 1- and 2-bit Linears on 8-bit inputs"),
])
def test_export_refuses_what_the_runtime_cannot_run_and_writes_nothing(fp_model, tokenizer, tmp_path, rule, reason):
    model = quantized(fp_model, QuantConfig(rules=[QuantRule(pattern=r".*\.query", **rule)]))
    with pytest.raises(XtcError, match=reason):
        export(model, tmp_path / "out", tokenizer)
    assert list(tmp_path.iterdir()) == []  # no folder, no temporary left behind
    model.save_pretrained(tmp_path / "stage")
    with pytest.raises(XtcError, match=reason):  # xtc size of the stage folder: the same reason, not a crash
        size_report(tmp_path / "stage")


def test_header_records_each_linears_activation_settings(packed_dir):
    entries = read_packed(packed_dir).header["tensors"]
    query = entries["bert.encoder.layer.0.attention.self.query.weight"]
    assert (query["bits"], query["act_bits"], query["act_mode"]) == (2, 8, "dynamic")  # w2a8
    words = entries["bert.embeddings.word_embeddings.weight"]
    assert (words["bits"], words["act_bits"], words["act_mode"]) == (2, None, None)


def test_export_refuses_nan_in_a_kept_tensor(fp_model, tokenizer, tmp_path):
    model = quantized(fp_model, "w1a8")
    with torch.no_grad():
        model.bert.embeddings.LayerNorm.weight[3] = float("nan")
    with pytest.raises(XtcError, match=r"cannot export bert\.embeddings\.LayerNorm\.weight: it holds NaN"):
        export(model, tmp_path / "out", tokenizer)
    assert not (tmp_path / "out").exists()


# ---- bad files: one clear error, never a crash -------------------------------------------------

@pytest.fixture(scope="module")
def packed_dir(fp_model, tokenizer, tmp_path_factory):
    return export(quantized(fp_model, "w2a8"), tmp_path_factory.mktemp("packed"), tokenizer)


def copy_of(packed_dir, tmp_path):
    import shutil

    target = tmp_path / "copy"
    shutil.copytree(packed_dir, target)
    return target


def test_truncated_and_corrupted_files(packed_dir, tmp_path):
    folder = copy_of(packed_dir, tmp_path)
    data = (folder / WEIGHTS_FILE).read_bytes()
    rng = random.Random(0)
    for _ in range(40):
        cut = rng.randrange(len(data))
        (folder / WEIGHTS_FILE).write_bytes(data[:cut])
        with pytest.raises(XtcError):
            read_packed(folder)
    for _ in range(60):  # flips in the header and in the data: an XtcError or a valid model
        corrupted = bytearray(data)
        for _ in range(rng.randrange(1, 8)):
            position = rng.randrange(min(len(data), 4096)) if rng.random() < 0.5 else rng.randrange(len(data))
            corrupted[position] = rng.randrange(256)
        (folder / WEIGHTS_FILE).write_bytes(bytes(corrupted))
        try:
            read_packed(folder)
        except XtcError:
            pass


def test_foreign_file_unknown_version_and_bad_codes(packed_dir, tmp_path):
    folder = copy_of(packed_dir, tmp_path)
    save_file({"w": np.zeros((2, 2), np.float32)}, folder / WEIGHTS_FILE)
    with pytest.raises(XtcError, match="not an xtc packed model"):
        read_packed(folder)
    packed = read_packed(packed_dir)
    stored = dict(packed.stored)
    metadata = {"xtc_format": "xtc-packed", "xtc_format_version": "3", "xtc_header": json.dumps(packed.header)}
    save_file(stored, folder / WEIGHTS_FILE, metadata=metadata)
    with pytest.raises(XtcError, match=r"format version '3' is not supported \(this xtc reads versions 1, 2"):
        read_packed(folder)
    name = next(k for k in stored if k.endswith(".codes2"))
    stored[name] = np.full_like(stored[name], 0xFF)
    metadata["xtc_format_version"] = "2"
    save_file(stored, folder / WEIGHTS_FILE, metadata=metadata)
    with pytest.raises(XtcError, match=f"tensor {re.escape(name)} does not match its checksum"):
        read_packed(folder)
    header = {**packed.header, "tensor_sha256": {**packed.header["tensor_sha256"], name: sha256(stored[name])}}
    metadata["xtc_header"] = json.dumps(header)
    save_file(stored, folder / WEIGHTS_FILE, metadata=metadata)
    with pytest.raises(XtcError, match="invalid ternary code 0b11"):
        read_packed(folder)
    del stored[name]
    save_file(stored, folder / WEIGHTS_FILE, metadata=metadata)
    with pytest.raises(XtcError, match=f"tensor {name} is missing"):
        read_packed(folder)


def test_tokenizer_that_does_not_match(packed_dir, tmp_path):
    folder = copy_of(packed_dir, tmp_path)
    tok = json.loads((folder / "tokenizer.json").read_text())
    tok["model"]["vocab"]["hello"] = 1
    (folder / "tokenizer.json").write_text(json.dumps(tok))
    with pytest.raises(XtcError, match="tokenizer file tokenizer.json does not match"):
        read_packed(folder)
    (folder / "tokenizer.json").unlink()
    with pytest.raises(XtcError, match="tokenizer file tokenizer.json is missing"):
        read_packed(folder)
    with pytest.raises(XtcError, match="not a packed model folder"):
        read_packed(tmp_path)


QUERY = "bert.encoder.layer.0.attention.self.query.weight"


@pytest.mark.parametrize("change, message", [
    (lambda h: h["tensors"][QUERY].update(bits="1"), r"tensors\.bert\.encoder\.layer\.0\.attention\.self\.query"
                                                     r"\.weight\.bits"),
    (lambda h: h["tensors"][QUERY].update(encoding="int4"), r"encoding"),
    (lambda h: h["tensors"][QUERY].update(shape=[10**12, 128]), r"dimensions must be 1\.\."),
    (lambda h: h["tensors"][QUERY].update(act_bits=4), r"act_bits"),
    (lambda h: h.update(tensors=[]), r"tensors"),
    (lambda h: h["tokenizer_sha256"].update({"../../etc/passwd": "0"}), r"is not a tokenizer file"),
    (lambda h: h.update(quantization="w1a8"), r"invalid value 'w1a8' for quantization: expected an object"),
    (lambda h: h.update(extra=1), r"unknown setting 'extra'"),
    (lambda h: h["tensors"][QUERY].update(shape=[True, 128]), r"expected a list of 1 to 4 integers"),
    (lambda h: h["tensors"][QUERY].update(granularity="group"), r"group_size goes with granularity 'group'"),
    (lambda h: h["tensors"][QUERY].pop("encoding"), r"missing required setting tensors\.bert.*query\.weight\.encoding"),
    # a version 1 file's entries take their activation settings from its quantization rules: validated there
    (lambda h: h.update(quantization={"rules": "all"}), r"header field quantization: invalid quantization config"),
])
def test_every_header_field_is_validated(packed_dir, tmp_path, change, message):
    folder = copy_of(packed_dir, tmp_path)
    packed = read_packed(packed_dir)
    header = json.loads(json.dumps(packed.header))
    change(header)
    rewrite(folder, packed, header=header, version="1" if "header field quantization" in message else "2")
    with pytest.raises(XtcError, match=message):
        read_packed(folder)


def test_a_flipped_byte_a_nan_and_a_stray_tensor_are_refused(packed_dir, tmp_path):
    folder = copy_of(packed_dir, tmp_path)
    packed = read_packed(packed_dir)
    words = "bert.embeddings.word_embeddings.weight.codes2"
    stored = dict(packed.stored)
    stored[words] = stored[words].copy()
    stored[words][5, 3] ^= 0x10  # one bit of one word's 2-bit codes
    metadata = {"xtc_format": "xtc-packed", "xtc_format_version": "2", "xtc_header": json.dumps(packed.header)}
    save_file(stored, folder / WEIGHTS_FILE, metadata=metadata)
    with pytest.raises(XtcError, match=f"tensor {re.escape(words)} does not match its checksum"):
        read_packed(folder)
    norm = "bert.embeddings.LayerNorm.weight"
    stored = dict(packed.stored)
    stored[norm] = stored[norm].copy()
    stored[norm][0] = np.nan
    rewrite(folder, packed, stored)  # a NaN with a valid checksum: written so by a foreign exporter
    with pytest.raises(XtcError, match=f"tensor {re.escape(norm)} holds NaN or infinite values"):
        read_packed(folder)
    rewrite(folder, packed, {**packed.stored, "extra": np.zeros(3, np.float32)})
    with pytest.raises(XtcError, match="tensor extra belongs to no header entry"):
        read_packed(folder)


def test_an_architecture_that_does_not_fit_the_tensors_is_refused(packed_dir, tmp_path):
    folder = copy_of(packed_dir, tmp_path)
    packed = read_packed(packed_dir)
    for key, value, message in [("vocab_size", 10**8, "bert.embeddings.word_embeddings.weight is \\[30522, 128\\], "
                                 "but the header's architecture makes it \\[100000000, 128\\]"),
                                ("intermediate_size", 10**8, "intermediate.dense"),
                                ("hidden_size", 127, "not a valid model config")]:
        rewrite(folder, packed, header={**packed.header, "architecture": {**packed.header["architecture"], key: value}})
        with pytest.raises(XtcError, match=message):
            load(folder)
        with pytest.raises(XtcError, match=message if key != "hidden_size" else "not a multiple of"):
            Engine.load(folder)  # the torch-free engine checks the same
