"""Predictions of a trained (or packed) model on raw text: labels and scores, batched.

A packed folder runs on the torch-free engine (``xtc.engine``: neither torch nor transformers is
imported); stage folders (the fake-quant model) run in torch.
"""

from xtc.data.tasks import recorded_task
from xtc.errors import XtcError
from xtc.engine import engine_for, predictions
from xtc.progress import bar


def predict(model_dir: str, examples: list[tuple[str, ...]], batch_size: int = 32,
            max_seq_length: int = 128) -> list[dict]:
    """One ``{"label", "score"}`` per example: the top class and its probability, or the regression value."""
    predict_columns, config = _model(model_dir, max_seq_length)
    _check_example_width(model_dir, recorded_task(config.get("finetuning_task")), examples)
    results = []
    batches = range(0, len(examples), batch_size)
    for start in bar(batches, desc="predict", leave=False, enabled=len(batches) > 1):
        results += predict_columns([list(c) for c in zip(*examples[start:start + batch_size])])
    return results


def _model(model_dir: str, max_seq_length: int):
    """(texts columns -> one prediction per row, the model's config as a dict)."""
    engine = engine_for(model_dir)
    if engine is not None:
        return (lambda columns: engine.predict(*columns, max_seq_length=max_seq_length)), engine.config
    return _torch_model(model_dir, max_seq_length)


def _torch_model(model_dir: str, max_seq_length: int):
    import torch

    from xtc.evaluation import load_trained
    from xtc.models import load_tokenizer

    model, tokenizer = load_trained(model_dir), load_tokenizer(model_dir)

    @torch.no_grad()
    def predict_columns(columns):
        batch = tokenizer(*columns, truncation=True, max_length=max_seq_length, padding=True, return_tensors="pt")
        return predictions(model(**batch).logits.float().tolist(), model.config.id2label)

    return predict_columns, model.config.to_dict()


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
