"""Predictions of a trained (or packed) model on raw text: labels and scores, batched."""

import csv
from pathlib import Path

import torch
from tqdm.auto import tqdm

from xtc.errors import XtcError
from xtc.evaluation import load_trained
from xtc.models import load_tokenizer


def read_inputs(path: Path) -> list[tuple[str, ...]]:
    """A TSV file: one example per line, one column (text) or two (text, text pair); no header."""
    if not path.is_file():
        raise XtcError(f"input file {str(path)!r} does not exist")
    with path.open(encoding="utf-8-sig", newline="") as f:
        rows = list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    widths = {len(r) for r in rows}
    if not rows or not widths <= {1, 2} or len(widths) != 1:
        raise XtcError(f"{path}: expected every line to hold 1 or 2 tab-separated texts, found {sorted(widths)}")
    return [tuple(r) for r in rows]


@torch.no_grad()
def predict(model_dir: str, examples: list[tuple[str, ...]], batch_size: int = 32,
            max_seq_length: int = 128) -> list[dict]:
    """One ``{"label", "score"}`` per example: the top class and its probability, or the regression value."""
    model = load_trained(model_dir)
    tokenizer = load_tokenizer(model_dir)
    regression = model.config.num_labels == 1
    labels = model.config.id2label
    results = []
    for start in tqdm(range(0, len(examples), batch_size), desc="predict", leave=False):
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
