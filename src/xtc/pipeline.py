"""Run a recipe: fine-tune the teacher, then each distillation stage, each in its own folder.

``OUT/<stage>/`` is an HF model folder (the best dev checkpoint) whose config
records the stage's layers (``xtc_teacher_layers``) and quantization
(``xtc_quantization``), so ``xtc eval OUT/<stage>`` rebuilds the exact
fake-quant model. A finished stage (its ``metrics.json`` exists) is skipped; an
interrupted one resumes from its checkpoint.
"""

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
from accelerate.utils import set_seed

from xtc.arch import architecture
from xtc.data.augment import augment
from xtc.data.batching import tokenize
from xtc.data.glue import load_examples
from xtc.data.tasks import GlueTask, get_task
from xtc.distill import DistillationLoss, expose_attention_scores
from xtc.errors import XtcError
from xtc.evaluation import dev_sets, score
from xtc.models import load_model, load_tokenizer
from xtc.preflight import check_run
from xtc.quant.apply import quantize_, unquantize_
from xtc.quant.config import get_quant_config
from xtc.recipe import Recipe, RunConfig, StageConfig
from xtc.layer_choice import default_teacher_layers
from xtc.reduce import reduce_layers
from xtc.rundir import METRICS_FILE, prepare_run_dir, publish, write_json
from xtc.size import packed_size_bytes
from xtc.teacher_cache import TeacherCache
from xtc.train import cross_entropy_loss, make_accelerator, stage_steps, train_stage
from xtc.progress import note
from xtc.vocab import trim_vocabulary

STAGE_FILE = "stage.json"


def kd_loss_fn(teacher: TeacherCache, kd: DistillationLoss, label_weight: float):
    """A distill stage's objective: the teacher (in eval mode, without gradients, its outputs kept
    per example) and the student run on the same batch."""

    def loss_fn(model, batch):
        inputs = {k: v for k, v in batch.items() if k != "labels"}
        wants = dict(output_hidden_states=kd.needs_hidden_states, output_attentions=kd.needs_attentions)
        teacher_out = teacher(inputs)
        labels = {"labels": batch["labels"]} if label_weight > 0 else {}
        student_out = model(**inputs, **labels, **wants)
        terms = kd(student_out, teacher_out, batch["attention_mask"])
        if label_weight > 0:
            terms["label"] = student_out.loss
            terms["loss"] = terms["loss"] + label_weight * student_out.loss
        return terms

    return loss_fn


def _num_layers(model: torch.nn.Module) -> int:
    return getattr(model.config, architecture(model.config.model_type).num_layers_key)


def build_student(stage: StageConfig, start: Path | str, task: GlueTask,
                  teacher: torch.nn.Module | None = None) -> torch.nn.Module:
    """The stage's starting model: a copy of ``start`` (a stage folder, or another pre-trained model for
    ``init: model:...``), layer-reduced and quantized as the stage says."""
    model, _ = load_model(start, task)
    if stage.init.startswith("model:"):
        if teacher is None:
            raise XtcError(f"stage {stage.name}: a student from another model needs the teacher's layer count")
        teacher_layers, student_layers = _num_layers(teacher), _num_layers(model)
        layer_map = stage.layer_map or default_teacher_layers(teacher_layers, student_layers)
        if len(layer_map) != student_layers or not all(0 <= t < teacher_layers for t in layer_map):
            raise XtcError(f"stage {stage.name}: layer_map {layer_map} must give a teacher layer (0 to "
                           f"{teacher_layers - 1}) for each of the student's {student_layers} layers")
        model.config.xtc_teacher_layers = list(layer_map)
        for key in ("hidden_size", "num_attention_heads"):  # hidden-state and attention-score KD compare them
            if getattr(model.config, key, None) != getattr(teacher.config, key, None):
                raise XtcError(f"stage {stage.name}: the student's {key} ({getattr(model.config, key, None)}) "
                               f"differs from the teacher's ({getattr(teacher.config, key, None)})")
    if stage.layers is not None:
        if getattr(model.config, "xtc_quantization", None):
            raise XtcError(f"stage {stage.name}: layer reduction of an already quantized model is not supported")
        keep = stage.layers if isinstance(stage.layers, list) else default_teacher_layers(_num_layers(model),
                                                                                           stage.layers)
        model = reduce_layers(model, keep)
    if stage.quant is not None:
        wanted = get_quant_config(stage.quant).model_dump(mode="json")
        recorded = getattr(model.config, "xtc_quantization", None)
        if recorded is not None and recorded != wanted:  # e.g. 1-bit from the trained 2-bit student
            note(f"stage {stage.name}: its start model is quantized otherwise; its latent weights are "
                       "quantized anew")
            unquantize_(model)
            recorded = None
        if recorded is None:
            quantize_(model, wanted)
    return model


