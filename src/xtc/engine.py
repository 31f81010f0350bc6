"""A torch-free engine for packed models: the whole encoder forward in one C call
(``xtc/kernels/forward.c``) over the packed weights, which stay packed in memory (the word table is
decoded row by row on lookup). Nothing here imports torch or transformers.

Shapes: ``B`` sequences of ``T`` tokens, hidden size ``H``, ``A`` heads of ``D = H / A`` features.
Numerics: the low-bit products are exact integer sums of the same codes as the fake-quant model; the
float ops round differently from torch's (order of sums, exp), so an 8-bit activation code on a
rounding boundary can flip: logits agree with the fake-quant model to float rounding on most rows
and within about 2% of the largest logit on all (tests/test_engine.py).
The three kernel paths (reference, AVX2, AVX-512) give the same bits.
"""

from pathlib import Path

import numpy as np

from xtc import kernels
from xtc.kernels import _lowbit
from xtc.arch import architecture
from xtc.errors import XtcError
from xtc.packed.codecs import KEPT, LOW_BIT
from xtc.packed.read import PackedModel, read_packed


_ACTIVATIONS = {"gelu": 0, "relu": 1, "tanh": 2}  # forward.h's ACT_*
# forward.h's WORD_*: how the word table is stored, by encoding
_WORD_KINDS = {"fp32": 0, "fp16": 1, "binary": 2, "ternary2": 3, "ternary_base3": 4, "int8_row": 5}
_POOLER_ACTIVATION = "tanh"  # BERT's pooler


