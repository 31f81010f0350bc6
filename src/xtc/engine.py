"""A torch-free engine for packed models (issue 18, first step): the whole BERT encoder forward in numpy
over the packed weights, the 1-/2-bit Linears in the C kernels (``xtc.kernels``: per-token 8-bit
quantization fused in, exact integer sums). Nothing here imports torch or transformers.

Shapes: ``B`` sequences of ``T`` tokens, hidden size ``H``, ``A`` heads of ``D = H / A`` features.
Numerics: the low-bit products are bit-exact against the fake-quant model (the same codes and integer
sums); every other op is float32 numpy, so logits agree with the fake-quant model within float
rounding (tests: 1e-3 of the largest logit).
"""

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from xtc import kernels
from xtc.arch import architecture
from xtc.errors import XtcError
from xtc.packed.codecs import LOW_BIT
from xtc.packed.read import PackedModel, read_packed


@dataclass
class _Linear:
    """y = x @ W.T + b, over packed 1-/2-bit codes (C kernels) or float32 weights (N, K)."""

    weights: kernels.LowbitWeights | np.ndarray
    alpha: np.ndarray | None  # (1,) or (N,): the low-bit scales
    bias: np.ndarray | None  # (N,)

    def __call__(self, x: np.ndarray, threads: int) -> np.ndarray:  # (..., K) -> (..., N)
        rows = np.ascontiguousarray(x.reshape(-1, x.shape[-1]), dtype=np.float32)
        if isinstance(self.weights, np.ndarray):
            y = rows @ self.weights.T
            if self.bias is not None:
                y += self.bias
        else:
            y = kernels.linear(rows, self.weights, self.alpha, self.bias, threads=threads)
        return y.reshape(*x.shape[:-1], -1)


def _gelu(x: np.ndarray) -> np.ndarray:  # the exact (erf) GELU of BERT's "gelu"
    from scipy.special import erf  # (an erf approximation to 1.5e-7 flipped more 8-bit codes: measured)

    return (0.5 * x * (1.0 + erf(x / np.float32(math.sqrt(2.0))))).astype(np.float32)


_ACTIVATIONS = {"gelu": _gelu, "relu": lambda x: np.maximum(x, 0)}


def _layer_norm(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, eps: float) -> np.ndarray:
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + np.float32(eps)) * weight + bias


