"""Official GLUE metrics, computed with scikit-learn and scipy.

Values are fractions (0.8512, not 85.12). ``score`` is the task's GLUE score:
the mean of its official metrics (F1/accuracy for MRPC and QQP,
Pearson/Spearman for STS-B), the number used to pick the best checkpoint.
"""

from collections.abc import Sequence

import numpy as np
from scipy.stats import pearsonr, spearmanr
from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

from xtc.data.tasks import GlueTask
from xtc.progress import note

_METRICS = {
    "accuracy": lambda p, y: accuracy_score(y, p),
    "f1": lambda p, y: f1_score(y, p),  # positive class = 1 (paraphrase / duplicate)
    "matthews_correlation": lambda p, y: matthews_corrcoef(y, p),
    "pearson": lambda p, y: pearsonr(p, y).statistic,
    "spearman": lambda p, y: spearmanr(p, y).statistic,
}


def compute_metrics(task: GlueTask, predictions: Sequence, labels: Sequence) -> dict[str, float]:
    """``predictions``: class ids (classification) or scores (regression)."""
    p, y = np.asarray(predictions), np.asarray(labels)
    assert p.shape == y.shape and p.ndim == 1, (p.shape, y.shape)
    values = {name: float(_METRICS[name](p, y)) for name in task.metrics}
    values["score"] = float(np.mean(list(values.values())))
    return values


def warn_degenerate(model: str, task: GlueTask, flags: dict[str, str]) -> None:
    """A warning line for each split whose predictions are degenerate (``{split: degenerate's reason}``)."""
    for split, reason in flags.items():
        note(f"warning: {model} on {task.name} {split}: {reason}: the model has learnt nothing usable", warning=True)


def degenerate(task: GlueTask, predictions: Sequence) -> str | None:
    """Why dev predictions say the model learnt nothing: one class for every example, or a regression
    output that does not vary (its correlations are then undefined or meaningless); None otherwise."""
    p = np.asarray(predictions)
    if task.is_regression:
        return f"every prediction is {float(p.mean()):.4g} (no variance)" if p.size and np.ptp(p) < 1e-6 else None
    classes = np.unique(p)
    if p.size > 1 and len(classes) == 1:
        names = task.label_names or []
        label = names[int(classes[0])] if int(classes[0]) < len(names) else int(classes[0])
        return f"every prediction is {label!r} (one class)"
    return None
