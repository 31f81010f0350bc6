"""The one-stage KD loss on the real bert-tiny: each term, its masking and its gradients."""

import math

import pytest
import torch

from xtc.data.tasks import get_task
from xtc.distill import DistillationLoss, expose_attention_scores
from xtc.models import load_model, load_tokenizer
from xtc.reduce import reduce_layers


@pytest.fixture(scope="module")
def batch():
    tok = load_tokenizer("bert-tiny")
    return tok(["a short one", "a much longer sentence with several more words"], padding=True, return_tensors="pt")


@pytest.fixture
def teacher():
    torch.manual_seed(0)
    model, _ = load_model("bert-tiny", get_task("RTE"))
    return model.eval()


def run(model, batch):
    return model(**batch, output_hidden_states=True, output_attentions=True)


def test_scores_attention_keeps_outputs_and_returns_pre_softmax_scores(teacher, batch):
    teacher.set_attn_implementation("eager")
    reference = run(teacher, batch)
    expose_attention_scores(teacher)
    out = run(teacher, batch)
    assert torch.allclose(out.logits, reference.logits, atol=1e-6)
    mask = batch["attention_mask"][:, None, None, :]  # (batch, 1, 1, key)
    probs = out.attentions[0].masked_fill(mask == 0, float("-inf")).softmax(-1)
    assert torch.allclose(probs, reference.attentions[0], atol=1e-6)


def test_identical_student_has_zero_loss(teacher, batch):
    expose_attention_scores(teacher)
    student = expose_attention_scores(reduce_layers(teacher, [0, 1]).eval())
    loss = DistillationLoss([0, 1])(run(student, batch), run(teacher, batch), batch["attention_mask"])
    assert loss["loss"].item() == pytest.approx(0, abs=1e-10)
    assert set(loss) == {"logit", "hidden", "attention", "loss"}


def test_layer_map_and_padding_are_respected(teacher, batch):
    expose_attention_scores(teacher)
    student = expose_attention_scores(reduce_layers(teacher, [1]).eval())
    s, t = run(student, batch), run(teacher, batch)
    mask = batch["attention_mask"]
    terms = DistillationLoss([1])(s, t, mask)
    real = mask.bool()
    hid = sum(((s.hidden_states[i] - t.hidden_states[j])[real] ** 2).mean() for i, j in ((0, 0), (1, 2)))
    assert terms["hidden"].item() == pytest.approx(hid.item(), rel=1e-5)
    pairs = real[:, None, :, None] & real[:, None, None, :]
    att = ((s.attentions[0] - t.attentions[1]) ** 2)[pairs.expand_as(s.attentions[0])].mean()
    assert terms["attention"].item() == pytest.approx(att.item(), rel=1e-5)
    # padded positions do not count: garbage there changes nothing
    s.hidden_states[1][~real] += 100.0
    assert DistillationLoss([1])(s, t, mask)["hidden"].item() == pytest.approx(terms["hidden"].item(), rel=1e-5)


def test_weights_temperature_and_regression(teacher, batch):
    s = type("Out", (), {"logits": torch.tensor([[1.0, 0.0]])})()
    t = type("Out", (), {"logits": torch.tensor([[0.0, 1.0]])})()
    mask = torch.ones(1, 1)
    logit_only = dict(hidden_weight=0, attention_weight=0)
    loss = DistillationLoss([], **logit_only)(s, t, mask)
    # KL(p_t || p_s) with p_t = softmax([0, 1]) = (a, b), p_s = (b, a): (a - b) * log(a / b)
    a, b = torch.tensor([0.0, 1.0]).softmax(-1).tolist()
    expected = torch.tensor((a - b) * math.log(a / b))
    assert set(loss) == {"logit", "loss"} and loss["loss"].item() == pytest.approx(expected.item())
    # soft cross-entropy minus the teacher's entropy: the reference's gradients
    sce = -(torch.tensor([a, b]) * torch.tensor([1.0, 0.0]).log_softmax(-1)).sum()
    entropy = -(a * math.log(a) + b * math.log(b))
    assert loss["loss"].item() == pytest.approx((sce - entropy).item())
    hot = DistillationLoss([], temperature=2.0, **logit_only)(s, t, mask)["logit"]
    a2, b2 = torch.tensor([0.0, 0.5]).softmax(-1).tolist()
    assert hot.item() == pytest.approx((a2 - b2) * math.log(a2 / b2))
    assert DistillationLoss([], logit_weight=3.0, **logit_only)(s, t, mask)["loss"].item() == pytest.approx(3 * expected.item())
    reg = DistillationLoss([], regression=True, **logit_only)(s, t, mask)["logit"]
    assert reg.item() == pytest.approx(1.0)  # mean of (1-0)^2 and (0-1)^2


def test_gradients_reach_the_student_only(teacher, batch):
    expose_attention_scores(teacher)
    student = expose_attention_scores(reduce_layers(teacher, [1]).train())
    with torch.no_grad():
        t = run(teacher, batch)
    DistillationLoss([1])(run(student, batch), t, batch["attention_mask"])["loss"].backward()
    assert all(p.grad is None for p in teacher.parameters())
    assert student.bert.encoder.layer[0].attention.self.query.weight.grad.abs().sum() > 0
