"""Knowledge distillation: XTC's one-stage loss (XTC paper, arXiv:2206.01859), term by term.

    L = w_logit * KL(teacher_logits / T || student_logits / T)       (MSE for regression)
      + w_att   * sum_l MSE(att_s[l], att_t[m(l)])   over real (query, key) pairs, pre-softmax
      + w_hid   * sum_l MSE(hid_s[l], hid_t[m'(l)])  over real tokens, embedding output included

with ``m(l) = teacher_layers[l]`` and ``m'(0) = 0, m'(l + 1) = teacher_layers[l] + 1``.
The logit term is the reference's soft cross-entropy minus the teacher's entropy
(a constant per batch), i.e. the KL divergence: the same gradients, and 0 when
the student matches the teacher. A two-stage schedule (intermediate-layer KD, then prediction-layer KD) is the
same loss with the logit weight, then the layer weights, set to 0.

Attention scores before the softmax are not what transformers returns, so
``expose_attention_scores`` switches a model to an eager attention function that
returns the raw scores ``Q K^T * scaling`` (batch, heads, query, key) as its
attention output; the attention result itself is unchanged.
"""

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AttentionInterface
from transformers.masking_utils import AttentionMaskInterface, eager_mask

SCORES_ATTENTION = "xtc_scores"


def _scores_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    # query/key/value: (batch, heads, seq, head_dim); attention_mask: additive, (batch, 1, q|1, seq)
    scaling = query.size(-1) ** -0.5 if scaling is None else scaling
    scores = torch.matmul(query, key.transpose(2, 3)) * scaling  # (batch, heads, seq, seq)
    weights = scores if attention_mask is None else scores + attention_mask
    weights = F.dropout(weights.softmax(-1), p=dropout, training=module.training)
    output = torch.matmul(weights, value).transpose(1, 2).contiguous()  # (batch, seq, heads, head_dim)
    return output, scores


AttentionInterface.register(SCORES_ATTENTION, _scores_attention)
AttentionMaskInterface.register(SCORES_ATTENTION, eager_mask)  # additive masks, as for eager


def expose_attention_scores(model: nn.Module) -> nn.Module:
    """Make ``output_attentions=True`` return pre-softmax scores (eager attention)."""
    model.set_attn_implementation(SCORES_ATTENTION)
    return model


def _masked_mse(student: torch.Tensor, teacher: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean squared error over the positions where ``mask`` (broadcastable, 0/1) is 1, in float32
    (under bf16 autocast the student's tensors may be bfloat16; a bf16 sum of the mask is not a count)."""
    mask = mask.float().expand_as(student)
    return ((student.float() - teacher.float()) ** 2 * mask).sum() / mask.sum().clamp(min=1)


class DistillationLoss(nn.Module):
    """One-stage KD loss between a student and a teacher run on the same batch.

    Both models' outputs must come from ``output_hidden_states=True`` (when
    ``hidden_weight`` > 0) and ``output_attentions=True`` with
    ``expose_attention_scores`` (when ``attention_weight`` > 0).
    """

    def __init__(self, teacher_layers: list[int], *, logit_weight: float = 1.0, hidden_weight: float = 1.0,
                 attention_weight: float = 1.0, temperature: float = 1.0, regression: bool = False):
        super().__init__()
        self.teacher_layers = list(teacher_layers)
        self.logit_weight, self.hidden_weight, self.attention_weight = logit_weight, hidden_weight, attention_weight
        self.temperature = temperature
        self.regression = regression

    @property
    def needs_hidden_states(self) -> bool:
        return self.hidden_weight > 0

    @property
    def needs_attentions(self) -> bool:
        return self.attention_weight > 0

    def forward(self, student, teacher, attention_mask: torch.Tensor) -> dict[str, torch.Tensor]:
        """Returns ``{"loss": total, "logit": ..., "hidden": ..., "attention": ...}`` (terms with weight 0 omitted).

        ``attention_mask``: (batch, seq), 1 for real tokens.
        """
        terms = {}
        if self.logit_weight > 0:
            s, t = student.logits.float(), teacher.logits.float()  # (batch, labels)
            if self.regression:
                terms["logit"] = F.mse_loss(s, t)
            else:
                log_p_t, log_p_s = F.log_softmax(t / self.temperature, -1), F.log_softmax(s / self.temperature, -1)
                terms["logit"] = (log_p_t.exp() * (log_p_t - log_p_s)).sum(-1).mean()
        if self.needs_hidden_states:
            token_mask = attention_mask[:, :, None]  # (batch, seq, 1)
            pairs = [(0, 0)] + [(i + 1, t + 1) for i, t in enumerate(self.teacher_layers)]
            terms["hidden"] = sum(
                _masked_mse(student.hidden_states[i], teacher.hidden_states[j], token_mask) for i, j in pairs
            )
        if self.needs_attentions:
            pair_mask = attention_mask[:, None, :, None] * attention_mask[:, None, None, :]  # (batch, 1, q, k)
            terms["attention"] = sum(
                _masked_mse(student.attentions[i], teacher.attentions[t], pair_mask)
                for i, t in enumerate(self.teacher_layers)
            )
        weights = {"logit": self.logit_weight, "hidden": self.hidden_weight, "attention": self.attention_weight}
        terms["loss"] = sum(weights[name] * value for name, value in terms.items())
        return terms
