"""Layer reduction: a shallower student built from a subset of the teacher's layers.

Student layer i starts as a copy of teacher layer ``teacher_layers[i]``;
embeddings, pooler and classifier are copied as they are. No pre-training
distillation: the student is then trained on the task with KD (distill.py).
"""

import copy

import torch

from xtc.errors import XtcError
from xtc.arch import architecture


def default_teacher_layers(num_teacher_layers: int, num_student_layers: int) -> list[int]:
    """Evenly spaced, ending at the last layer: 12 -> 6 gives [1, 3, 5, 7, 9, 11], 6 -> 3 gives [1, 3, 5]."""
    if not 0 < num_student_layers <= num_teacher_layers:
        raise XtcError(
            f"cannot keep {num_student_layers} layers of a {num_teacher_layers}-layer teacher "
            f"(choose 1 to {num_teacher_layers})"
        )
    return [(i + 1) * num_teacher_layers // num_student_layers - 1 for i in range(num_student_layers)]


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
    bad = [i for i in teacher_layers if not 0 <= i < num_teacher]
    if not teacher_layers or bad:
        raise XtcError(
            f"teacher layers {teacher_layers} are not valid for a {num_teacher}-layer teacher "
            f"(0-based indices from 0 to {num_teacher - 1})"
        )
    if len(set(teacher_layers)) != len(teacher_layers):
        raise XtcError(f"teacher layers {teacher_layers} repeat a layer")

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