def _start_of(stage: StageConfig, stage_dirs: dict[str, Path], teacher_dir: Path, previous: Path,
              tokenizer) -> Path | str:
    """Where a distill stage starts: the previous stage, the teacher, a named earlier stage, or a model."""
    if stage.init == "previous":
        return previous
    if stage.init == "teacher":
        return teacher_dir
    if stage.init.startswith("model:"):
        name = stage.init.removeprefix("model:")
        if load_tokenizer(name).get_vocab() != tokenizer.get_vocab():
            raise XtcError(f"stage {stage.name}: {name} has another vocabulary than the teacher; "
                           "the student must read the teacher's token ids")
        return name
    return stage_dirs[stage.init]


def _layer_map(student: torch.nn.Module) -> list[int]:
    """Student layer i is distilled from teacher layer map[i]."""
    arch = architecture(student.config.model_type)
    return list(getattr(student.config, "xtc_teacher_layers", None)
                or range(getattr(student.config, arch.num_layers_key)))


def describe(model_dir: Path) -> dict:
    """Layers, bits and packed size of a stage's saved model."""
    config = json.loads((model_dir / "config.json").read_text())
    arch = architecture(config["model_type"])
    quant = config.get("xtc_quantization")
    bits = "FP32"
    if quant:  # e.g. W1A8: the lowest weight bits and activation bits of the rules
        weights = [r["weight_bits"] for r in quant["rules"] if r.get("weight_bits")]
        acts = [r["act_bits"] for r in quant["rules"] if r.get("act_bits")]
        bits = f"W{min(weights) if weights else 32}A{min(acts) if acts else 32}"
    return {"layers": config[arch.num_layers_key], "bits": bits, "size_mb": packed_size_bytes(model_dir) / 1e6}


@dataclass
class _Run:
    """What every stage of one run shares."""

    config: RunConfig
    task: GlueTask
    tokenizer: object
    train_examples: list
    train_features: list[dict]
    dev_features: dict[str, list[dict]]
    accelerator: object


def run_recipe(config: RunConfig, recipe: Recipe | None = None) -> list[dict]:
    """Run every stage of the recipe; returns one summary row per stage (also in OUT/summary.json).
    ``recipe``: the one ``check_run(config)`` returned, when the caller has checked the run already."""
    recipe = recipe or check_run(config)
    task = get_task(config.task)
    out = Path(config.out)
    reused = config.reused()
    unknown = set(reused) - {s.name for s in recipe.stages[1:]}
    if unknown:
        raise XtcError(f"--reuse: the recipe has no distill stage {sorted(unknown)[0]!r}; its stages: "
                       f"{', '.join(s.name for s in recipe.stages[1:])}")
    accelerator = make_accelerator(out, config.tensorboard)
    with accelerator.main_process_first():  # one process prepares the folder, the others then check it
        prepare_run_dir(out, config.run_fields(recipe), config.overwrite)
    tokenizer = load_tokenizer(config.teacher or config.model)
    train_examples = load_examples(task, "train", config.glue_dir, config.max_train_samples)
    run = _Run(config, task, tokenizer, train_examples, tokenize(tokenizer, train_examples, config.max_seq_length),
               dev_sets(task, tokenizer, "dev", config.glue_dir, config.max_seq_length, config.max_eval_samples),
               accelerator)

    rows, previous, teacher_dir = [], None, None
    stage_dirs = {s.name: reused.get(s.name, out / s.name) for s in recipe.stages}
    for stage in recipe.stages:
        stage_dir = out / stage.name
        if stage.name in reused:  # a finished folder given by the user stands for this stage
            if stage.trim_vocabulary:
                raise XtcError(f"--reuse {stage.name}: that stage trims its vocabulary, which a given folder skips; "
                               "reuse an earlier stage, or set trim_vocabulary: false")
            previous = reused[stage.name]
            if not (previous / METRICS_FILE).is_file():
                raise XtcError(f"--reuse {stage.name}={previous}: not a finished stage folder (no {METRICS_FILE})")
            metrics = json.loads((previous / METRICS_FILE).read_text())
            rows.append({"stage": stage.name, **describe(previous), "dev": metrics["dev"],
                         "wall_time_s": metrics["wall_time_s"], "given": True, "note": f"given: {previous}"})
            continue
        if stage.kind == "finetune" and config.teacher is not None:
            teacher_dir = previous = Path(config.teacher)
            load_model(teacher_dir, task)  # fail early on a teacher for another task
            rows.append({"stage": stage.name, **describe(teacher_dir), "dev": None, "wall_time_s": None,
                         "given": True, "note": f"given: {teacher_dir}"})
            continue
        if (stage_dir / METRICS_FILE).is_file():
            note(f"{stage.name}: finished earlier, skipping")
            metrics = json.loads((stage_dir / METRICS_FILE).read_text())
        else:
            start = None if stage.kind == "finetune" else _start_of(stage, stage_dirs, teacher_dir, previous, tokenizer)
            metrics = _train(run, stage, stage_dir, teacher_dir, start)
        if needs_trim(stage, metrics):  # also a run stopped after training, or one trimmed otherwise before
            metrics = _trim_vocabulary(run, stage, stage_dir, metrics)
        if stage.kind == "finetune":
            teacher_dir = stage_dir
        previous = stage_dir
        rows.append({"stage": stage.name, **describe(stage_dir), "dev": metrics["dev"],
                     "wall_time_s": metrics["wall_time_s"],
                     **({"degenerate": metrics["degenerate"]} if metrics.get("degenerate") else {})})
    if accelerator.is_main_process:
        write_json(out / "summary.json", {"task": task.name, "recipe": config.recipe, "stages": rows})
    accelerator.wait_for_everyone()
    return rows


