"""Which teacher layers a layer-reduced student keeps: the defaults and the checks, without torch (the
checks run before any work starts, and again where the student is built)."""

from xtc.errors import XtcError


def default_teacher_layers(num_teacher_layers: int, num_student_layers: int) -> list[int]:
    """Evenly spaced, ending at the last layer: 12 -> 6 gives [1, 3, 5, 7, 9, 11], 6 -> 3 gives [1, 3, 5]."""
    if not 0 < num_student_layers <= num_teacher_layers:
        raise XtcError(
            f"cannot keep {num_student_layers} layers of a {num_teacher_layers}-layer teacher "
            f"(choose 1 to {num_teacher_layers})"
        )
    return [(i + 1) * num_teacher_layers // num_student_layers - 1 for i in range(num_student_layers)]


def teacher_layers_problem(teacher_layers: list[int], num_teacher: int) -> str | None:
    """Why ``teacher_layers`` (0-based) cannot be kept from a ``num_teacher``-layer teacher, or None."""
    bad = [i for i in teacher_layers if not 0 <= i < num_teacher]
    if not teacher_layers or bad:
        return (f"teacher layers {list(teacher_layers)} are not valid for a {num_teacher}-layer teacher "
                f"(0-based indices from 0 to {num_teacher - 1})")
    if len(set(teacher_layers)) != len(teacher_layers):
        return f"teacher layers {list(teacher_layers)} repeat a layer"
    return None
