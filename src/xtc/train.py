"""The training loop shared by every stage: AdamW, linear warm-up/decay, clipping,
periodic dev evaluation keeping the best checkpoint, and resumable checkpoints.

A plain loop on Hugging Face Accelerate, so the same code runs on a CPU, a GPU
or several processes. What a stage optimises is a ``loss_fn(model, batch)``
returning ``{"loss": ..., other named terms}``: cross-entropy for the teacher,
the distillation loss for students.

Stage folder: the best dev checkpoint as an HF model folder (config.json,
model.safetensors, tokenizer files), ``train_log.jsonl`` (one JSON object per
event) and, while training, ``checkpoint/`` (model, optimizer, scheduler, RNG and
step). A finished stage has ``metrics.json`` and no ``checkpoint/``.
"""

import importlib.util
import json
import math
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import DataLoaderConfiguration, set_seed
from transformers import get_linear_schedule_with_warmup

from xtc.provenance import VERSION
from xtc.checkpoint import find_checkpoint, load_checkpoint, save_checkpoint
from xtc.data.batching import make_loader, tokenize
from xtc.data.glue import load_examples
from xtc.data.tasks import GlueTask, get_task
from xtc.errors import XtcError
from xtc.evaluation import dev_sets, score
from xtc.models import load_model, load_tokenizer, quiet_transformers
from xtc.recipe import FinetuneConfig, TrainArgs
from xtc.rundir import LOG_FILE, METRICS_FILE, JsonlLog, prepare_run_dir, publish, write_json
from xtc.progress import bar, note

CHECKPOINT_DIR = "checkpoint"
LossFn = Callable[[torch.nn.Module, dict], dict[str, torch.Tensor]]


def cpu_has_bf16() -> bool:
    """Native bfloat16 arithmetic: AVX-512 BF16 or AMX on x86, BF16 on Arm (the kernel's CPU flags); without
    /proc/cpuinfo, oneDNN's own check (which also says yes to AVX-512 CPUs that emulate bf16)."""
    try:
        flags = set(Path("/proc/cpuinfo").read_text().split())
    except OSError:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    return bool(flags & {"avx512_bf16", "amx_bf16", "bf16"})


def slow_bf16_warning(device_type: str) -> str | None:
    """On a CPU without bfloat16 instructions autocast's bf16 matmuls run emulated: 18x slower than float32
    for a MiniLM-sized linear, measured on an AVX2-only AMD EPYC."""
    if device_type != "cpu" or cpu_has_bf16():
        return None
    return ("--bf16 on a CPU without bfloat16 instructions (AVX-512 BF16, AMX or Arm BF16): autocast is slower "
            "than float32 here (drop --bf16, or set bf16: false in the recipe)")


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


def epoch_steps(args: TrainArgs, examples: int) -> int:
    """Batches in one pass over ``examples``: the loader keeps a last partial batch."""
    return math.ceil(examples / args.batch_size)


def stage_steps(args: TrainArgs, examples: int) -> int:
    """The optimizer steps of a stage: ``max_steps``, or ``epochs`` of batches of ``batch_size``."""
    return args.max_steps or math.ceil(args.epochs * epoch_steps(args, examples))


def headline(results: dict, task: GlueTask) -> float:
    """The number that picks the best checkpoint: the first dev set's GLUE score."""
    value = results[task.dev_splits[0]]["score"]
    return -math.inf if math.isnan(value) else value


def save_model_folder(model, tokenizer, out: Path, accelerator: Accelerator) -> None:
    """Write the model folder's weights/config/tokenizer, replacing files atomically."""
    if not accelerator.is_main_process:
        return
    with tempfile.TemporaryDirectory(dir=out, prefix=".save-") as tmp, quiet_transformers():
        accelerator.unwrap_model(model).save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        publish(Path(tmp), out)


