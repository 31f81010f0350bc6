"""Tokenize GLUE examples once, and batch them with dynamic padding.

Each batch is padded to its own longest sequence (DataCollatorWithPadding), not
to ``max_seq_length``: on short-sentence tasks this is most of the speed.
"""

import torch
from torch.utils.data import DataLoader
from transformers import DataCollatorWithPadding

from xtc.data.glue import Example


def tokenize(tokenizer, examples: list[Example], max_seq_length: int) -> list[dict]:
    columns = list(zip(*(e.texts for e in examples)))  # one tuple per text column
    encoded = tokenizer(*[list(c) for c in columns], truncation=True, max_length=max_seq_length)
    features = [dict(zip(encoded.keys(), values)) for values in zip(*encoded.values())]
    for feature, example in zip(features, examples):
        feature["labels"] = example.label
    return features


def make_loader(tokenizer, features: list[dict], batch_size: int, shuffle: bool, seed: int = 0) -> DataLoader:
    generator = torch.Generator().manual_seed(seed) if shuffle else None
    return DataLoader(
        features,
        batch_size=batch_size,
        shuffle=shuffle,
        generator=generator,
        collate_fn=DataCollatorWithPadding(tokenizer),
    )
