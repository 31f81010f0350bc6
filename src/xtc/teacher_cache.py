"""The teacher's outputs on the training examples, computed once per stage instead of once per batch.

A distill stage runs the teacher on every batch, and over several epochs on the same examples
again and again. The teacher is in eval mode, so its output for an example depends only on that
example's tokens. When a stage trains for more than one pass over its data, the cache runs the
teacher once over the training examples (sorted by length, so with little padding) and keeps
each example's logits and the hidden states and attention scores the KD loss compares, cut to
the example's length; every batch is then padded together from those entries. Only padded
positions differ from running the teacher on the batch, and the KD loss masks them; the values
equal a run on the batch up to float rounding (matrix products of other shapes). They are
computed in a fixed order, so a resumed stage computes the same values and ends with the same
weights. With a 3-layer student the teacher's forward is about 30% of a training step (py-spy,
STS-B, W1A8).

Examples are keyed by their tokens (equal augmented copies share an entry). Once ``max_bytes`` is
used the remaining (longest) examples are not kept: the teacher runs on them in each batch.

With a ``store`` folder the outputs go to files there instead of memory (memory-mapped, no
limit), named by a digest of everything they depend on (the teacher's weights, the examples'
tokens, the layers kept, the fill's batch size, torch's version): later stages and other runs
with the same teacher and data (e.g. the cells of a study) read them instead of running the
teacher. Files: ``<digest>/meta.json`` and raw little-endian arrays (no pickles).
"""

import hashlib
import json
import os
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
from transformers import DataCollatorWithPadding

from xtc.provenance import VERSION
from xtc.distill import DistillationLoss
from xtc.progress import bar

STORE_FORMAT = 1


def _key(ids: np.ndarray, types: np.ndarray | None) -> bytes:
    """An example's key: its int64 token ids, and token types when the model has them."""
    return ids.tobytes() + (b"|" + types.tobytes() if types is not None else b"")


