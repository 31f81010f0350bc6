"""Tokenize GLUE examples once, and batch them with dynamic padding.

Each batch is padded to its own longest sequence (DataCollatorWithPadding), not
to ``max_seq_length``: on short-sentence tasks this is most of the speed. With
``group_by_length`` the batches are also made of examples of similar length
(``LengthGroupedBatches``), which leaves little padding at all.
"""

import torch
from torch.utils.data import DataLoader, Sampler
from transformers import DataCollatorWithPadding

from xtc.data.glue import Example


def tokenize(tokenizer, examples: list[Example], max_seq_length: int) -> list[dict]:
    columns = list(zip(*(e.texts for e in examples)))  # one tuple per text column
    encoded = tokenizer(*[list(c) for c in columns], truncation=True, max_length=max_seq_length)
    features = [dict(zip(encoded.keys(), values)) for values in zip(*encoded.values())]
    for feature, example in zip(features, examples):
        feature["labels"] = example.label
    return features


# Examples sorted together: 50 batches' worth, as transformers' LengthGroupedSampler.
MEGABATCH_BATCHES = 50


class LengthGroupedBatches(Sampler[list[int]]):
    """One epoch of batches (lists of example indices) of similar lengths, a function of ``generator``.

    A random permutation is cut into megabatches of ``MEGABATCH_BATCHES * batch_size`` examples;
    each is sorted by length, longest first, and cut into batches; then the order of the full
    batches is shuffled, and a short one (``n`` not a multiple of ``batch_size``) goes last.
    As with plain shuffling, every example appears once in ``ceil(n / batch_size)`` batches,
    so step counts and resuming by skipping batches are unchanged; and only the last batch is
    short, which is what Accelerate's split across processes expects (it drops a short batch
    anywhere else). ``batch_size`` and ``drop_last`` are the attributes that split reads.
    """

    def __init__(self, lengths: list[int], batch_size: int, generator: torch.Generator):
        super().__init__()
        self.batch_size, self.drop_last = batch_size, False
        order = torch.randperm(len(lengths), generator=generator).tolist()
        mega = MEGABATCH_BATCHES * batch_size
        batches = []
        for start in range(0, len(order), mega):
            chunk = sorted(order[start:start + mega], key=lambda i: -lengths[i])  # stable: ties keep the random order
            batches += [chunk[i:i + batch_size] for i in range(0, len(chunk), batch_size)]
        full = [b for b in batches if len(b) == batch_size]
        short = [b for b in batches if len(b) < batch_size]  # at most one: the last megabatch's remainder
        self.batches = [full[i] for i in torch.randperm(len(full), generator=generator).tolist()] + short

    def __iter__(self):
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


def make_loader(tokenizer, features: list[dict], batch_size: int, shuffle: bool, seed: int = 0,
                group_by_length: bool = False) -> DataLoader:
    collate = DataCollatorWithPadding(tokenizer)
    generator = torch.Generator().manual_seed(seed) if shuffle else None
    if group_by_length:
        assert shuffle, "length grouping is for training batches"
        batches = LengthGroupedBatches([len(f["input_ids"]) for f in features], batch_size, generator)
        # the generator also gives the loader's base seed: without it each epoch's iterator draws from torch's
        # global RNG, which the dropout masks share, so a resumed run (RNG restored, iterator made again) diverged
        return DataLoader(features, batch_sampler=batches, generator=generator, collate_fn=collate)
    return DataLoader(features, batch_size=batch_size, shuffle=shuffle, generator=generator, collate_fn=collate)