def _train(run: _Run, stage: StageConfig, stage_dir: Path, teacher_dir: Path | None, start) -> dict:
    """Train one stage into ``stage_dir``: the teacher on labels, or a student from ``start`` by KD."""
    config, task, accelerator = run.config, run.task, run.accelerator
    stage_dir.mkdir(parents=True, exist_ok=True)
    if accelerator.is_main_process:
        (stage_dir / STAGE_FILE).write_text(json.dumps(stage.model_dump(mode="json"), indent=2) + "\n")
    set_seed(config.seed)  # a new head's initialisation
    features = run.train_features
    if stage.augment is not None:
        examples = augment(run.train_examples, seed=config.seed, **stage.augment.model_dump())
        features = tokenize(run.tokenizer, examples, config.max_seq_length)
    teacher_cache = None
    if stage.kind == "finetune":
        model, _ = load_model(config.model, task)
        loss_fn = cross_entropy_loss
    else:
        teacher, _ = load_model(teacher_dir, task)
        model = build_student(stage, start, task, teacher)
        teacher.eval().to(accelerator.device)
        kd = DistillationLoss(_layer_map(model), regression=task.is_regression,
                              **stage.distill.model_dump(exclude={"label_weight"}))
        if kd.needs_attentions:
            expose_attention_scores(teacher)
            expose_attention_scores(model)
        # kept teacher outputs pay off when each process sees its examples more than once, or when
        # written to files that other stages and runs read (not augmented data: it is the seed's own)
        passes = stage_steps(stage, len(features)) * stage.batch_size / len(features) / accelerator.num_processes
        store = config.teacher_cache_dir if stage.augment is None else None
        teacher_cache = TeacherCache(teacher, kd, int(config.teacher_cache_gb * 2**30) if passes > 1 else 0,
                                     features, run.tokenizer, stage.eval_batch_size, store)
        loss_fn = kd_loss_fn(teacher_cache, kd, stage.distill.label_weight)
    metrics = train_stage(model=model, loss_fn=loss_fn, args=stage, seed=config.seed, task=task,
                          tokenizer=run.tokenizer, train_features=features, dev_features=run.dev_features,
                          out=stage_dir, accelerator=accelerator, name=stage.name)
    if teacher_cache is not None and teacher_cache.hits and accelerator.is_main_process:
        where = (f"read from {config.teacher_cache_dir}" if teacher_cache.loaded_from_store else
                 f"written to {config.teacher_cache_dir}" if teacher_cache.stored is not None else
                 f"{teacher_cache.bytes / 2**30:.2f} GiB in memory")
        note(f"{stage.name}: the teacher's outputs, kept for {len(teacher_cache.entries)} examples "
                   f"({where}), served {teacher_cache.hits} of {teacher_cache.hits + teacher_cache.misses} "
                   "training rows")
    return metrics


