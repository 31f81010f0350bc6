"""The teacher's kept outputs: a batch served from entries kept in other batches (other padding,
other neighbours) gives the KD loss the teacher's own values; the memory limit is kept."""

import pytest
import torch

from xtc.data.batching import make_loader, tokenize
from xtc.data.glue import load_examples
from xtc.data.tasks import get_task
from xtc.distill import DistillationLoss, expose_attention_scores
from xtc.models import load_model, load_tokenizer
from xtc.reduce import reduce_layers
from xtc.teacher_cache import TeacherCache

TASK = get_task("RTE")


@pytest.fixture(scope="module")
def setup(glue_dir):
    tokenizer = load_tokenizer("bert-tiny")
    features = tokenize(tokenizer, load_examples(TASK, "train", glue_dir, 24), 128)
    torch.manual_seed(0)
    teacher, _ = load_model("bert-tiny", TASK)
    expose_attention_scores(teacher.eval())
    student = expose_attention_scores(reduce_layers(load_model("bert-tiny", TASK)[0], [1]).eval())
    return tokenizer, features, teacher, student


def batches(tokenizer, features, batch_size, seed):
    return [{k: v for k, v in b.items() if k != "labels"}
            for b in make_loader(tokenizer, features, batch_size, shuffle=True, seed=seed)]


def kd_terms(kd, student, teacher_out, inputs):
    with torch.no_grad():
        out = student(**inputs, output_hidden_states=True, output_attentions=True)
    return kd(out, teacher_out, inputs["attention_mask"])


def check_same_loss(kd, student, cache, inputs):
    kept, fresh = cache(inputs), cache._run_teacher(inputs)
    for name, value in kd_terms(kd, student, kept, inputs).items():
        assert value.item() == pytest.approx(kd_terms(kd, student, fresh, inputs)[name].item(), rel=1e-4, abs=1e-6), name
    torch.testing.assert_close(kept.logits, fresh.logits, rtol=1e-5, atol=1e-6)
    mask = inputs["attention_mask"].bool()
    torch.testing.assert_close(kept.hidden_states[2][mask], fresh.hidden_states[2][mask], rtol=1e-5, atol=1e-5)


def test_kept_outputs_give_the_teachers_loss_on_training_batches(setup):
    tokenizer, features, teacher, student = setup
    kd = DistillationLoss([1])
    cache = TeacherCache(teacher, kd, 2**30, features, tokenizer, batch_size=7)
    for inputs in batches(tokenizer, features, 5, seed=2):  # other neighbours and padded widths than the fill's
        check_same_loss(kd, student, cache, inputs)
    assert len(cache.entries) == len(features) and (cache.hits, cache.misses) == (len(features), 0)


def test_kept_values_do_not_depend_on_the_batches_seen(setup):
    """What makes a resumed stage end with the same weights: the values come from the fill alone."""
    tokenizer, features, teacher, _ = setup
    kd = DistillationLoss([1])
    first, second = (TeacherCache(teacher, kd, 2**30, features, tokenizer) for _ in range(2))
    for inputs in batches(tokenizer, features, 6, seed=1):
        first(inputs)
    inputs = batches(tokenizer, features, 6, seed=3)[0]
    a, b = first(inputs), second(inputs)
    assert torch.equal(a.logits, b.logits) and torch.equal(a.attentions[1], b.attentions[1])


def test_memory_limit_keeps_the_shortest_and_runs_the_teacher_on_the_rest(setup):
    tokenizer, features, teacher, student = setup
    kd = DistillationLoss([1])
    whole = TeacherCache(teacher, kd, 2**30, features, tokenizer)
    whole.fill()
    limited = TeacherCache(teacher, kd, whole.bytes // 3, features, tokenizer)
    limited.fill()
    assert 0 < len(limited.entries) < len(features) and limited.bytes <= limited.max_bytes
    longest_kept = max(len(key) for key in limited.entries)
    assert all(len(key) >= longest_kept for key in whole.entries if key not in limited.entries)
    inputs = batches(tokenizer, features, 12, seed=0)[0]
    check_same_loss(kd, student, limited, inputs)  # a batch mixing kept and new examples
    assert limited.hits and limited.misses


def test_switched_off_or_left_padded_runs_the_teacher(setup):
    tokenizer, features, teacher, _ = setup
    kd = DistillationLoss([1])
    off = TeacherCache(teacher, kd, 0, features, tokenizer)
    off(batches(tokenizer, features, 12, seed=0)[0])
    assert not off.entries and off.hits == 0
    cache = TeacherCache(teacher, kd, 2**30, features, tokenizer)
    left = tokenizer(["a short one", "a much longer sentence with several more words"], padding=True,
                     padding_side="left", return_tensors="pt")
    out = cache(dict(left))
    assert cache.hits == 0 and out.logits.shape == (2, TASK.num_labels)


def test_a_store_is_written_once_and_read_by_the_next_cache(setup, tmp_path):
    tokenizer, features, teacher, student = setup
    kd = DistillationLoss([1])
    calls = []
    hook = teacher.register_forward_hook(lambda *_: calls.append(1))
    try:
        first = TeacherCache(teacher, kd, 0, features, tokenizer, batch_size=7, store=tmp_path)
        inputs = batches(tokenizer, features, 5, seed=2)
        check_same_loss(kd, student, first, inputs[0])  # fills: runs the teacher, writes the files
        assert not first.loaded_from_store and calls
        calls.clear()
        second = TeacherCache(teacher, kd, 0, features, tokenizer, batch_size=7, store=tmp_path)
        for batch in inputs:
            a, b = first(batch), second(batch)
            assert torch.equal(a.logits, b.logits) and torch.equal(a.hidden_states[2], b.hidden_states[2])
            assert torch.equal(a.attentions[1], b.attentions[1])
        assert second.loaded_from_store and not calls  # read, not run
    finally:
        hook.remove()
    assert len(list(tmp_path.iterdir())) == 1  # one folder, no leftover temporary one
    other_layers = TeacherCache(teacher, DistillationLoss([0]), 0, features, tokenizer, batch_size=7, store=tmp_path)
    other_layers(inputs[0])
    assert not other_layers.loaded_from_store and len(list(tmp_path.iterdir())) == 2  # other layers, other files


def test_a_store_is_not_read_for_another_teacher(setup, tmp_path):
    tokenizer, features, teacher, _ = setup
    kd = DistillationLoss([1])
    TeacherCache(teacher, kd, 0, features, tokenizer, store=tmp_path).fill()
    changed, _ = load_model("bert-tiny", TASK)
    expose_attention_scores(changed.eval())
    with torch.no_grad():
        changed.classifier.weight.add_(1.0)
    cache = TeacherCache(changed, kd, 0, features, tokenizer, store=tmp_path)
    cache.fill()
    assert not cache.loaded_from_store