class Engine:
    """A packed BERT classifier: ``engine.logits(input_ids, attention_mask, token_type_ids)``, int arrays
    ``(B, T)`` -> float32 ``(B, num_labels)``; ``engine.encode`` tokenizes raw text for it."""

    def __init__(self, packed: PackedModel, threads: int = 1):
        config = packed.header["architecture"]
        if config.get("model_type") != "bert":
            raise XtcError(f"{packed.folder}: the torch-free engine runs BERT models so far; "
                           f"this one is {config.get('model_type')!r} (use xtc.runtime.load)")
        self.arch, self.config, self.packed, self.threads = architecture("bert"), config, packed, threads
        self._check_geometry()
        self.heads = config["num_attention_heads"]
        self.eps = config.get("layer_norm_eps", 1e-12)
        act = config.get("hidden_act", "gelu")
        if not isinstance(act, str) or act not in _ACTIVATIONS:
            raise XtcError(f"{packed.folder}: activation {act!r} is not one the engine runs ({', '.join(_ACTIVATIONS)})")
        self.act = _ACTIVATIONS[act]
        self.num_layers = config[self.arch.num_layers_key]
        self.floats = {n: packed.dequantized(n) for n, e in packed.header["tensors"].items()
                       if e["encoding"] not in LOW_BIT}
        self.linears = {}
        names = [f"{self.arch.layers}.{i}.{getattr(self.arch, role)}" for i in range(self.num_layers)
                 for role in ("query", "key", "value", "attention_output", "ffn_in", "ffn_out")]
        for name in [*names, self.arch.pooler, "classifier"]:
            self.linears[name] = self._linear(name)
        self.word = self.arch.word_embeddings + ".weight"
        self._tokenizer = None

    def _check_geometry(self) -> None:
        """The header's sizes are positive integers and give every tensor the file holds, of its shape, and
        no other: a foreign or corrupted header is one XtcError, never a failure in the forward."""
        config, folder = self.config, self.packed.folder
        sizes = {}
        for key in ("hidden_size", "intermediate_size", "vocab_size", "max_position_embeddings", "type_vocab_size",
                    "num_attention_heads", "num_hidden_layers"):
            value = config.get(key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise XtcError(f"{folder}: header field architecture.{key} is {value!r}, expected a positive integer")
            sizes[key] = value
        eps = config.get("layer_norm_eps", 1e-12)
        if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not 0 < eps < 1:
            raise XtcError(f"{folder}: header field architecture.layer_norm_eps is {eps!r}, expected a small number")
        pad = config.get("pad_token_id", 0)
        if pad is not None and (isinstance(pad, bool) or not isinstance(pad, int) or not 0 <= pad < sizes["vocab_size"]):
            raise XtcError(f"{folder}: header field architecture.pad_token_id is {pad!r}, expected a token id")
        if not isinstance(config.get("id2label", {}), dict):
            raise XtcError(f"{folder}: header field architecture.id2label is not a mapping")
        held = self.packed.layer_count(self.arch.layers)
        if sizes["num_hidden_layers"] != held:
            raise XtcError(f"{folder}: header field architecture.num_hidden_layers is {sizes['num_hidden_layers']}, "
                           f"but the file holds {held} layers")
        H, I = sizes["hidden_size"], sizes["intermediate_size"]
        if H % sizes["num_attention_heads"]:
            raise XtcError(f"{folder}: hidden_size {H} is not a multiple of num_attention_heads "
                           f"{sizes['num_attention_heads']}")
        labels = len(config.get("id2label") or {}) or 2
        e = self.arch.embeddings
        expected = {self.arch.word_embeddings + ".weight": (sizes["vocab_size"], H),
                    f"{e}.position_embeddings.weight": (sizes["max_position_embeddings"], H),
                    f"{e}.token_type_embeddings.weight": (sizes["type_vocab_size"], H),
                    f"{e}.LayerNorm.weight": (H,), f"{e}.LayerNorm.bias": (H,),
                    f"{self.arch.pooler}.weight": (H, H), f"{self.arch.pooler}.bias": (H,),
                    "classifier.weight": (labels, H), "classifier.bias": (labels,)}
        for i in range(sizes["num_hidden_layers"]):
            layer = f"{self.arch.layers}.{i}"
            for role, shape in (("query", (H, H)), ("key", (H, H)), ("value", (H, H)), ("attention_output", (H, H)),
                                ("ffn_in", (I, H)), ("ffn_out", (H, I))):
                expected[f"{layer}.{getattr(self.arch, role)}.weight"] = shape
                expected[f"{layer}.{getattr(self.arch, role)}.bias"] = shape[:1]
            for norm in ("attention.output.LayerNorm", "output.LayerNorm"):
                expected[f"{layer}.{norm}.weight"] = expected[f"{layer}.{norm}.bias"] = (H,)
        entries = self.packed.header["tensors"]
        for name, shape in expected.items():
            if name not in entries:
                raise XtcError(f"{folder}: the file lacks {name}, which its architecture has")
            if tuple(entries[name]["shape"]) != shape:
                raise XtcError(f"{folder}: tensor {name} is {entries[name]['shape']}, but the header's architecture "
                               f"makes it {list(shape)}")
        extra = sorted(set(entries) - set(expected))
        if extra:
            raise XtcError(f"{folder}: tensor {extra[0]} is not part of the header's BERT architecture")

    def _linear(self, name: str) -> _Linear:
        entry = self.packed.entry(f"{name}.weight")
        bias = self.floats.get(f"{name}.bias")
        if entry["encoding"] in LOW_BIT:
            if entry["granularity"] == "group" or entry["act_bits"] != 8:
                raise XtcError(f"{self.packed.folder}: {name}: the engine runs 1-/2-bit Linears with one scale per "
                               "matrix or row on 8-bit dynamic inputs")
            weights = kernels.prepare(self.packed.codes(f"{name}.weight"), entry["bits"])
            return _Linear(weights, self.packed.scale(f"{name}.weight").reshape(-1), bias)
        return _Linear(self.floats[f"{name}.weight"], None, bias)

    @classmethod
    def load(cls, folder: str | Path, threads: int = 1) -> "Engine":
        return cls(read_packed(folder), threads)

    def encode(self, columns: list[list[str]], max_seq_length: int) -> dict[str, np.ndarray]:
        """Texts (one list, or two for pairs) -> ``input_ids``, ``attention_mask``, ``token_type_ids`` (B, T),
        with the folder's ``tokenizer.json`` (the ``tokenizers`` library: what the fast HF tokenizer runs)."""
        if self._tokenizer is None:
            from tokenizers import Tokenizer

            path = self.packed.folder / "tokenizer.json"
            if not path.is_file():
                raise XtcError(f"{self.packed.folder}: no tokenizer.json (the engine needs a fast tokenizer)")
            self._tokenizer = Tokenizer.from_file(str(path))
        tokenizer = self._tokenizer
        tokenizer.enable_truncation(max_seq_length)
        pad_id = self.config.get("pad_token_id") or 0
        tokenizer.enable_padding(pad_id=pad_id, pad_token=tokenizer.id_to_token(pad_id) or "[PAD]")
        encoded = tokenizer.encode_batch(list(zip(*columns)) if len(columns) == 2 else columns[0])
        return {"input_ids": np.array([e.ids for e in encoded], dtype=np.int64),
                "attention_mask": np.array([e.attention_mask for e in encoded], dtype=np.int64),
                "token_type_ids": np.array([e.type_ids for e in encoded], dtype=np.int64)}

    def _embeddings(self, ids: np.ndarray, token_types: np.ndarray) -> np.ndarray:  # (B, T) -> (B, T, H)
        entry = self.packed.entry(self.word)
        if entry["encoding"] in LOW_BIT:
            codec, flat = self.packed.codec(self.word), ids.reshape(-1)
            scale = self.packed.scale(self.word)
            rows = codec.unpacker(self.packed.packed_codes(self.word)[flat], entry["shape"][1]).astype(np.float32)
            words = rows * (scale if scale.shape[0] == 1 else scale[flat])
        else:
            words = self.floats[self.word][ids.reshape(-1)]
        base = self.arch.embeddings
        positions = self.floats[f"{base}.position_embeddings.weight"][: ids.shape[1]]  # (T, H)
        types = self.floats[f"{base}.token_type_embeddings.weight"][token_types]  # (B, T, H)
        x = words.reshape(*ids.shape, -1) + positions + types
        return _layer_norm(x, self.floats[f"{base}.LayerNorm.weight"], self.floats[f"{base}.LayerNorm.bias"], self.eps)

    def _attention(self, x: np.ndarray, mask_bias: np.ndarray, layer: str) -> np.ndarray:
        B, T, H = x.shape
        D = H // self.heads

        def heads(role):  # (B, T, H) -> (B, A, T, D)
            return self.linears[f"{layer}.{getattr(self.arch, role)}"](x, self.threads).reshape(B, T, self.heads, D) \
                .transpose(0, 2, 1, 3)

        q, k, v = heads("query"), heads("key"), heads("value")
        scores = q @ k.transpose(0, 1, 3, 2) / np.float32(math.sqrt(D)) + mask_bias  # (B, A, T, T)
        scores -= scores.max(-1, keepdims=True)
        weights = np.exp(scores)
        weights /= weights.sum(-1, keepdims=True)
        return (weights @ v).transpose(0, 2, 1, 3).reshape(B, T, H)

    def logits(self, input_ids, attention_mask=None, token_type_ids=None) -> np.ndarray:
        ids = np.asarray(input_ids, dtype=np.int64)
        mask = np.ones_like(ids) if attention_mask is None else np.asarray(attention_mask)
        types = np.zeros_like(ids) if token_type_ids is None else np.asarray(token_type_ids, dtype=np.int64)
        if ids.ndim != 2 or ids.shape[1] > self.config["max_position_embeddings"]:
            raise XtcError(f"input_ids must be (batch, tokens) with at most {self.config['max_position_embeddings']} "
                           f"tokens, got {list(ids.shape)}")
        if ids.size and (ids.min() < 0 or ids.max() >= self.config["vocab_size"]):
            raise XtcError(f"token ids must be in 0..{self.config['vocab_size'] - 1}")
        mask_bias = np.where(mask[:, None, None, :] > 0, 0, np.finfo(np.float32).min).astype(np.float32)
        x = self._embeddings(ids, types)
        for i in range(self.num_layers):
            layer = f"{self.arch.layers}.{i}"
            attended = self.linears[f"{layer}.{self.arch.attention_output}"](self._attention(x, mask_bias, layer),
                                                                             self.threads)
            x = _layer_norm(attended + x, self.floats[f"{layer}.attention.output.LayerNorm.weight"],
                            self.floats[f"{layer}.attention.output.LayerNorm.bias"], self.eps)
            hidden = self.act(self.linears[f"{layer}.{self.arch.ffn_in}"](x, self.threads))
            out = self.linears[f"{layer}.{self.arch.ffn_out}"](hidden, self.threads)
            x = _layer_norm(out + x, self.floats[f"{layer}.output.LayerNorm.weight"],
                            self.floats[f"{layer}.output.LayerNorm.bias"], self.eps)
        pooled = np.tanh(self.linears[self.arch.pooler](x[:, 0], self.threads))
        logits = self.linears["classifier"](pooled, self.threads)
        if not np.isfinite(logits).all():
            raise XtcError(f"{self.packed.folder}: the model computed non-finite logits (its stored values overflow)")
        return logits


def engine_for(folder: str | Path) -> "Engine | None":
    """The engine of a packed folder it runs (BERT), or None: another architecture, or not a packed folder."""
    from xtc.packed.layout import WEIGHTS_FILE

    if not (Path(folder) / WEIGHTS_FILE).is_file():
        return None
    packed = read_packed(folder)
    return Engine(packed) if packed.header["architecture"].get("model_type") == "bert" else None