def needs_trim(stage: StageConfig, metrics: dict) -> bool:
    """Whether a trained stage (its ``metrics``) is still to be trimmed as the stage says: not yet, or with other
    ``vocabulary_rows`` (metrics record the rows of their trim; None: the training data's tokens only)."""
    return stage.trim_vocabulary and ("vocabulary" not in metrics
                                      or metrics["vocabulary"].get("rows") != stage.vocabulary_rows)


def _trim_vocabulary(run: _Run, stage: StageConfig, stage_dir: Path, metrics: dict) -> dict:
    """The stage's model over the tokens of the training data (xtc.vocab), filled up to the stage's
    ``vocabulary_rows``, scored on dev again: its folder and metrics become the trimmed model's, the full
    vocabulary's dev score kept beside and its model in ``full_vocabulary/``. Restartable, and a trim with
    other rows redone: the trim always starts from that copy, and metrics.json, which marks the stage done,
    is written last."""
    accelerator, config = run.accelerator, run.config
    used = {i for feature in run.train_features for i in feature["input_ids"]}
    full, scratch = stage_dir / "full_vocabulary", stage_dir / "trimmed.tmp"
    if accelerator.is_main_process:
        if not full.is_dir():
            copy = stage_dir / "full_vocabulary.tmp"
            shutil.rmtree(copy, ignore_errors=True)
            shutil.copytree(stage_dir, copy, ignore=lambda d, names: [n for n in names if n.endswith(".tmp")])
            copy.rename(full)
        shutil.rmtree(scratch, ignore_errors=True)
        info = trim_vocabulary(full, scratch, used, stage.vocabulary_rows)
        filled = " and the most frequent others" if stage.vocabulary_rows else ""
        note(f"{stage.name}: vocabulary trimmed to the training data's tokens{filled}: {info['kept']} of "
             f"{info['of']} rows")
    accelerator.wait_for_everyone()
    model, _ = load_model(scratch, run.task)
    tokenizer = load_tokenizer(scratch)
    dev = dev_sets(run.task, tokenizer, "dev", config.glue_dir, config.max_seq_length, config.max_eval_samples)
    results, flags = score(accelerator.prepare(model.eval()), tokenizer, run.task, dev, stage.eval_batch_size,
                           accelerator)
    vocab_size = json.loads((scratch / "config.json").read_text())["vocab_size"]
    full_dev = metrics["vocabulary"]["dev_full_vocabulary"] if "vocabulary" in metrics else metrics["dev"]
    trimmed = {k: v for k, v in metrics.items() if k != "degenerate"}
    trimmed |= {"dev": results, "vocabulary": {"kept": vocab_size, "rows": stage.vocabulary_rows,
                                               "dev_full_vocabulary": full_dev},
                **({"degenerate": flags[run.task.dev_splits[0]]} if run.task.dev_splits[0] in flags else {})}
    if accelerator.is_main_process:
        (scratch / METRICS_FILE).unlink(missing_ok=True)
        publish(scratch, stage_dir)
        scratch.rmdir()
        write_json(stage_dir / METRICS_FILE, trimmed)
    accelerator.wait_for_everyone()
    return trimmed


def format_table(rows: list[dict], task: GlueTask) -> str:
    """A Markdown table: stage, layers, bits, dev metrics, packed size, wall time."""
    names = list(task.metrics)
    lines = ["| stage | layers | W/A bits | " + " | ".join(f"dev {n}" for n in names) + " | size (MB) | wall time |",
             "|---" * (5 + len(names)) + "|"]
    for row in rows:
        dev = row["dev"][task.dev_splits[0]] if row["dev"] else {}
        cells = [f"{dev[n] * 100:.2f}" if n in dev else "-" for n in names]
        wall = "-" if row["wall_time_s"] is None else f"{row['wall_time_s'] / 60:.1f} min"
        if row.get("degenerate"):  # marked in its dev cells, explained below the table
            cells = [f"{c} †" for c in cells]
        lines.append(f"| {row['stage']} | {row['layers']} | {row['bits']} | " + " | ".join(cells)
                     + f" | {row['size_mb']:.2f} | {wall} |")
    lines += [f"† {row['stage']}: degenerate: {row['degenerate']} on dev; train longer or check the data"
              for row in rows if row.get("degenerate")]
    return "\n".join(lines)
