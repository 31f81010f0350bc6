"""Scoring a model on GLUE dev sets: the loop used during training and by `xtc eval`."""

from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator

from xtc.data.batching import make_loader, tokenize
from xtc.data.glue import load_examples
from xtc.data.metrics import compute_metrics, degenerate, warn_degenerate
from xtc.data.tasks import GlueTask, check_recorded_task, get_task
from xtc.errors import XtcError
from xtc.models import load_model, load_tokenizer
from xtc.packed.layout import WEIGHTS_FILE
from xtc.quant.runtime_order import runs_packed, runtime_order_
from xtc.recipe import EvalConfig
from xtc.progress import bar


@torch.no_grad()
def gathered_predictions(model, loader, task: GlueTask, accelerator: Accelerator, desc: str = "eval"):
    """Predictions and labels over a (prepared) loader, gathered across processes."""
    model.eval()
    predictions, labels = [], []
    for batch in bar(loader, desc=desc, leave=False, enabled=accelerator.is_local_main_process):
        logits = model(**{k: v for k, v in batch.items() if k != "labels"}).logits
        # logits: (batch, num_labels); regression has num_labels == 1
        pred = logits.squeeze(-1) if task.is_regression else logits.argmax(-1)
        pred, gold = accelerator.gather_for_metrics((pred, batch["labels"]))
        predictions.append(pred.cpu().numpy())
        labels.append(gold.cpu().numpy())
    return np.concatenate(predictions), np.concatenate(labels)


def dev_sets(task: GlueTask, tokenizer, split: str, glue_dir, max_seq_length: int, max_samples: int | None):
    """split 'dev' means every dev set of the task (MNLI: matched and mismatched)."""
    splits = task.dev_splits if split == "dev" else [split]
    return {
        s: tokenize(tokenizer, load_examples(task, s, glue_dir, max_samples), max_seq_length)
        for s in splits
    }


def score(model, tokenizer, task: GlueTask, features: dict[str, list[dict]], batch_size: int,
          accelerator: Accelerator) -> tuple[dict, dict]:
    """``({split: metrics}, {split: why its predictions are degenerate})`` for each tokenized dev set."""
    results, flags = {}, {}
    for split, feats in features.items():
        loader = accelerator.prepare(make_loader(tokenizer, feats, batch_size, shuffle=False))
        predictions, labels = gathered_predictions(model, loader, task, accelerator, desc=f"eval {split}")
        results[split] = compute_metrics(task, predictions, labels)
        reason = degenerate(task, predictions)
        if reason:
            flags[split] = reason
    return results, flags


def load_trained(name: str, task: GlueTask | None = None, task_mismatch_ok: bool = False):
    """A model with a trained head, ready for inference: a packed folder runs on the low-bit
    kernels (xtc.runtime), any other folder as its (fake-quant) torch model, whose float ops follow
    the packed runtime's when the runtime can run it (xtc.quant.runtime_order). A model that records
    another task than ``task`` is refused unless ``task_mismatch_ok``."""
    if (Path(name) / WEIGHTS_FILE).is_file():
        from xtc.runtime import load

        model = load(name)
    else:
        model, new_head = load_model(name, task)
        if new_head:
            raise XtcError(f"{name!r} has no classification head: fine-tune it first (xtc finetune)")
        if runs_packed(model):  # score what the packed export computes, 8-bit code for code
            runtime_order_(model)
    if task is not None and model.config.num_labels != task.num_labels:
        raise XtcError(f"{str(name)!r} has a {model.config.num_labels}-way head, but {task.name} needs {task.num_labels}")
    if task is not None:
        check_recorded_task(name, getattr(model.config, "finetuning_task", None), task, task_mismatch_ok)
    return model.eval()


def evaluate(config: EvalConfig) -> dict[str, dict[str, float]]:
    """Metrics of a model folder on a GLUE split: ``{split: {metric: value}}``."""
    task = get_task(config.task)
    tokenizer = load_tokenizer(config.model)
    model = load_trained(config.model, task, config.task_mismatch_ok)
    accelerator = Accelerator()
    model = accelerator.prepare(model)
    features = dev_sets(task, tokenizer, config.split, config.glue_dir, config.max_seq_length, config.max_eval_samples)
    results, flags = score(model, tokenizer, task, features, config.batch_size, accelerator)
    warn_degenerate(config.model, task, flags)
    return results