class Engine:
    """A packed BERT classifier: ``engine.logits(input_ids, attention_mask, token_type_ids)``, int arrays
    ``(B, T)`` -> float32 ``(B, num_labels)``; ``engine.encode`` tokenizes raw text for it."""

    def __init__(self, packed: PackedModel, threads: int = 1, path: str | None = None):
        config = packed.header["architecture"]
        if config.get("model_type") != "bert":
            raise XtcError(f"{packed.folder}: the torch-free engine runs BERT models so far; "
                           f"this one is {config.get('model_type')!r} (use xtc.runtime.load)")
        self.arch, self.config, self.packed, self.threads = architecture("bert"), config, packed, threads
        self._check_geometry()
        act = config.get("hidden_act", "gelu")
        if not isinstance(act, str) or act not in _ACTIVATIONS:
            raise XtcError(f"{packed.folder}: activation {act!r} is not one the engine runs ({', '.join(_ACTIVATIONS)})")
        self._labels = packed.entry("classifier.weight")["shape"][0]
        self._model = _lowbit.model(*self._model_spec(act))
        self._tokenizer = None
        self._path = kernels.path_id(path)  # None: the fastest path this CPU runs

    def _float(self, name: str) -> np.ndarray:
        return np.ascontiguousarray(self.packed.dequantized(name), np.float32)

    def _model_spec(self, act: str) -> tuple:
        """The arguments of ``_lowbit.model`` (module.c): the geometry, then every tensor, in forward.h's order."""
        config, arch, e = self.config, self.arch, self.arch.embeddings
        H, L = config["hidden_size"], config[arch.num_layers_key]
        dims = (H, config["intermediate_size"], config["num_attention_heads"], L, self._labels, config["vocab_size"],
                config["max_position_embeddings"], config["type_vocab_size"])
        word, entry = arch.word_embeddings + ".weight", self.packed.entry(arch.word_embeddings + ".weight")
        if entry["encoding"] not in _WORD_KINDS or entry.get("granularity") == "group":
            raise XtcError(f"{self.packed.folder}: the engine does not run word embeddings stored as "
                           f"{entry['encoding']} ({entry.get('granularity')} scales)")
        tensors = self.packed.tensors_of(word)
        if entry["encoding"] in KEPT:
            table, scale = tensors[""], None
        else:
            table, scale = tensors[self.packed.codec(word).suffix], self.packed.scale(word).reshape(-1)
        table = np.ascontiguousarray(table)
        layers = []
        for i in range(L):
            layer = f"{arch.layers}.{i}"
            qkv = self._linear([f"{layer}.{getattr(arch, r)}" for r in ("query", "key", "value")])
            linears = [self._linear([f"{layer}.{getattr(arch, r)}"]) for r in ("attention_output", "ffn_in", "ffn_out")]
            norms = [self._float(f"{layer}.{n}.{p}") for n in ("attention.output.LayerNorm", "output.LayerNorm")
                     for p in ("weight", "bias")]
            layers.append((qkv, *linears, *norms))
        return (dims, float(config.get("layer_norm_eps", 1e-12)), _ACTIVATIONS[act], _ACTIVATIONS[_POOLER_ACTIVATION],
                _WORD_KINDS[entry["encoding"]], table.view(np.uint8).reshape(table.shape[0], -1),
                table.nbytes // table.shape[0], scale, self._float(f"{e}.position_embeddings.weight"),
                self._float(f"{e}.token_type_embeddings.weight"), self._float(f"{e}.LayerNorm.weight"),
                self._float(f"{e}.LayerNorm.bias"), tuple(layers), self._linear([arch.pooler]),
                self._linear(["classifier"]))

    def _linear(self, names: list[str]) -> tuple:
        """One Linear of ``module.c``'s spec, ``(Kp, neg, nonzero, colsum, alpha, w, bias)``, from one or more
        (stacked: Q, K and V make one product) Linears of the file, all low-bit or all float."""
        entries = [self.packed.entry(f"{n}.weight") for n in names]
        biases = [self._float(f"{n}.bias") for n in names]
        bias = np.ascontiguousarray(np.concatenate(biases), np.float32)
        low_bit = [e["encoding"] in LOW_BIT for e in entries]
        if not any(low_bit):
            w = np.concatenate([self._float(f"{n}.weight") for n in names])
            return (w.shape[1], None, None, None, None, np.ascontiguousarray(w, np.float32), bias)
        if not all(low_bit) or any(e.get("granularity") == "group" or e.get("act_bits") != 8 for e in entries):
            raise XtcError(f"{self.packed.folder}: {names[0]}: the engine runs 1-/2-bit Linears with one scale per "
                           "matrix or row on 8-bit dynamic inputs (and Q, K, V all low-bit or all kept)")
        codes = np.concatenate([self.packed.codes(f"{n}.weight") for n in names])
        weights = kernels.prepare(codes, max(e["bits"] for e in entries))
        alphas = [self.packed.scale(f"{n}.weight").reshape(-1) for n in names]
        if len(names) > 1 or alphas[0].size > 1:  # stacked matrices: one scale per output row
            alphas = [np.broadcast_to(a, (e["shape"][0],)) for a, e in zip(alphas, entries)]
        alpha = np.ascontiguousarray(np.concatenate(alphas), np.float32)
        return (weights.padded_in_features, weights.neg, weights.nonzero, weights.colsum, alpha, None, bias)

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

    @classmethod
    def load(cls, folder: str | Path, threads: int = 1, path: str | None = None) -> "Engine":
        """``threads``: the engine's own threads (1..N); ``path``: a kernel path of ``xtc.kernels.PATHS``
        (default: the fastest; all give the same logits bit for bit)."""
        return cls(read_packed(folder), threads, path)

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

    def logits(self, input_ids, attention_mask=None, token_type_ids=None) -> np.ndarray:
        ids = np.ascontiguousarray(input_ids, dtype=np.int64)
        if ids.ndim != 2 or not 1 <= ids.shape[1] <= self.config["max_position_embeddings"] or not ids.shape[0]:
            raise XtcError(f"input_ids must be (batch, tokens) with 1 to {self.config['max_position_embeddings']} "
                           f"tokens, got {list(ids.shape)}")
        if ids.min() < 0 or ids.max() >= self.config["vocab_size"]:
            raise XtcError(f"token ids must be in 0..{self.config['vocab_size'] - 1}")
        B, T = ids.shape
        mask = np.ones_like(ids) if attention_mask is None else np.ascontiguousarray(attention_mask, dtype=np.int64)
        types = np.zeros_like(ids) if token_type_ids is None else np.ascontiguousarray(token_type_ids, dtype=np.int64)
        if mask.shape != ids.shape or types.shape != ids.shape:
            raise XtcError(f"attention_mask and token_type_ids must be {list(ids.shape)} like input_ids")
        if types.min() < 0 or types.max() >= self.config["type_vocab_size"]:
            raise XtcError(f"token type ids must be in 0..{self.config['type_vocab_size'] - 1}")
        positions = np.ascontiguousarray(np.broadcast_to(np.arange(T, dtype=np.int64), (B, T)))
        logits = np.empty((B, self._labels), np.float32)
        _lowbit.forward(self._model, ids, positions, types, mask, B, T, logits, self._path, self.threads)
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
