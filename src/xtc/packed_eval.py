"""GLUE scores of a packed folder on the torch-free engine (``xtc.engine``): what ``xtc eval`` runs
for such a folder, importing neither torch nor transformers."""

import numpy as np

from xtc.data.glue import load_examples
from xtc.data.metrics import compute_metrics, degenerate, warn_degenerate
from xtc.data.tasks import check_recorded_task, get_task
from xtc.engine import Engine
from xtc.errors import XtcError
from xtc.progress import bar
from xtc.recipe import EvalConfig


def evaluate_packed(engine: Engine, config: EvalConfig) -> dict[str, dict[str, float]]:
    """``{split: {metric: value}}`` of ``config.task`` (every dev set for split 'dev')."""
    task = get_task(config.task)
    labels = engine.config.get("id2label") or {}
    if len(labels) != task.num_labels:
        raise XtcError(f"{config.model!r} has a {len(labels)}-way head, but {task.name} needs {task.num_labels}")
    check_recorded_task(config.model, engine.config.get("finetuning_task"), task, config.task_mismatch_ok)
    results, flags = {}, {}
    for split in task.dev_splits if config.split == "dev" else [config.split]:
        examples = load_examples(task, split, config.glue_dir, config.max_eval_samples)
        order = np.argsort([sum(len(t) for t in e.texts) for e in examples], kind="stable")  # less padding
        predictions = np.empty(len(examples), dtype=np.float64 if task.is_regression else np.int64)
        batches = range(0, len(examples), config.batch_size)
        for start in bar(batches, desc=f"eval {split}", leave=False, enabled=len(batches) > 1):
            index = order[start:start + config.batch_size]
            columns = [list(c) for c in zip(*(examples[i].texts for i in index))]
            logits = engine.logits(**engine.encode(columns, config.max_seq_length))  # (batch, num_labels)
            predictions[index] = logits[:, 0] if task.is_regression else logits.argmax(-1)
        results[split] = compute_metrics(task, predictions, [e.label for e in examples])
        if reason := degenerate(task, predictions):
            flags[split] = reason
    warn_degenerate(config.model, task, flags)
    return results
