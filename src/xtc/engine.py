"""A torch-free engine for packed models (BERT, RoBERTa / XLM-R, ELECTRA, DistilBERT; the per-architecture
names are arch.py's): the whole encoder forward in one C call
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


class Engine:
    """A packed classifier (BERT, RoBERTa / XLM-R, ELECTRA, DistilBERT): ``engine.logits(input_ids,
    attention_mask, token_type_ids)``, int arrays ``(B, T)`` -> float32 ``(B, num_labels)``;
    ``engine.encode`` tokenizes raw text for it."""

    def __init__(self, packed: PackedModel, threads: int = 1, path: str | None = None):
        config = packed.header["architecture"]
        try:
            arch = architecture(str(config.get("model_type")))
        except XtcError as e:
            raise XtcError(f"{packed.folder}: header field architecture.model_type: {e}") from None
        self.arch, self.config, self._packed, self.threads = arch, config, packed, threads
        self.folder = packed.folder
        self.sizes = self._check_geometry()
        act = config.get(self.arch.activation_key, "gelu")
        if not isinstance(act, str) or act not in _ACTIVATIONS:
            raise XtcError(f"{packed.folder}: activation {act!r} is not one the engine runs ({', '.join(_ACTIVATIONS)})")
        self._labels = packed.entry(f"{self.arch.classifier}.weight")["shape"][0]
        self._model = _lowbit.model(*self._model_spec(act))
        # the capsule holds what the forward reads; the rest of the file's arrays (the Linears' packed bits, now
        # in the kernels' layout, and the stored rows behind float copies: ~1 MB for 3 layers) are let go
        del self._packed
        self._tokenizer = None
        self._path = kernels.path_id(path)  # None: the fastest path this CPU runs

    @property
    def num_labels(self) -> int:
        return self._labels

    @property
    def max_tokens(self) -> int:
        """The longest input: the position table's rows, less RoBERTa's padding_idx + 1 before the first."""
        z = self.sizes
        return z["max_pos"] - (self.config["pad_token_id"] + 1 if self.arch.positions_after_padding else 0)

    def _float(self, name: str) -> np.ndarray:
        return np.ascontiguousarray(self._packed.dequantized(name), np.float32)

    def _model_spec(self, act: str) -> tuple:
        """The arguments of ``_lowbit.model`` (module.c): the geometry, then every tensor, in forward.h's order."""
        arch, z = self.arch, self.sizes
        dims = (z["H"], z["I"], z["A"], z["L"], self._labels, z["vocab"], z["max_pos"], z["type_vocab"], z["E"])
        word, entry = arch.word_embeddings + ".weight", self._packed.entry(arch.word_embeddings + ".weight")
        if entry["encoding"] not in _WORD_KINDS or entry.get("granularity") == "group":
            raise XtcError(f"{self.folder}: the engine does not run word embeddings stored as "
                           f"{entry['encoding']} ({entry.get('granularity')} scales)")
        tensors = self._packed.tensors_of(word)
        if entry["encoding"] in KEPT:
            table, scale = tensors[""], None
        else:
            table, scale = tensors[self._packed.codec(word).suffix], self._packed.scale(word).reshape(-1)
        table = np.ascontiguousarray(table)
        types = (self._float(f"{arch.token_type_embeddings}.weight") if arch.token_type_embeddings
                 else np.zeros((1, z["E"]), np.float32))  # no token types: one row of zeros, every id 0
        project = self._linear([arch.embeddings_project]) if z["E"] != z["H"] else None
        layers = []
        for i in range(z["L"]):
            layer = f"{arch.layers}.{i}"
            qkv = self._linear([f"{layer}.{getattr(arch, r)}" for r in ("query", "key", "value")])
            linears = [self._linear([f"{layer}.{getattr(arch, r)}"]) for r in ("attention_output", "ffn_in", "ffn_out")]
            norms = [self._float(f"{layer}.{n}.{p}") for n in (arch.attention_norm, arch.output_norm)
                     for p in ("weight", "bias")]
            layers.append((qkv, *linears, *norms))
        return (dims, z["eps"], _ACTIVATIONS[act], _ACTIVATIONS[arch.pooler_activation],
                _WORD_KINDS[entry["encoding"]], table.view(np.uint8).reshape(table.shape[0], -1),
                table.nbytes // table.shape[0], scale, self._float(f"{arch.position_embeddings}.weight"), types,
                self._float(f"{arch.embeddings_norm}.weight"), self._float(f"{arch.embeddings_norm}.bias"), project,
                tuple(layers), self._linear([arch.pooler]), self._linear([arch.classifier]))

    def _linear(self, names: list[str]) -> tuple:
        """One Linear of ``module.c``'s spec, ``(Kp, neg, nonzero, colsum, alpha, w, bias)``, from one or more
        (stacked: Q, K and V make one product) Linears of the file, all low-bit or all float."""
        entries = [self._packed.entry(f"{n}.weight") for n in names]
        biases = [self._float(f"{n}.bias") for n in names]
        bias = np.ascontiguousarray(np.concatenate(biases), np.float32)
        low_bit = [e["encoding"] in LOW_BIT for e in entries]
        if not any(low_bit):
            w = np.concatenate([self._float(f"{n}.weight") for n in names])
            return (w.shape[1], None, None, None, None, np.ascontiguousarray(w, np.float32), bias)
        if not all(low_bit) or any(e.get("granularity") == "group" or e.get("act_bits") != 8 for e in entries):
            raise XtcError(f"{self.folder}: {names[0]}: the engine runs 1-/2-bit Linears with one scale per "
                           "matrix or row on 8-bit dynamic inputs (and Q, K, V all low-bit or all kept)")
        codes = np.concatenate([self._packed.codes(f"{n}.weight") for n in names])
        weights = kernels.prepare(codes, max(e["bits"] for e in entries))
        alphas = [self._packed.scale(f"{n}.weight").reshape(-1) for n in names]
        if len(names) > 1 or alphas[0].size > 1:  # stacked matrices: one scale per output row
            alphas = [np.broadcast_to(a, (e["shape"][0],)) for a, e in zip(alphas, entries)]
        alpha = np.ascontiguousarray(np.concatenate(alphas), np.float32)
        return (weights.padded_in_features, weights.neg, weights.nonzero, weights.colsum, alpha, None, bias)

    def _size(self, key: str, default=None) -> int:
        value = self.config.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise XtcError(f"{self.folder}: header field architecture.{key} is {value!r}, expected a positive "
                           "integer")
        return value

    def _check_geometry(self) -> dict:
        """The header's sizes, as ``H, I, A, L, vocab, max_pos, type_vocab, E, eps``: positive integers that give
        every tensor the file holds, of its shape, and no other. A foreign or corrupted header is one XtcError,
        never a failure in the forward."""
        config, folder, arch = self.config, self.folder, self.arch
        H = self._size(arch.hidden_key)
        z = {"H": H, "I": self._size(arch.intermediate_key), "A": self._size(arch.heads_key),
             "L": self._size(arch.num_layers_key), "vocab": self._size("vocab_size"),
             "max_pos": self._size("max_position_embeddings"),
             "type_vocab": self._size("type_vocab_size") if arch.token_type_embeddings else 1,
             "E": self._size("embedding_size", H) if arch.embeddings_project else H}
        eps = config.get("layer_norm_eps", 1e-12)  # DistilBERT's LayerNorms: 1e-12, not in its config
        if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not 0 < eps < 1:
            raise XtcError(f"{folder}: header field architecture.layer_norm_eps is {eps!r}, expected a small number")
        z["eps"] = float(eps)
        pad = config.get("pad_token_id", 0)
        if pad is not None and (isinstance(pad, bool) or not isinstance(pad, int) or not 0 <= pad < z["vocab"]):
            raise XtcError(f"{folder}: header field architecture.pad_token_id is {pad!r}, expected a token id")
        if arch.positions_after_padding and pad is None:
            raise XtcError(f"{folder}: header field architecture.pad_token_id is missing; {config['model_type']} "
                           "counts positions from it")
        if arch.positions_after_padding and pad + 2 > z["max_pos"]:
            raise XtcError(f"{folder}: header field architecture.max_position_embeddings is {z['max_pos']}, which "
                           f"leaves no position after pad_token_id {pad} (positions start at pad_token_id + 1)")
        if not isinstance(config.get("id2label", {}), dict):
            raise XtcError(f"{folder}: header field architecture.id2label is not a mapping")
        held = self._packed.layer_count(arch.layers)
        if z["L"] != held:
            raise XtcError(f"{folder}: header field architecture.{arch.num_layers_key} is {z['L']}, "
                           f"but the file holds {held} layers")
        if H % z["A"]:
            raise XtcError(f"{folder}: hidden size {H} is not a multiple of the {z['A']} attention heads")
        labels = len(config.get("id2label") or {}) or 2
        E, I = z["E"], z["I"]
        expected = {arch.word_embeddings + ".weight": (z["vocab"], E),
                    f"{arch.position_embeddings}.weight": (z["max_pos"], E),
                    f"{arch.embeddings_norm}.weight": (E,), f"{arch.embeddings_norm}.bias": (E,),
                    f"{arch.pooler}.weight": (H, H), f"{arch.pooler}.bias": (H,),
                    f"{arch.classifier}.weight": (labels, H), f"{arch.classifier}.bias": (labels,)}
        if arch.token_type_embeddings:
            expected[f"{arch.token_type_embeddings}.weight"] = (z["type_vocab"], E)
        if E != H:
            expected[f"{arch.embeddings_project}.weight"] = (H, E)
            expected[f"{arch.embeddings_project}.bias"] = (H,)
        for i in range(z["L"]):
            layer = f"{arch.layers}.{i}"
            for role, shape in (("query", (H, H)), ("key", (H, H)), ("value", (H, H)), ("attention_output", (H, H)),
                                ("ffn_in", (I, H)), ("ffn_out", (H, I))):
                expected[f"{layer}.{getattr(arch, role)}.weight"] = shape
                expected[f"{layer}.{getattr(arch, role)}.bias"] = shape[:1]
            for norm in (arch.attention_norm, arch.output_norm):
                expected[f"{layer}.{norm}.weight"] = expected[f"{layer}.{norm}.bias"] = (H,)
        entries = self._packed.header["tensors"]
        for name, shape in expected.items():
            if name not in entries:
                raise XtcError(f"{folder}: the file lacks {name}, which its architecture has")
            if tuple(entries[name]["shape"]) != shape:
                raise XtcError(f"{folder}: tensor {name} is {entries[name]['shape']}, but the header's architecture "
                               f"makes it {list(shape)}")
        extra = sorted(set(entries) - set(expected))
        if extra:
            raise XtcError(f"{folder}: tensor {extra[0]} is not part of the header's {config['model_type']} "
                           "architecture")
        return z

    @classmethod
    def load(cls, folder: str | Path, threads: int = 1, path: str | None = None) -> "Engine":
        """``threads``: the engine's own threads (1..N); ``path``: a kernel path of ``xtc.kernels.PATHS``
        (default: the fastest; all give the same logits bit for bit)."""
        return cls(read_packed(folder), threads, path)

    def encode(self, columns: list[list[str]], max_seq_length: int = 128) -> dict[str, np.ndarray]:
        """Texts (one list, or two for pairs) -> ``input_ids``, ``attention_mask``, ``token_type_ids`` (B, T),
        with the folder's ``tokenizer.json`` (the ``tokenizers`` library: what the fast HF tokenizer runs)."""
        if self._tokenizer is None:
            from tokenizers import Tokenizer

            path = self.folder / "tokenizer.json"
            if not path.is_file():
                raise XtcError(f"{self.folder}: no tokenizer.json (the engine needs a fast tokenizer)")
            self._tokenizer = Tokenizer.from_file(str(path))
        tokenizer = self._tokenizer
        tokenizer.enable_truncation(max_seq_length)
        pad_id = self.config.get("pad_token_id") or 0
        tokenizer.enable_padding(pad_id=pad_id, pad_token=tokenizer.id_to_token(pad_id) or "[PAD]")
        encoded = tokenizer.encode_batch(list(zip(*columns)) if len(columns) == 2 else columns[0])
        ids = np.array([e.ids for e in encoded], dtype=np.int64)
        types = (np.array([e.type_ids for e in encoded], dtype=np.int64) if self.sizes["type_vocab"] > 1
                 else np.zeros_like(ids))  # one token type (RoBERTa's table has one row, DistilBERT none): all 0
        return {"input_ids": ids, "attention_mask": np.array([e.attention_mask for e in encoded], dtype=np.int64),
                "token_type_ids": types}

    def logits(self, input_ids, attention_mask=None, token_type_ids=None) -> np.ndarray:
        """``token_type_ids`` are ignored by a model without a token-type table (DistilBERT, whose forward in
        transformers takes none)."""
        z = self.sizes
        ids = np.ascontiguousarray(input_ids, dtype=np.int64)
        if ids.ndim != 2 or not ids.shape[0] or not ids.shape[1]:
            raise XtcError(f"input_ids must be (batch, tokens), got {list(ids.shape)}")
        if ids.min() < 0 or ids.max() >= z["vocab"]:
            raise XtcError(f"token ids must be in 0..{z['vocab'] - 1}")
        B, T = ids.shape
        mask = np.ones_like(ids) if attention_mask is None else np.ascontiguousarray(attention_mask, dtype=np.int64)
        types = (np.zeros_like(ids) if token_type_ids is None or not self.arch.token_type_embeddings
                 else np.ascontiguousarray(token_type_ids, dtype=np.int64))
        if mask.shape != ids.shape or types.shape != ids.shape:
            raise XtcError(f"attention_mask and token_type_ids must be {list(ids.shape)} like input_ids")
        if types.min() < 0 or types.max() >= z["type_vocab"]:
            raise XtcError(f"token type ids must be in 0..{z['type_vocab'] - 1}")
        positions = self._positions(ids)
        if positions.max() >= z["max_pos"]:
            raise XtcError(f"input_ids have {T} tokens; this model takes at most {self.max_tokens}")
        logits = np.empty((B, self._labels), np.float32)
        _lowbit.forward(self._model, ids, positions, types, mask, B, T, logits, self._path, self.threads)
        if not np.isfinite(logits).all():
            raise XtcError(f"{self.folder}: the model computed non-finite logits (its stored values overflow)")
        return logits

    def _positions(self, ids: np.ndarray) -> np.ndarray:
        """(B, T) position ids: 0..T-1, or RoBERTa's: padding_idx + 1 + the index among the tokens that are not
        padding, padding_idx on padding (transformers' create_position_ids_from_input_ids)."""
        B, T = ids.shape
        if not self.arch.positions_after_padding:
            return np.ascontiguousarray(np.broadcast_to(np.arange(T, dtype=np.int64), (B, T)))
        pad = self.config["pad_token_id"]
        real = ids != pad
        return np.cumsum(real, axis=1, dtype=np.int64) * real + pad


load = Engine.load  # xtc.load: a packed folder -> its Engine


def engine_for(folder: str | Path) -> "Engine | None":
    """The engine of a packed folder, or None when ``folder`` is not one (a Hugging Face or fake-quant folder)."""
    from xtc.packed.layout import WEIGHTS_FILE

    return Engine.load(folder) if (Path(folder) / WEIGHTS_FILE).is_file() else None