class TeacherCache:
    """Call it like the teacher, with a batch's model inputs (tensors of shape (batch, seq))."""

    def __init__(self, teacher: torch.nn.Module, kd: DistillationLoss, max_bytes: int,
                 features: list[dict] = (), tokenizer=None, batch_size: int = 64, store: Path | None = None):
        self.teacher, self.kd, self.max_bytes, self.store = teacher, kd, max_bytes, store
        self.features, self.tokenizer, self.batch_size = features, tokenizer, batch_size
        self.stored = None  # store mode: the memory-mapped arrays; entries then map key -> row
        # the indices of outputs.hidden_states / outputs.attentions the loss reads
        self.hidden_ids = [0] + [t + 1 for t in kd.teacher_layers] if kd.needs_hidden_states else []
        self.attention_ids = list(kd.teacher_layers) if kd.needs_attentions else []
        self.entries: dict[bytes, tuple] = {}  # key -> (logits (labels,), [hidden (n, H)], [scores (heads, n, n)])
        self.bytes = 0
        self.filled = (max_bytes <= 0 and store is None) or not features
        self.loaded_from_store = False
        self.hits = self.misses = 0

    def _run_teacher(self, inputs: dict):
        # float32 even inside a bf16-autocast training step: the targets (and the stored files) do not
        # depend on the student's precision
        device = next(self.teacher.parameters()).device.type
        with torch.no_grad(), torch.autocast(device, enabled=False):
            return self.teacher(**inputs, output_hidden_states=self.kd.needs_hidden_states,
                                output_attentions=self.kd.needs_attentions)

    def _fill_batches(self, ordered: list[dict]):
        """(teacher outputs, lengths) per batch of ``ordered``, in order."""
        device = next(self.teacher.parameters()).device
        collate = DataCollatorWithPadding(self.tokenizer)  # not a DataLoader: its iterator draws from torch's RNG
        for start in bar(range(0, len(ordered), self.batch_size), desc="teacher outputs", leave=False):
            batch = collate(ordered[start:start + self.batch_size])
            inputs = {k: v.to(device) for k, v in batch.items() if k != "labels"}
            yield self._run_teacher(inputs), inputs["attention_mask"].sum(1).tolist()

    def fill(self) -> None:
        """Run the teacher over the training examples, shortest first, keeping outputs up to ``max_bytes``
        (or, with a store, reading them from it, or writing them there)."""
        self.filled = True
        ordered = sorted(self.features, key=lambda feature: len(feature["input_ids"]))
        keys = [_key(np.asarray(f["input_ids"], dtype=np.int64),
                     np.asarray(f["token_type_ids"], dtype=np.int64) if "token_type_ids" in f else None)
                for f in ordered]
        if self.store is not None:
            self._fill_store(ordered, keys)
            return
        rows = iter(keys)
        for out, lengths in self._fill_batches(ordered):
            for i, (n, key) in enumerate(zip(lengths, rows)):
                entry = self._entry(out, i, n)
                size = sum(t.numel() * t.element_size() for t in [entry[0], *entry[1], *entry[2]])
                if self.bytes + size > self.max_bytes:
                    return
                if key not in self.entries:
                    self.entries[key] = entry
                    self.bytes += size

    # ---- store mode ------------------------------------------------------------------------------

    def _digest(self, keys: list[bytes]) -> str:
        h = hashlib.sha256(json.dumps({"format": STORE_FORMAT, "hidden": self.hidden_ids, "attention": self.attention_ids,
                                       "batch_size": self.batch_size, "torch": torch.__version__}).encode())
        for name, tensor in self.teacher.state_dict().items():
            h.update(name.encode())
            h.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
        for key in keys:  # the examples' tokens, in fill order
            h.update(len(key).to_bytes(8, "little") + key)
        return h.hexdigest()[:32]

    def _fill_store(self, ordered: list[dict], keys: list[bytes]) -> None:
        folder = self.store / self._digest(keys)
        config = self.teacher.config
        heads = config.num_attention_heads
        lengths = [len(f["input_ids"]) for f in ordered]
        tokens = np.concatenate([[0], np.cumsum(lengths)])  # row i: tokens[i]:tokens[i + 1] of the hidden arrays
        scores = np.concatenate([[0], np.cumsum([heads * n * n for n in lengths])])  # same for the attention arrays
        shapes = {"logits": (len(ordered), config.num_labels),
                  **{f"hidden.{j}": (int(tokens[-1]), config.hidden_size) for j in self.hidden_ids},
                  **{f"attention.{j}": (int(scores[-1]),) for j in self.attention_ids}}
        self.loaded_from_store = (folder / "meta.json").is_file()
        if not self.loaded_from_store:
            self._write_store(folder, ordered, shapes, tokens, scores)
        arrays = {name: np.memmap(folder / f"{name}.bin", dtype=np.float32, mode="r", shape=shape)
                  for name, shape in shapes.items()}
        self.stored = (arrays, tokens, scores, heads)
        for row, key in enumerate(keys):
            self.entries.setdefault(key, row)

    def _write_store(self, folder: Path, ordered: list[dict], shapes: dict, tokens: np.ndarray,
                     scores: np.ndarray) -> None:
        tmp = folder.with_name(f"{folder.name}.tmp-{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        arrays = {name: np.memmap(tmp / f"{name}.bin", dtype=np.float32, mode="w+", shape=shape)
                  for name, shape in shapes.items()}
        row = 0
        for out, lengths in self._fill_batches(ordered):
            for i, n in enumerate(lengths):
                logits, hidden, attention = self._entry(out, i, n)
                arrays["logits"][row] = logits.cpu().numpy()
                for j, states in zip(self.hidden_ids, hidden):
                    arrays[f"hidden.{j}"][tokens[row]:tokens[row + 1]] = states.cpu().numpy()
                for j, values in zip(self.attention_ids, attention):
                    arrays[f"attention.{j}"][scores[row]:scores[row + 1]] = values.reshape(-1).cpu().numpy()
                row += 1
        for array in arrays.values():
            array.flush()
        meta = {"format": STORE_FORMAT, "xtc": VERSION, "arrays": {k: list(v) for k, v in shapes.items()}}
        (tmp / "meta.json").write_text(json.dumps(meta))
        try:
            tmp.rename(folder)  # whole or not at all; another process may have written the same one meanwhile
        except OSError:
            shutil.rmtree(tmp, ignore_errors=True)

    def _read(self, row: int) -> tuple:
        """One example's outputs from the files, in host memory."""
        arrays, tokens, scores, heads = self.stored
        t0, t1, a0, a1 = tokens[row], tokens[row + 1], scores[row], scores[row + 1]
        n = int(t1 - t0)
        return (torch.from_numpy(np.array(arrays["logits"][row])),
                [torch.from_numpy(np.array(arrays[f"hidden.{j}"][t0:t1])) for j in self.hidden_ids],
                [torch.from_numpy(np.array(arrays[f"attention.{j}"][a0:a1])).view(heads, n, n)
                 for j in self.attention_ids])

    def __call__(self, inputs: dict):
        if not self.filled:
            self.fill()
        mask = inputs["attention_mask"]  # (batch, seq), 1 for real tokens
        lengths = mask.sum(1)
        right_padded = torch.equal(mask.bool(), torch.arange(mask.size(1), device=mask.device) < lengths[:, None])
        if not self.entries or not right_padded:
            return self._run_teacher(inputs)  # nothing kept, or padding on the left: keys would not be the tokens
        lengths = lengths.tolist()
        keys = self._keys(inputs, lengths)
        missing = [row for row, key in enumerate(keys) if key not in self.entries]
        self.hits += len(keys) - len(missing)
        self.misses += len(missing)
        if len(missing) == len(keys):
            return self._run_teacher(inputs)
        # entries kept in files are read into host memory: the batch is padded there and moved to the batch's
        # device (a GPU) in one copy per output, not one per example
        home = torch.device("cpu") if self.stored is not None else mask.device
        fresh = {}
        if missing:  # run the teacher on the examples not kept, cut to their longest
            width = max(lengths[row] for row in missing)
            out = self._run_teacher({k: v[missing, :width] for k, v in inputs.items()})
            fresh = {row: self._entry(out, i, lengths[row], home) for i, row in enumerate(missing)}
        rows = [fresh[row] if row in fresh else self._kept(key) for row, key in enumerate(keys)]
        return self._pad(rows, lengths, mask.size(1), mask.device)

    def _kept(self, key: bytes) -> tuple:
        entry = self.entries[key]
        return self._read(entry) if self.stored is not None else entry

    @staticmethod
    def _keys(inputs: dict, lengths: list[int]) -> list[bytes]:
        """Each row's tokens (and token types) as bytes; one copy to the host for the batch."""
        ids = inputs["input_ids"].cpu().numpy().astype(np.int64, copy=False)  # (batch, seq)
        types = inputs["token_type_ids"].cpu().numpy().astype(np.int64, copy=False) if "token_type_ids" in inputs \
            else None
        return [_key(ids[row, :n], types[row, :n] if types is not None else None) for row, n in enumerate(lengths)]

    def _entry(self, out, row: int, n: int, device: torch.device | None = None) -> tuple:
        """One example's outputs, copied (on ``device`` if given, else where the teacher ran)."""
        return (out.logits[row].to(device, copy=True),
                [out.hidden_states[j][row, :n].to(device, copy=True) for j in self.hidden_ids],
                [out.attentions[j][row, :, :n, :n].to(device, copy=True) for j in self.attention_ids])

    def _pad(self, rows: list[tuple], lengths: list[int], seq: int, device: torch.device) -> SimpleNamespace:
        """The batch's outputs on ``device`` from per-example entries; padded positions are zeros (the loss masks
        them)."""
        batch = len(rows)
        hidden_states = attentions = None
        if self.hidden_ids:
            hidden_states = [None] * (max(self.hidden_ids) + 1)
            for i, j in enumerate(self.hidden_ids):
                states = rows[0][1][i].new_zeros(batch, seq, rows[0][1][i].size(-1))  # (batch, seq, H)
                for row, (entry, n) in enumerate(zip(rows, lengths)):
                    states[row, :n] = entry[1][i]
                hidden_states[j] = states.to(device)
        if self.attention_ids:
            attentions = [None] * (max(self.attention_ids) + 1)
            for i, j in enumerate(self.attention_ids):
                scores = rows[0][2][i].new_zeros(batch, rows[0][2][i].size(0), seq, seq)  # (batch, heads, seq, seq)
                for row, (entry, n) in enumerate(zip(rows, lengths)):
                    scores[row, :, :n, :n] = entry[2][i]
                attentions[j] = scores.to(device)
        logits = torch.stack([entry[0] for entry in rows]).to(device)  # (batch, labels)
        return SimpleNamespace(logits=logits, hidden_states=hidden_states, attentions=attentions)
