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

Loading a folder and ``Engine.predict`` import no numpy either (a fresh process's start: numpy's import
alone takes longer than reading and building a 3-layer model); ``logits`` takes and returns numpy arrays.
"""

from __future__ import annotations

import math
from array import array
from pathlib import Path
from typing import TYPE_CHECKING

from xtc import kernels
from xtc.kernels import _lowbit
from xtc.arch import architecture
from xtc.errors import XtcError
from xtc.packed.codecs import LOW_BIT, SCALE
from xtc.packed.read import PackedModel, read_packed

if TYPE_CHECKING:
    import numpy as np


_ACTIVATIONS = {"gelu": 0, "relu": 1, "tanh": 2}  # forward.h's ACT_*
# forward.h's WORD_*: how the word table is stored, by encoding
_WORD_KINDS = {"fp32": 0, "fp16": 1, "binary": 2, "ternary2": 3, "ternary_base3": 4, "int8_row": 5}


def _floats(parts: list) -> memoryview:
    """float32 buffers, one after the other, as one float32 buffer (what ``_lowbit.model`` holds)."""
    return memoryview(parts[0] if len(parts) == 1 else b"".join(parts)).cast("B").cast("f")


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

    def _stored(self, name: str) -> tuple[dict, int, int, int, bytearray, memoryview | None]:
        """One logical tensor as the file stores it: its entry, its encoding's kind (WORD_*), rows, values per
        row, the bytes of its values or codes, and its float32 scales (None: a kept tensor)."""
        entry = self._packed.entry(name)
        if entry.get("granularity") == "group":
            raise XtcError(f"{self.folder}: {name}: the engine runs one scale per matrix or row, not per group")
        shape, raw = entry["shape"], self._packed.raw_of(name)
        scale = memoryview(raw[SCALE]).cast("f") if SCALE in raw else None
        data = raw[self._packed.codec(name).suffix] if scale is not None else raw[""]
        return entry, _WORD_KINDS[entry["encoding"]], shape[0], math.prod(shape[1:]), data, scale

    def _float(self, name: str) -> memoryview:
        """The float32 values of one stored tensor, decoded in C (``_lowbit.decode``)."""
        entry, kind, rows, cols, data, scale = self._stored(name)
        if entry["encoding"] == "fp32":
            return memoryview(data).cast("f")
        out = array("f", bytes(4 * rows * cols))
        _lowbit.decode(kind, data, rows, cols, scale, out)
        return memoryview(out)

    def _model_spec(self, act: str) -> tuple:
        """The arguments of ``_lowbit.model`` (module.c): the geometry, then every tensor, in forward.h's order."""
        arch, z = self.arch, self.sizes
        dims = (z["H"], z["I"], z["A"], z["L"], self._labels, z["vocab"], z["max_pos"], z["type_vocab"], z["E"])
        _, kind, rows, _, table, scale = self._stored(arch.word_embeddings + ".weight")
        types = (self._float(f"{arch.token_type_embeddings}.weight") if arch.token_type_embeddings
                 else array("f", bytes(4 * z["E"])))  # no token types: one row of zeros, every id 0
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
                kind, table, len(table) // rows, scale, self._float(f"{arch.position_embeddings}.weight"), types,
                self._float(f"{arch.embeddings_norm}.weight"), self._float(f"{arch.embeddings_norm}.bias"), project,
                tuple(layers), self._linear([arch.pooler]), self._linear([arch.classifier]))

    def _linear(self, names: list[str]) -> tuple:
        """One Linear of ``module.c``'s spec, ``(Kp, neg, nonzero, colsum, alpha, w, bias)``, from one or more
        (stacked: Q, K and V make one product) Linears of the file, all low-bit or all float."""
        entries = [self._packed.entry(f"{n}.weight") for n in names]
        bias = _floats([self._float(f"{n}.bias") for n in names])
        low_bit = [e["encoding"] in LOW_BIT for e in entries]
        if not any(low_bit):
            return (entries[0]["shape"][1], None, None, None, None, _floats([self._float(f"{n}.weight") for n in names]),
                    bias)
        if not all(low_bit) or any(e.get("act_bits") != 8 for e in entries):
            raise XtcError(f"{self.folder}: {names[0]}: the engine runs 1-/2-bit Linears with one scale per "
                           "matrix or row on 8-bit dynamic inputs (and Q, K, V all low-bit or all kept)")
        codes, alphas = [], []
        for n in names:  # stacked matrices: their codes one after the other, and one scale per output row
            _, kind, rows, cols, packed, scale = self._stored(f"{n}.weight")
            codes.append(bytearray(rows * cols))
            _lowbit.decode_codes(kind, packed, rows, cols, codes[-1])
            alphas.append(array("f", scale) * rows if len(names) > 1 and len(scale) == 1 else scale)
        rows = sum(e["shape"][0] for e in entries)
        padded, neg, nonzero, colsum = kernels.prepare_codes(b"".join(codes), rows, cols,
                                                             max(e["bits"] for e in entries))
        return (padded, neg, nonzero, colsum, _floats(alphas), None, bias)

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

    def _tokenized(self, columns: list[list[str]], max_seq_length: int) -> list:
        """Texts (one list, or two for pairs) -> tokenizers' encodings, padded to the longest, with the folder's
        ``tokenizer.json`` (the ``tokenizers`` library: what the fast HF tokenizer runs)."""
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
        return tokenizer.encode_batch(list(zip(*columns)) if len(columns) == 2 else columns[0])

    def encode(self, columns: list[list[str]], max_seq_length: int = 128) -> dict[str, np.ndarray]:
        """Texts (one list, or two for pairs) -> ``input_ids``, ``attention_mask``, ``token_type_ids`` (B, T)."""
        import numpy as np

        encoded = self._tokenized(columns, max_seq_length)
        ids = np.array([e.ids for e in encoded], dtype=np.int64)
        types = (np.array([e.type_ids for e in encoded], dtype=np.int64) if self.sizes["type_vocab"] > 1
                 else np.zeros_like(ids))  # one token type (RoBERTa's table has one row, DistilBERT none): all 0
        return {"input_ids": ids, "attention_mask": np.array([e.attention_mask for e in encoded], dtype=np.int64),
                "token_type_ids": types}

    def predict(self, texts: list[str], pairs: list[str] | None = None, max_seq_length: int = 128) -> list[dict]:
        """One ``{"label", "score"}`` per text (or text pair): the top class and its probability, or the
        regression value (``label`` None). Imports no numpy: a fresh process that scores a few texts starts
        faster."""
        if pairs is not None and len(pairs) != len(texts):
            raise XtcError(f"{len(texts)} texts but {len(pairs)} text pairs: give one pair per text")
        if not texts:
            return []
        encoded = self._tokenized([texts] if pairs is None else [texts, pairs], max_seq_length)
        B, T = len(encoded), len(encoded[0].ids)
        ids = array("q", [i for e in encoded for i in e.ids])
        mask = array("q", [m for e in encoded for m in e.attention_mask])
        types = (array("q", [t for e in encoded for t in e.type_ids]) if self.sizes["type_vocab"] > 1
                 else array("q", bytes(8 * B * T)))
        logits = self._forward(ids, mask, types, B, T)
        L = self._labels
        return predictions([logits[b * L:(b + 1) * L].tolist() for b in range(B)], self.config.get("id2label"))

    def logits(self, input_ids, attention_mask=None, token_type_ids=None) -> np.ndarray:
        """int arrays ``(B, T)`` -> float32 ``(B, num_labels)``. ``token_type_ids`` are ignored by a model
        without a token-type table (DistilBERT, whose forward in transformers takes none)."""
        import numpy as np

        ids = np.ascontiguousarray(input_ids, dtype=np.int64)
        if ids.ndim != 2 or not ids.shape[0] or not ids.shape[1]:
            raise XtcError(f"input_ids must be (batch, tokens), got {list(ids.shape)}")
        B, T = ids.shape
        mask = np.ones_like(ids) if attention_mask is None else np.ascontiguousarray(attention_mask, dtype=np.int64)
        types = (np.zeros_like(ids) if token_type_ids is None or not self.arch.token_type_embeddings
                 else np.ascontiguousarray(token_type_ids, dtype=np.int64))
        if mask.shape != ids.shape or types.shape != ids.shape:
            raise XtcError(f"attention_mask and token_type_ids must be {list(ids.shape)} like input_ids")
        return np.frombuffer(self._forward(ids, mask, types, B, T), np.float32).reshape(B, self._labels)

    def _forward(self, ids, mask, types, B: int, T: int) -> array:
        """int64 buffers of ``B * T`` ids, mask and token types (numpy arrays or ``array("q")``) -> float32
        logits ``B * num_labels``, flat."""
        z = self.sizes
        flat_ids, flat_types = (memoryview(a).cast("B").cast("q") for a in (ids, types))
        if min(flat_ids) < 0 or max(flat_ids) >= z["vocab"]:
            raise XtcError(f"token ids must be in 0..{z['vocab'] - 1}")
        if min(flat_types) < 0 or max(flat_types) >= z["type_vocab"]:
            raise XtcError(f"token type ids must be in 0..{z['type_vocab'] - 1}")
        positions = self._positions(flat_ids, B, T)
        logits = array("f", bytes(4 * B * self._labels))
        _lowbit.forward(self._model, ids, positions, types, mask, B, T, logits, self._path, self.threads)
        if not all(map(math.isfinite, logits)):
            raise XtcError(f"{self.folder}: the model computed non-finite logits (its stored values overflow)")
        return logits

    def _positions(self, ids: memoryview, B: int, T: int) -> array:
        """``B * T`` position ids: 0..T-1, or RoBERTa's: padding_idx + 1 + the index among the tokens that are
        not padding, padding_idx on padding (transformers' create_position_ids_from_input_ids)."""
        if T > self.max_tokens:
            raise XtcError(f"input_ids have {T} tokens; this model takes at most {self.max_tokens}")
        if not self.arch.positions_after_padding:
            return array("q", range(T)) * B
        pad = self.config["pad_token_id"]
        positions = array("q", bytes(8 * B * T))
        for b in range(B):
            seen = 0
            for i in range(b * T, (b + 1) * T):
                real = ids[i] != pad
                seen += real
                positions[i] = pad + seen if real else pad
        return positions


def predictions(logits: list[list[float]], id2label: dict | None) -> list[dict]:
    """Rows of logits -> one ``{"label", "score"}`` each: the top class and its softmax probability, or, for a
    single logit (regression), ``label`` None and the value."""
    labels = {int(k): v for k, v in (id2label or {}).items()}
    results = []
    for row in logits:
        if len(row) == 1:
            results.append({"label": None, "score": float(row[0])})
            continue
        top = max(range(len(row)), key=row.__getitem__)
        results.append({"label": labels.get(top, f"LABEL_{top}"),
                        "score": 1 / sum(math.exp(v - row[top]) for v in row)})
    return results


load = Engine.load  # xtc.load: a packed folder -> its Engine


def engine_for(folder: str | Path) -> "Engine | None":
    """The engine of a packed folder, or None when ``folder`` is not one (a Hugging Face or fake-quant folder)."""
    from xtc.packed.layout import WEIGHTS_FILE

    return Engine.load(folder) if (Path(folder) / WEIGHTS_FILE).is_file() else None
