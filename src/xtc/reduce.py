"""Layer reduction: a shallower student built from a subset of the teacher's layers.

Student layer i starts as a copy of teacher layer ``teacher_layers[i]``;
embeddings, pooler and classifier are copied as they are. No pre-training
distillation: the student is then trained on the task with KD (distill.py).
"""

import copy

import torch

from xtc.errors import XtcError
from xtc.layer_choice import teacher_layers_problem
from xtc.arch import architecture


def _layer_source(name: str, prefix: str, teacher_layers: list[int]) -> str:
    """Teacher parameter name for a student parameter name."""
    if not name.startswith(prefix):
        return name
    index, rest = name[len(prefix):].split(".", 1)
    return f"{prefix}{teacher_layers[int(index)]}.{rest}"


def reduce_layers(teacher: torch.nn.Module, teacher_layers: list[int]) -> torch.nn.Module:
    """A new model with ``len(teacher_layers)`` layers copied from the teacher (which is untouched).

    Every student tensor is matched to a teacher tensor by name and shape, and
    every teacher tensor outside the dropped layers is used, or this fails.
    """
    arch = architecture(teacher.config.model_type)
    num_teacher = getattr(teacher.config, arch.num_layers_key)
    teacher_layers = [int(i) for i in teacher_layers]
    problem = teacher_layers_problem(teacher_layers, num_teacher)
    if problem:
        raise XtcError(problem)

    config = copy.deepcopy(teacher.config)
    setattr(config, arch.num_layers_key, len(teacher_layers))
    config.xtc_teacher_layers = teacher_layers
    student = type(teacher)(config)

    prefix = arch.layers + "."
    source = teacher.state_dict()
    copied, used = {}, set()
    for name, tensor in student.state_dict().items():
        origin = _layer_source(name, prefix, teacher_layers)
        assert origin in source, f"no teacher tensor {origin} for student tensor {name}"
        assert source[origin].shape == tensor.shape, (name, origin, source[origin].shape, tensor.shape)
        copied[name] = source[origin].clone()
        used.add(origin)
    dropped = tuple(f"{prefix}{i}." for i in range(num_teacher) if i not in teacher_layers)
    expected = {n for n in source if not n.startswith(dropped)}
    assert used == expected, f"teacher tensors not copied: {sorted(expected - used)[:5]}"
    student.load_state_dict(copied, strict=True)
    return student.train(teacher.training)
