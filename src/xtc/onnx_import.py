"""Import a BERT encoder exported to ONNX (as sentence-transformers models ship) into an HF folder.

The ONNX graph keeps named tensors for embeddings, LayerNorms and biases, but its
Linear weights are anonymous MatMul initializers (``onnx::MatMul_470``, shape
(in, out)). Each is identified by the bias its output is added to
(``...attention.self.query.bias`` names the query weight). Sizes come from the
tensors; the head count from the attention score scaling (``1 / sqrt(head_dim)``).
The result is a ``BertModel`` folder (no pooler: a task head is added at
fine-tuning) that `tests/test_onnx_import.py` checks against ONNX Runtime.
"""

import re
from pathlib import Path

import numpy as np
import torch

from xtc.errors import XtcError

# A module inside the exported model, after the sentence-transformers wrapper prefix.
_PREFIX = re.compile(r"^(?:.*?auto_model\.)?")


def _load_graph(path: Path):
    import onnx
    from onnx import numpy_helper

    try:
        model = onnx.load(str(path))
    except Exception as e:  # onnx raises several types for a bad file
        raise XtcError(f"{path}: not a readable ONNX model ({type(e).__name__})") from None
    graph = model.graph
    inits = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    constants = {}
    for node in graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].type == onnx.AttributeProto.TENSOR:
            constants[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
    return graph, inits, constants


def onnx_bert_state_dict(path: Path) -> tuple[dict[str, torch.Tensor], dict]:
    """(BertModel state dict, config fields) from an ONNX BERT encoder."""
    graph, inits, constants = _load_graph(path)
    state = {_PREFIX.sub("", name): np.array(value) for name, value in inits.items() if not name.startswith("onnx::")}
    consumers: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    for node in graph.node:
        if node.op_type != "MatMul" or node.input[1] not in inits:
            continue
        adds = [n for n in consumers.get(node.output[0], []) if n.op_type == "Add"]
        biases = [i for n in adds for i in n.input if i in inits and i.endswith(".bias")]
        if len(biases) != 1:
            raise XtcError(f"{path}: cannot tell which layer MatMul {node.name} belongs to")
        module = _PREFIX.sub("", biases[0]).removesuffix(".bias")
        state[f"{module}.weight"] = np.ascontiguousarray(inits[node.input[1]].T)  # (in, out) -> (out, in)

    layers = {int(m.group(1)) for k in state if (m := re.match(r"encoder\.layer\.(\d+)\.", k))}
    vocab, hidden = state["embeddings.word_embeddings.weight"].shape
    head_dim = None
    for node in graph.node:  # scores / sqrt(head_dim) in the first layer's attention
        if node.op_type in ("Div", "Mul") and "layer.0/attention/self" in node.name:
            for name in node.input:
                value = constants.get(name, inits.get(name))
                if value is not None and value.size == 1:
                    c = float(value.reshape(()))
                    head_dim = round(c * c) if node.op_type == "Div" else round(1 / (c * c))
    if not head_dim or hidden % head_dim:
        raise XtcError(f"{path}: cannot find the attention head size")
    epsilon = next((a.f for n in graph.node if n.op_type == "LayerNormalization" for a in n.attribute
                    if a.name == "epsilon"), 1e-12)
    config = dict(
        vocab_size=int(vocab), hidden_size=int(hidden), num_hidden_layers=len(layers),
        num_attention_heads=hidden // head_dim,
        intermediate_size=int(state["encoder.layer.0.intermediate.dense.weight"].shape[0]),
        max_position_embeddings=int(state["embeddings.position_embeddings.weight"].shape[0]),
        type_vocab_size=int(state["embeddings.token_type_embeddings.weight"].shape[0]),
        layer_norm_eps=float(np.float32(epsilon)), hidden_act="gelu",
    )
    return {k: torch.from_numpy(v) for k, v in state.items()}, config


def import_onnx_bert(onnx_path: str | Path, out_dir: str | Path, tokenizer) -> Path:
    """Write an HF ``BertModel`` folder from an ONNX BERT encoder, with ``tokenizer`` (the ONNX file has none)."""
    from transformers import BertConfig, BertModel

    onnx_path, out = Path(onnx_path), Path(out_dir)
    if not onnx_path.is_file():
        raise XtcError(f"ONNX file {str(onnx_path)!r} does not exist")
    state, fields = onnx_bert_state_dict(onnx_path)
    model = BertModel(BertConfig(**fields), add_pooling_layer=False)
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.endswith("position_ids")]
    if missing or unexpected:
        raise XtcError(f"{onnx_path}: not a BERT encoder (missing {missing[:3]}, unexpected {unexpected[:3]})")
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out
