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
"""

from types import SimpleNamespace

import torch
from tqdm.auto import tqdm
from transformers import DataCollatorWithPadding

from xtc.distill import DistillationLoss


class TeacherCache:
    """Call it like the teacher, with a batch's model inputs (tensors of shape (batch, seq))."""

    def __init__(self, teacher: torch.nn.Module, kd: DistillationLoss, max_bytes: int,
                 features: list[dict] = (), tokenizer=None, batch_size: int = 64):
        self.teacher, self.kd, self.max_bytes = teacher, kd, max_bytes
        self.features, self.tokenizer, self.batch_size = features, tokenizer, batch_size
        # the indices of outputs.hidden_states / outputs.attentions the loss reads
        self.hidden_ids = [0] + [t + 1 for t in kd.teacher_layers] if kd.needs_hidden_states else []
        self.attention_ids = list(kd.teacher_layers) if kd.needs_attentions else []
        self.entries: dict[bytes, tuple] = {}  # key -> (logits (labels,), [hidden (n, H)], [scores (heads, n, n)])
        self.bytes = 0
        self.filled = max_bytes <= 0 or not features
        self.hits = self.misses = 0

    def _run_teacher(self, inputs: dict):
        with torch.no_grad():
            return self.teacher(**inputs, output_hidden_states=self.kd.needs_hidden_states,
                                output_attentions=self.kd.needs_attentions)

    def fill(self) -> None:
        """Run the teacher over the training examples, shortest first, keeping outputs up to ``max_bytes``."""
        self.filled = True
        ordered = sorted(self.features, key=lambda feature: len(feature["input_ids"]))
        device = next(self.teacher.parameters()).device
        collate = DataCollatorWithPadding(self.tokenizer)  # not a DataLoader: its iterator draws from torch's RNG
        for start in tqdm(range(0, len(ordered), self.batch_size), desc="teacher outputs", leave=False):
            batch = collate(ordered[start:start + self.batch_size])
            inputs = {k: v.to(device) for k, v in batch.items() if k != "labels"}
            out = self._run_teacher(inputs)
            lengths = inputs["attention_mask"].sum(1).tolist()
            for row, (n, key) in enumerate(zip(lengths, self._keys(inputs, lengths))):
                entry = self._entry(out, row, n)
                size = sum(t.numel() * t.element_size() for t in [entry[0], *entry[1], *entry[2]])
                if self.bytes + size > self.max_bytes:
                    return
                if key not in self.entries:
                    self.entries[key] = entry
                    self.bytes += size

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
        fresh = {}
        if missing:  # run the teacher on the examples not kept, cut to their longest
            width = max(lengths[row] for row in missing)
            out = self._run_teacher({k: v[missing, :width] for k, v in inputs.items()})
            fresh = {row: self._entry(out, i, lengths[row]) for i, row in enumerate(missing)}
        rows = [fresh[row] if row in fresh else self.entries[key] for row, key in enumerate(keys)]
        return self._pad(rows, lengths, mask.size(1))

    @staticmethod
    def _keys(inputs: dict, lengths: list[int]) -> list[bytes]:
        """Each row's tokens (and token types) as bytes; one copy to the host for the batch."""
        ids = inputs["input_ids"].cpu().numpy()  # (batch, seq)
        types = inputs["token_type_ids"].cpu().numpy() if "token_type_ids" in inputs else None
        return [ids[row, :n].tobytes() + (b"|" + types[row, :n].tobytes() if types is not None else b"")
                for row, n in enumerate(lengths)]

    def _entry(self, out, row: int, n: int) -> tuple:
        return (out.logits[row].clone(),
                [out.hidden_states[j][row, :n].clone() for j in self.hidden_ids],
                [out.attentions[j][row, :, :n, :n].clone() for j in self.attention_ids])

    def _pad(self, rows: list[tuple], lengths: list[int], seq: int) -> SimpleNamespace:
        """The batch's outputs from per-example entries; padded positions are zeros (the loss masks them)."""
        batch = len(rows)
        hidden_states = attentions = None
        if self.hidden_ids:
            hidden_states = [None] * (max(self.hidden_ids) + 1)
            for i, j in enumerate(self.hidden_ids):
                states = rows[0][1][i].new_zeros(batch, seq, rows[0][1][i].size(-1))  # (batch, seq, H)
                for row, (entry, n) in enumerate(zip(rows, lengths)):
                    states[row, :n] = entry[1][i]
                hidden_states[j] = states
        if self.attention_ids:
            attentions = [None] * (max(self.attention_ids) + 1)
            for i, j in enumerate(self.attention_ids):
                scores = rows[0][2][i].new_zeros(batch, rows[0][2][i].size(0), seq, seq)  # (batch, heads, seq, seq)
                for row, (entry, n) in enumerate(zip(rows, lengths)):
                    scores[row, :, :n, :n] = entry[2][i]
                attentions[j] = scores
        logits = torch.stack([entry[0] for entry in rows])  # (batch, labels)
        return SimpleNamespace(logits=logits, hidden_states=hidden_states, attentions=attentions)