def make_accelerator(out: Path, tensorboard: bool) -> Accelerator:
    """The Accelerator of a run; with ``tensorboard``, metrics also go to OUT/tensorboard/.

    ``split_batches``: each batch of ``batch_size`` rows is split across the processes, so
    several processes train with the same global batch (and step count) as one. Without a
    GPU, processes started by a launcher (accelerate launch, torchrun) join over gloo.
    """
    options = dict(dataloader_config=DataLoaderConfiguration(split_batches=True), cpu=not torch.cuda.is_available())
    if torch.cuda.is_available():  # the same command gives the same weights on a GPU too, as on a CPU
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # cuBLAS's deterministic workspace
        torch.use_deterministic_algorithms(True, warn_only=True)
        # attention's fused kernels (memory-efficient, cuDNN, flash) have non-deterministic backwards unless
        # deterministic algorithms are enforced, which would also fail on ops that lack such a path; a killed
        # run resumed on an H200 came back with other weights. The plain (math) attention is deterministic.
        for backend in ("mem_efficient", "cudnn", "flash"):
            getattr(torch.backends.cuda, f"enable_{backend}_sdp")(False)
    if not tensorboard:
        return Accelerator(**options)
    if importlib.util.find_spec("tensorboard") is None:
        raise XtcError("--tensorboard needs the tensorboard package: pip install tensorboard")
    return Accelerator(log_with="tensorboard", project_dir=str(out / "tensorboard"), **options)


def cross_entropy_loss(model, batch) -> dict[str, torch.Tensor]:
    """The teacher's objective: the model's own task loss (cross-entropy, or MSE for regression)."""
    return {"loss": model(**batch).loss}


@dataclass
class StageState:
    """Where a stage is: what a checkpoint saves and a resumed stage continues from."""

    step: int = 0
    best: float | None = None  # headline dev score of the best evaluation so far
    best_step: int = 0
    best_dev: dict | None = None  # its results, {split: {metric: value}}
    last_dev: dict | None = None
    train_seconds: float = 0.0
    degenerate: str | None = None  # why the best evaluation's predictions are degenerate (data.metrics)


@dataclass
class _Stage:
    """The fixed parts of one training stage, and what it does besides optimizer steps."""

    model: torch.nn.Module
    tokenizer: object
    task: GlueTask
    dev_features: dict[str, list[dict]]
    args: TrainArgs
    out: Path
    accelerator: Accelerator
    name: str
    steps_per_epoch: int
    log: JsonlLog

    def evaluate(self, state: StageState) -> None:
        """Score on dev; a new best is saved as the stage's model folder."""
        results, flags = score(self.model, self.tokenizer, self.task, self.dev_features, self.args.eval_batch_size,
                               self.accelerator)
        improved = state.best is None or headline(results, self.task) > state.best
        if improved:
            state.best, state.best_step, state.best_dev = headline(results, self.task), state.step, results
            state.degenerate = flags.get(self.task.dev_splits[0])
            save_model_folder(self.model, self.tokenizer, self.out, self.accelerator)
        state.last_dev = results
        self.log.write(event="eval", step=state.step, epoch=round(state.step / self.steps_per_epoch, 3),
                       dev=results, best=improved, **({"degenerate": flags} if flags else {}))
        self.accelerator.log({f"{split}/{k}": v for split, m in results.items() for k, v in m.items()},
                             step=state.step)
        shown = ", ".join(f"{k} {v * 100:.2f}" for k, v in results[self.task.dev_splits[0]].items() if k != "score")
        flag = f" [degenerate: {flags[self.task.dev_splits[0]]}]" if self.task.dev_splits[0] in flags else ""
        if self.accelerator.is_main_process:
            note(f"{self.name} step {state.step}: dev {shown}{' (best)' if improved else ''}{flag}")
        self.model.train()

    def log_train(self, step: int, means: dict[str, float], lr: float, steps_bar) -> None:
        self.log.write(event="train", step=step, lr=lr, **means)
        self.accelerator.log({f"train/{k}": v for k, v in means.items()}, step=step)
        steps_bar.set_postfix(loss=f"{means['loss']:.4f}")

    def metrics(self, state: StageState, total_steps: int, train_examples: int) -> dict:
        return {
            "task": self.task.name,
            "dev": state.best_dev,
            "best_step": state.best_step,
            "last_dev": state.last_dev,
            "total_steps": total_steps,
            "epochs": round(total_steps / self.steps_per_epoch, 3),
            "train_examples": train_examples,
            "wall_time_s": round(state.train_seconds, 1),
            "xtc_version": VERSION,
            **({"degenerate": state.degenerate} if state.degenerate else {}),
        }


