"""Layer reduction on the real bert-tiny and on tiny models of every supported family."""

import pytest
import torch

from tests.test_models import CONFIGS, tiny_config
from xtc.data.tasks import get_task
from xtc.errors import XtcError
from xtc.arch import architecture
from xtc.models import load_model
from xtc.layer_choice import default_teacher_layers
from xtc.reduce import reduce_layers


@pytest.mark.parametrize("n,k,expected", [(12, 6, [1, 3, 5, 7, 9, 11]), (6, 3, [1, 3, 5]), (6, 2, [2, 5]),
                                          (6, 6, [0, 1, 2, 3, 4, 5]), (12, 1, [11])])
def test_default_layers_are_evenly_spaced_ending_at_the_last(n, k, expected):
    assert default_teacher_layers(n, k) == expected


@pytest.mark.parametrize("model_type", list(CONFIGS))
def test_student_layers_are_copies_of_the_chosen_teacher_layers(model_type):
    from transformers import AutoModelForSequenceClassification

    torch.manual_seed(0)
    teacher = AutoModelForSequenceClassification.from_config(tiny_config(model_type)).eval()
    student = reduce_layers(teacher, [0, 2])
    arch = architecture(model_type)
    assert getattr(student.config, arch.num_layers_key) == 2 and student.config.xtc_teacher_layers == [0, 2]
    assert getattr(teacher.config, arch.num_layers_key) == 3  # the teacher is untouched
    t_layers, s_layers = teacher.get_submodule(arch.layers), student.get_submodule(arch.layers)
    for s, t in ((0, 0), (1, 2)):
        for (name, p), (_, q) in zip(s_layers[s].state_dict().items(), t_layers[t].state_dict().items()):
            assert torch.equal(p, q), name
    for name in (arch.embeddings, *arch.head):
        for (k, p), (_, q) in zip(student.get_submodule(name).state_dict().items(),
                                  teacher.get_submodule(name).state_dict().items()):
            assert torch.equal(p, q), f"{name}.{k}"
    # a copy, not a view: training the student leaves the teacher alone
    with torch.no_grad():
        next(s_layers[0].parameters()).add_(1.0)
    assert not torch.equal(next(s_layers[0].parameters()), next(t_layers[0].parameters()))


def test_keeping_every_layer_reproduces_the_teacher():
    teacher, _ = load_model("bert-tiny", get_task("RTE"))
    teacher.eval()
    student = reduce_layers(teacher, [0, 1]).eval()
    ids = torch.tensor([[101, 7592, 2088, 102]])
    s, t = (m(input_ids=ids, output_hidden_states=True) for m in (student, teacher))
    assert torch.equal(s.logits, t.logits)
    assert len(s.hidden_states) == 3 and all(torch.equal(a, b) for a, b in zip(s.hidden_states, t.hidden_states))


@pytest.mark.parametrize("layers,pattern", [([], "not valid"), ([0, 2], r"not valid for a 2-layer teacher"),
                                            ([1, 1], "repeat a layer"), ([-1], "not valid")])
def test_bad_layer_lists(layers, pattern):
    teacher, _ = load_model("bert-tiny", get_task("RTE"))
    with pytest.raises(XtcError, match=pattern):
        reduce_layers(teacher, layers)
