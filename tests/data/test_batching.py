"""Training batches: plain shuffling and length grouping (group_by_length) on real STS-B rows."""

import pytest
from accelerate import Accelerator
from accelerate.data_loader import BatchSamplerShard
from accelerate.utils import DataLoaderConfiguration

from xtc.data.batching import MEGABATCH_BATCHES, make_loader, tokenize
from xtc.data.glue import load_examples
from xtc.data.tasks import get_task
from xtc.models import load_tokenizer
from xtc.recipe import TrainArgs
from xtc.train import epoch_steps

BATCH = 16  # megabatches of 50 x 16 = 800 rows: the 1700 rows below make 2 whole ones and a partial one


@pytest.fixture(scope="module")
def data(glue_dir):
    tokenizer = load_tokenizer("bert-tiny")
    return tokenizer, tokenize(tokenizer, load_examples(get_task("STS-B"), "train", glue_dir, 1700), 128)


def ids(loader) -> list[list[int]]:
    """Each batch's rows, named by their token ids (the loader yields tensors, not indices)."""
    return [[tuple(row[row != 0].tolist()) for row in batch["input_ids"]] for batch in loader]


def test_grouped_batches_cover_every_example_once_with_less_padding(data):
    tokenizer, features = data
    grouped = ids(make_loader(tokenizer, features, BATCH, shuffle=True, seed=7, group_by_length=True))
    plain = ids(make_loader(tokenizer, features, BATCH, shuffle=True, seed=7))
    assert len(grouped) == len(plain) == epoch_steps(TrainArgs(batch_size=BATCH), len(features))
    assert sorted(row for b in grouped for row in b) == sorted(tuple(f["input_ids"]) for f in features)

    def padded_tokens(batches):
        return sum(max(map(len, b)) * len(b) for b in batches)

    real = sum(len(f["input_ids"]) for f in features)
    assert padded_tokens(grouped) < 0.8 * padded_tokens(plain)  # measured: STS-B pads 2.4x fewer tokens
    assert padded_tokens(grouped) < 1.1 * real


def test_grouped_order_is_a_function_of_the_seed(data):
    """What resuming relies on: the epoch's batches are made again, identical, from (seed, epoch)."""
    tokenizer, features = data
    first, again, other = (ids(make_loader(tokenizer, features, BATCH, shuffle=True, seed=s, group_by_length=True))
                           for s in (7, 7, 8))
    assert first == again and first != other
    # batches are shuffled across megabatches, not run longest to shortest in blocks of 50
    lengths = [max(map(len, b)) for b in first[:MEGABATCH_BATCHES]]
    assert lengths != sorted(lengths, reverse=True)


def test_grouped_batches_resume_and_split_across_processes_through_accelerate(data):
    tokenizer, features = data
    accelerator = Accelerator(dataloader_config=DataLoaderConfiguration(split_batches=True), cpu=True)
    full = ids(accelerator.prepare(make_loader(tokenizer, features, BATCH, shuffle=True, seed=3, group_by_length=True)))
    loader = accelerator.prepare(make_loader(tokenizer, features, BATCH, shuffle=True, seed=3, group_by_length=True))
    assert ids(accelerator.skip_first_batches(loader, 10)) == full[10:]
    # two processes (--num-processes 2) each take half of every batch, as Accelerate splits them
    sampler = make_loader(tokenizer, features, BATCH, shuffle=True, seed=3, group_by_length=True).batch_sampler
    halves = [list(BatchSamplerShard(sampler, num_processes=2, process_index=i, split_batches=True)) for i in (0, 1)]
    batches = list(sampler)
    assert len(batches[-1]) < BATCH and all(len(b) == BATCH for b in batches[:-1])  # only the last one is short
    assert [a + b for a, b in zip(*halves)][:-1] == batches[:-1]  # (Accelerate pads the short one from the first)
