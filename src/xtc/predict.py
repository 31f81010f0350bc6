"""Predictions of a trained (or packed) model on raw text: labels and scores, batched."""

import torch

from xtc.errors import XtcError
from xtc.evaluation import load_trained, recorded_task
from xtc.models import load_tokenizer
from xtc.progress import bar


@torch.no_grad()
def predict(model_dir: str, examples: list[tuple[str, ...]], batch_size: int = 32,
            max_seq_length: int = 128) -> list[dict]:
    """One ``{"label", "score"}`` per example: the top class and its probability, or the regression value."""
    model = load_trained(model_dir)
    _check_example_width(model_dir, recorded_task(model.config), examples)
    tokenizer = load_tokenizer(model_dir)
    regression = model.config.num_labels == 1
    labels = model.config.id2label
    results = []
    batches = range(0, len(examples), batch_size)
    for start in bar(batches, desc="predict", leave=False, enabled=len(batches) > 1):
        chunk = examples[start:start + batch_size]
        columns = [list(c) for c in zip(*chunk)]
        batch = tokenizer(*columns, truncation=True, max_length=max_seq_length, padding=True, return_tensors="pt")
        logits = model(**batch).logits  # (batch, num_labels)
        if regression:
            results += [{"label": None, "score": float(v)} for v in logits[:, 0]]
        else:
            probs = logits.softmax(-1)
            best = probs.argmax(-1)
            results += [{"label": labels[int(i)], "score": float(probs[j, i])} for j, i in enumerate(best)]
    return results


def _check_example_width(model_dir: str, task, examples: list[tuple[str, ...]]) -> None:
    """Single texts for a sentence-pair model (or pairs for a single-text one) give scores that mean nothing."""
    if task is None or not examples:
        return
    width, wanted = len(examples[0]), len(task.text_columns)
    if width == wanted:
        return
    if wanted == 2:
        raise XtcError(f"{model_dir} was trained on {task.name}, which scores pairs of texts: give a --text-pair for "
                       "each --text (or two tab-separated columns in --input)")
    raise XtcError(f"{model_dir} was trained on {task.name}, which scores single texts: drop --text-pair (or the "
                   "second column of --input)")
