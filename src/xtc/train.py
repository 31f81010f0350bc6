"""Fine-tuning loop (teacher stage): AdamW, linear warm-up/decay, clipping, best-dev checkpoint.

A plain loop on Hugging Face Accelerate, so the same code runs on a CPU, a GPU
or several processes. The output folder is an HF model folder (config.json,
model.safetensors, tokenizer files) holding the best dev checkpoint, plus
``metrics.json`` and the JSONL log ``train_log.jsonl``.
"""

import json
import math
import tempfile
import time
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from tqdm.auto import tqdm
from transformers import get_linear_schedule_with_warmup

import xtc
from xtc.data.batching import make_loader, tokenize
from xtc.data.glue import load_examples
from xtc.data.tasks import get_task
from xtc.errors import XtcError
from xtc.evaluation import dev_sets, score
from xtc.models import load_model, load_tokenizer, quiet_transformers
from xtc.recipe import FinetuneConfig
from xtc.rundir import LOG_FILE, METRICS_FILE, JsonlLog, prepare_run_dir, write_json


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """AdamW groups: decay on weight matrices, none on biases and LayerNorm weights."""
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        no_wd = name.endswith("bias") or "LayerNorm" in name or "layer_norm" in name or param.ndim == 1
        (no_decay if no_wd else decay).append(param)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def _headline(results: dict, task) -> float:
    value = results[task.dev_splits[0]]["score"]
    return -math.inf if math.isnan(value) else value


def _save(model, tokenizer, out: Path, accelerator: Accelerator) -> None:
    """Write the model folder's weights/config/tokenizer, replacing files atomically."""
    if not accelerator.is_main_process:
        return
    with tempfile.TemporaryDirectory(dir=out, prefix=".save-") as tmp, quiet_transformers():
        accelerator.unwrap_model(model).save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        for f in Path(tmp).iterdir():
            f.replace(out / f.name)


def finetune(config: FinetuneConfig) -> dict:
    """Fine-tune ``config.model`` on ``config.task``; returns the contents of metrics.json."""
    started = time.perf_counter()
    task = get_task(config.task)
    out = Path(config.out)
    if prepare_run_dir(out, config.run_fields(), config.overwrite):
        tqdm.write(f"{out} already holds this finished run; not training again (use --overwrite to redo it)")
        return json.loads((out / METRICS_FILE).read_text())

    accelerator = Accelerator()
    set_seed(config.seed)
    tokenizer = load_tokenizer(config.model)
    model, new_head = load_model(config.model, task)
    if new_head:
        tqdm.write(f"{config.model}: new {task.num_labels}-output head for {task.name}")
    train = load_examples(task, "train", config.glue_dir, config.max_train_samples)
    train_features = tokenize(tokenizer, train, config.max_seq_length)
    dev_features = dev_sets(task, tokenizer, "dev", config.glue_dir, config.max_seq_length, config.max_eval_samples)

    loader = make_loader(tokenizer, train_features, config.batch_size, shuffle=True, seed=config.seed)
    optimizer = torch.optim.AdamW(param_groups(model, config.weight_decay), lr=config.lr)
    model, optimizer, loader = accelerator.prepare(model, optimizer, loader)
    total_steps = config.max_steps or math.ceil(config.epochs * len(loader))
    scheduler = accelerator.prepare(
        get_linear_schedule_with_warmup(optimizer, int(config.warmup_ratio * total_steps), total_steps)
    )

    log = JsonlLog(out / LOG_FILE)
    log.write(event="start", task=task.name, model=config.model, train_examples=len(train),
              total_steps=total_steps, steps_per_epoch=len(loader), xtc_version=xtc.__version__)
    best, best_results, best_step, last_eval_step, results = -math.inf, None, 0, -1, None
    step, epoch, running_loss, running_count = 0, 0, 0.0, 0
    bar = tqdm(total=total_steps, desc=f"finetune {task.name}", disable=not accelerator.is_local_main_process)

    def evaluate_now():
        nonlocal best, best_results, best_step, last_eval_step, results
        results = score(model, tokenizer, task, dev_features, config.eval_batch_size, accelerator)
        last_eval_step = step
        improved = best_results is None or _headline(results, task) > best
        if improved:
            best, best_results, best_step = _headline(results, task), results, step
            _save(model, tokenizer, out, accelerator)
        log.write(event="eval", step=step, epoch=round(step / len(loader), 3), dev=results, best=improved)
        shown = ", ".join(f"{k} {v * 100:.2f}" for k, v in results[task.dev_splits[0]].items() if k != "score")
        tqdm.write(f"step {step}: dev {shown}{' (best)' if improved else ''}")
        model.train()

    model.train()
    while step < total_steps:
        for batch in loader:
            loss = model(**batch).loss
            if not torch.isfinite(loss):
                raise XtcError(
                    f"loss became {loss.item()} at step {step}; lower --lr (the best checkpoint so far is kept in {out})"
                )
            accelerator.backward(loss)
            accelerator.clip_grad_norm_(model.parameters(), config.max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad()
            step += 1
            running_loss, running_count = running_loss + loss.item(), running_count + 1
            bar.update(1)
            if step % config.logging_steps == 0:
                mean_loss = running_loss / running_count
                log.write(event="train", step=step, loss=round(mean_loss, 6), lr=scheduler.get_last_lr()[0])
                bar.set_postfix(loss=f"{mean_loss:.4f}")
                running_loss, running_count = 0.0, 0
            if config.eval_steps and step % config.eval_steps == 0:
                evaluate_now()
            if step >= total_steps:
                break
        epoch += 1
        if last_eval_step != step:
            evaluate_now()
    bar.close()

    metrics = {
        "task": task.name,
        "model": config.model,
        "dev": best_results,
        "best_step": best_step,
        "last_dev": results,
        "total_steps": total_steps,
        "epochs": round(total_steps / len(loader), 3),
        "train_examples": len(train),
        "wall_time_s": round(time.perf_counter() - started, 1),
        "xtc_version": xtc.__version__,
    }
    log.write(event="end", **{k: metrics[k] for k in ("best_step", "wall_time_s")})
    log.close()
    if accelerator.is_main_process:
        write_json(out / METRICS_FILE, metrics)
    return metrics