def train_stage(
    *,
    model: torch.nn.Module,
    loss_fn: LossFn,
    args: TrainArgs,
    seed: int,
    task: GlueTask,
    tokenizer,
    train_features: list[dict],
    dev_features: dict[str, list[dict]],
    out: Path,
    accelerator: Accelerator,
    name: str,
) -> dict:
    """Train ``model`` in place and return the stage's metrics (also written to metrics.json).

    Resumes from ``out/checkpoint`` when it exists: the data order is a function
    of (seed, epoch), so skipping the steps already done replays the same batches.
    """
    if args.batch_size % accelerator.num_processes or args.eval_batch_size % accelerator.num_processes:
        raise XtcError(f"{name}: batch sizes ({args.batch_size}, eval {args.eval_batch_size}) must be multiples of "
                       f"the {accelerator.num_processes} processes, which each take an equal share")
    steps_per_epoch = epoch_steps(args, len(train_features))
    total_steps = stage_steps(args, len(train_features))
    # fused: one vectorised kernel instead of a Python loop over tensors (the word embeddings alone are
    # 30522 x H): the optimizer step of a 3-layer MiniLM ~5x faster on CPU, the same update up to float rounding
    fused = accelerator.device.type in ("cpu", "cuda")
    optimizer = torch.optim.AdamW(param_groups(model, args.weight_decay), lr=args.lr, fused=fused)
    scheduler = get_linear_schedule_with_warmup(optimizer, int(args.warmup_ratio * total_steps), total_steps)
    model, optimizer = accelerator.prepare(model, optimizer)
    accelerator.init_trackers(name.replace(" ", "_"))
    stage = _Stage(model, tokenizer, task, dev_features, args, out, accelerator, name, steps_per_epoch,
                   JsonlLog(out / LOG_FILE, enabled=accelerator.is_main_process))
    state = StageState()
    checkpoint = find_checkpoint(out / CHECKPOINT_DIR)
    if checkpoint is not None:
        state = StageState(**load_checkpoint(checkpoint, accelerator.unwrap_model(model), optimizer, scheduler))
        stage.log.write(event="resume", step=state.step)
        if accelerator.is_main_process:
            note(f"{name}: resuming at step {state.step} of {total_steps}")
    else:
        set_seed(seed)
        stage.log.write(event="start", stage=name, task=task.name, train_examples=len(train_features),
                        total_steps=total_steps, steps_per_epoch=steps_per_epoch, xtc_version=VERSION)

    if args.bf16 and accelerator.is_main_process and (warning := slow_bf16_warning(accelerator.device.type)):
        note(f"{name}: {warning}", warning=True)
    steps_bar = bar(total=total_steps, initial=state.step, desc=name, enabled=accelerator.is_local_main_process)
    running, count = {}, 0  # loss terms summed since the last log line
    segment_start = time.perf_counter()
    model.train()
    while state.step < total_steps:
        epoch, offset = divmod(state.step, steps_per_epoch)
        loader = accelerator.prepare(make_loader(tokenizer, train_features, args.batch_size, shuffle=True,
                                                 seed=seed * 1000 + epoch, group_by_length=args.group_by_length))
        if offset:
            loader = accelerator.skip_first_batches(loader, offset)
        step_before, epoch_start = state.step, time.perf_counter()
        for batch in loader:
            with torch.autocast(accelerator.device.type, dtype=torch.bfloat16, enabled=args.bf16):
                terms = loss_fn(model, batch)
            if not torch.isfinite(terms["loss"]):
                raise XtcError(f"{name}: loss became {terms['loss'].item()} at step {state.step}; lower the learning "
                               f"rate (the best checkpoint so far and the last resumable one are kept in {out})")
            accelerator.backward(terms["loss"])
            accelerator.clip_grad_norm_(model.parameters(), args.max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad()
            state.step += 1
            step = state.step
            for key, value in terms.items():
                running[key] = running.get(key, 0.0) + value.item()
            count += 1
            steps_bar.update(1)
            if steps_bar.disable and accelerator.is_local_main_process and step % max(1, total_steps // 20) == 0:
                rate = (step - step_before) / max(time.perf_counter() - epoch_start, 1e-9)
                note(f"{name}: step {step}/{total_steps} ({100 * step // total_steps}%), "
                     f"loss {terms['loss'].item():.4f}, {rate:.2f} steps/s")  # a log: plain lines, no bar
            if step % args.logging_steps == 0:
                stage.log_train(step, {k: round(v / count, 6) for k, v in running.items()},
                                scheduler.get_last_lr()[0], steps_bar)
                running, count = {}, 0
            if step % steps_per_epoch == 0 or step == total_steps or (args.eval_steps and step % args.eval_steps == 0):
                stage.evaluate(state)
            if step % args.checkpoint_steps == 0 and step < total_steps and accelerator.is_main_process:
                now = time.perf_counter()
                state.train_seconds += now - segment_start
                segment_start = now
                save_checkpoint(out / CHECKPOINT_DIR, accelerator.unwrap_model(model), optimizer, scheduler,
                                asdict(state))
            if step >= total_steps:
                break
        assert state.step > step_before, f"epoch {epoch} yielded no batch after step {step_before}"
    steps_bar.close()
    state.train_seconds += time.perf_counter() - segment_start
    return _finish(stage, stage.metrics(state, total_steps, len(train_features)))


def _finish(stage: _Stage, metrics: dict) -> dict:
    """Close the logs, write metrics.json and drop the resumable checkpoint."""
    stage.log.write(event="end", best_step=metrics["best_step"], wall_time_s=metrics["wall_time_s"])
    stage.log.close()
    accelerator = stage.accelerator
    for tracker in accelerator.trackers:  # not end_training(): that also ends the process group the next stage uses
        tracker.finish()
    if accelerator.is_main_process:
        write_json(stage.out / METRICS_FILE, metrics)
        shutil.rmtree(stage.out / CHECKPOINT_DIR, ignore_errors=True)
    accelerator.wait_for_everyone()  # the next stage may read this one's folder
    return metrics


def finetune(config: FinetuneConfig) -> dict:
    """Fine-tune ``config.model`` on ``config.task``; returns the contents of metrics.json."""
    started = time.perf_counter()
    task = get_task(config.task)
    out = Path(config.out)
    accelerator = make_accelerator(out, config.tensorboard)
    with accelerator.main_process_first():  # one process prepares the folder, the others then check it
        finished = prepare_run_dir(out, config.run_fields(), config.overwrite)
    if finished:
        note(f"{out} already holds this finished run; not training again (use --overwrite to redo it)")
        return json.loads((out / METRICS_FILE).read_text())
    set_seed(config.seed)  # the new head's initialisation
    tokenizer = load_tokenizer(config.model)
    model, new_head = load_model(config.model, task)
    if new_head:
        note(f"{config.model}: new {task.num_labels}-output head for {task.name}")
    train = load_examples(task, "train", config.glue_dir, config.max_train_samples)
    metrics = train_stage(
        model=model, loss_fn=cross_entropy_loss, args=config, seed=config.seed, task=task, tokenizer=tokenizer,
        train_features=tokenize(tokenizer, train, config.max_seq_length),
        dev_features=dev_sets(task, tokenizer, "dev", config.glue_dir, config.max_seq_length,
                              config.max_eval_samples),
        out=out, accelerator=accelerator, name=f"finetune {task.name}",
    )
    metrics = {"model": config.model, **metrics, "total_time_s": round(time.perf_counter() - started, 1)}
    if accelerator.is_main_process:
        write_json(out / METRICS_FILE, metrics)
    return metrics
