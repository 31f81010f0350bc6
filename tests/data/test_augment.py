"""TinyBERT-style augmentation on real SST-2 and RTE rows, with bert-tiny's masked-LM head."""

import pytest

from xtc.data import augment as augment_module
from xtc.data.augment import CandidateFinder, augment
from xtc.data.glue import load_examples
from xtc.data.tasks import get_task


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XTC_CACHE", str(tmp_path))
    return tmp_path


@pytest.fixture(scope="module")
def rows(glue_dir):
    return load_examples(get_task("RTE"), "train", glue_dir, max_samples=4)


def test_variants_follow_the_originals_and_keep_labels(rows):
    out = augment(rows, copies=3, replace_prob=0.4, seed=0)
    assert out[: len(rows)] == rows and len(out) == len(rows) * 4
    for i, row in enumerate(rows):
        variants = out[len(rows) + 3 * i: len(rows) + 3 * (i + 1)]
        assert all(v.label == row.label and len(v.texts) == 2 for v in variants)
        assert all(len(v.texts[0].split()) == len(row.texts[0].split()) for v in variants)


def test_deterministic_by_seed(rows, cache):
    first = augment(rows, copies=2, replace_prob=0.4, seed=1)
    for f in cache.rglob("*.jsonl"):
        f.unlink()  # recompute, not re-read
    assert augment(rows, copies=2, replace_prob=0.4, seed=1) == first
    assert augment(rows, copies=2, replace_prob=0.4, seed=2) != first


def test_replacements_come_from_the_candidates_at_about_the_rate(rows):
    finder = CandidateFinder("bert-tiny", 15)
    out = augment(rows, copies=20, replace_prob=0.4, seed=3)
    changed = eligible = 0
    for i, row in enumerate(rows):
        words = row.texts[0].split()
        candidates = finder.candidates(words)
        for variant in out[len(rows) + 20 * i: len(rows) + 20 * (i + 1)]:
            for word, new, cands in zip(words, variant.texts[0].split(), candidates):
                if cands:
                    eligible += 1
                    changed += new != word
                    assert new == word or new in cands
                else:
                    assert new == word
    assert 0.3 < changed / eligible < 0.5


def no_finder(monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("candidates recomputed despite the cache")

    monkeypatch.setattr(augment_module, "CandidateFinder", fail)


def test_cached_variants_are_reused(rows, cache, monkeypatch):
    first = augment(rows, copies=2, replace_prob=0.4, seed=0)
    assert len(list((cache / "augment").glob("candidates-*.jsonl"))) == 1
    no_finder(monkeypatch)
    assert augment(rows, copies=2, replace_prob=0.4, seed=0) == first


def test_another_seed_draws_from_the_cached_candidates(rows, monkeypatch):
    """The candidates do not depend on the seed: a study's second seed runs no masked LM."""
    first = augment(rows, copies=2, replace_prob=0.4, seed=0)
    no_finder(monkeypatch)
    second = augment(rows, copies=2, replace_prob=0.4, seed=1)
    assert second[: len(rows)] == rows and second != first


def test_the_head_on_masked_positions_finds_what_the_whole_model_finds(glue_dir):
    """The prediction head runs on the masked positions only; the candidates are those of the full logits
    (scored up to float rounding: on these rows in the same order too, but near ties may swap)."""
    finder = CandidateFinder("bert-tiny", 15)
    assert finder.head is not None
    texts = [t for e in load_examples(get_task("RTE"), "train", glue_dir, max_samples=12) for t in e.texts]
    fast = [finder.candidates(t.split()) for t in texts]
    finder.head = None  # the whole model: logits at every position of every variant
    assert [finder.candidates(t.split()) for t in texts] == fast


def test_embedding_neighbours_without_a_masked_lm_head():
    finder = CandidateFinder("minilm-l6", 5)  # a sentence encoder: no masked-LM head
    assert finder.mlm is None
    film, good = finder.candidates(["film", "wonderful"])
    assert {"movie", "films", "movies", "cinema"} & set(film)
    assert {"great", "lovely", "fantastic", "terrific", "marvelous", "amazing"} & set(good)
