"""Validated configs for xtc's stages and recipes; the CLI flags are generated from these classes.

Each field's ``description`` is its ``--help`` text. Unknown keys and bad values
fail at construction with a message naming the field, the value and the valid
choices (``format_validation_error``). Pure data: reading recipe files and
presets is ``xtc.recipe_io``'s.
"""

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from xtc.data.tasks import get_task
from xtc.errors import XtcError
from xtc.schema import Schema


DEFAULT_MODEL = "minilm-l6"


class DataArgs(Schema):
    task: str = Field(description="GLUE task: CoLA, SST-2, MRPC, STS-B, QQP, MNLI, QNLI, RTE or WNLI")
    glue_dir: Path | None = Field(
        None, description="folder in the official GLUE layout (default: $XTC_GLUE_DIR, else the hub)"
    )
    max_seq_length: int = Field(128, gt=1, le=4096, description="truncate inputs to this many tokens")
    max_eval_samples: int | None = Field(None, gt=0, description="evaluate on the first N dev rows only")

    @field_validator("task")
    @classmethod
    def _known_task(cls, value: str) -> str:
        try:
            return get_task(value).name
        except XtcError as e:
            raise ValueError(str(e)) from None


class TrainArgs(Schema):
    """Budget and optimizer of one training stage."""

    epochs: float = Field(3.0, gt=0, description="training epochs (ignored when --max-steps is set)")
    max_steps: int | None = Field(None, gt=0, description="total optimizer steps; overrides --epochs")
    lr: float = Field(5e-5, gt=0, description="peak learning rate (AdamW)")
    batch_size: int = Field(32, gt=0, description="training batch size")
    eval_batch_size: int = Field(64, gt=0, description="evaluation batch size")
    weight_decay: float = Field(0.01, ge=0, description="AdamW weight decay (none on biases and LayerNorm)")
    warmup_ratio: float = Field(0.1, ge=0, lt=1, description="fraction of steps with linear warm-up")
    max_grad_norm: float = Field(1.0, gt=0, description="gradient clipping norm")
    eval_steps: int | None = Field(None, gt=0, description="also evaluate on dev every N steps (always at epoch ends)")
    logging_steps: int = Field(10, gt=0, description="write the training loss to the log every N steps")
    checkpoint_steps: int = Field(50, gt=0, description="write a resumable checkpoint every N steps")
    group_by_length: bool = Field(False, description="batch training examples of similar length together (as "
                                  "transformers' group_by_length): far fewer padding tokens, so faster steps on "
                                  "tasks of mixed lengths; each epoch still sees every example once, in a random "
                                  "order of batches")
    bf16: bool = Field(False, description="run the training forward and backward under bfloat16 autocast (about 2x "
                       "faster steps on CPUs with bf16 instructions and on GPUs); weights, optimizer, quantizer "
                       "scales, the loss and every evaluation stay float32")


class RunArgs(Schema):
    """What every run shares: where it writes, its seed, how much data it reads."""

    out: Path = Field(description="output folder")
    seed: int = Field(42, description="random seed (data order, dropout, new head)")
    max_train_samples: int | None = Field(None, gt=0, description="train on the first N rows only")
    overwrite: bool = Field(False, description="replace an output folder that holds a different run")
    tensorboard: bool = Field(False, description="also log to TensorBoard (needs: pip install tensorboard)")
    num_processes: int = Field(1, ge=1, description="data-parallel training processes (launched through "
                               "Accelerate; the global batch stays --batch-size, split across them)")


class FinetuneConfig(DataArgs, TrainArgs, RunArgs):
    """Fine-tune a full-precision teacher on one GLUE task."""

    model: str = Field(DEFAULT_MODEL, description="short name (minilm-l6, bert-tiny), local folder or hub name")

    def run_fields(self) -> dict:
        """The settings that define the run (what a rerun must match to reuse the folder)."""
        return self.model_dump(mode="json", exclude={"overwrite", "glue_dir", "tensorboard", "num_processes"})


class EvalConfig(DataArgs):
    """Evaluate a fine-tuned model folder on a GLUE split."""

    model: str = Field(description="fine-tuned model folder (or hub name)")
    split: str = Field("dev", description="split to score: dev (MNLI: both dev sets), dev_matched, dev_mismatched or train")
    batch_size: int = Field(64, gt=0, description="evaluation batch size")
    task_mismatch_ok: bool = Field(False, description="evaluate a model that records another task than --task")


class DistillArgs(Schema):
    """Weights of the distillation loss terms (distill.py); 0 switches a term off."""

    logit_weight: float = Field(1.0, ge=0, description="soft cross-entropy on logits (MSE for regression)")
    hidden_weight: float = Field(1.0, ge=0, description="MSE on hidden states, embedding output included")
    attention_weight: float = Field(1.0, ge=0, description="MSE on pre-softmax attention scores over real tokens")
    temperature: float = Field(1.0, gt=0, description="softmax temperature of the logit term")
    label_weight: float = Field(0.0, ge=0, description="weight of the hard-label task loss (0 in XTC)")


class AugmentArgs(Schema):
    """TinyBERT-style augmentation of a distill stage's training data (data/augment.py)."""

    copies: int = Field(20, ge=1, description="variants made of each training example")
    replace_prob: float = Field(0.4, gt=0, le=1, description="probability of replacing each word")
    model: str = Field("bert-tiny", description="masked LM proposing candidates (embedding neighbours without one)")
    top_k: int = Field(15, ge=1, description="candidates per word")


class StageConfig(TrainArgs):
    """One stage of a recipe: fine-tune the teacher, or train a student with KD from it."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$", description="stage name, also its sub-folder of --out")
    kind: Literal["finetune", "distill"] = Field(
        description="finetune: the teacher on task labels; distill: a student with KD from the teacher"
    )
    init: str = Field(
        "previous",
        description="the model a distill stage starts from: 'previous' (stage), 'teacher', the name of an earlier "
        "stage, or 'model:NAME_OR_PATH' (another pre-trained encoder, e.g. model:paraphrase-minilm-l3)",
    )
    layer_map: list[int] | None = Field(
        None, description="with init 'model:...': the teacher layer (0-based) each student layer learns from "
        "(default: evenly spaced, ending at the last)"
    )
    layers: list[int] | int | None = Field(
        None, description="layer reduction: the teacher layers to keep (0-based list), or how many (evenly spaced)"
    )
    quant: str | dict | None = Field(
        None, description="quantization: a preset (w1a8, w2a8, w1a8-word2) or a full config (rules); none keeps FP32"
    )
    distill: DistillArgs = Field(default_factory=DistillArgs, description="distillation loss weights")
    augment: AugmentArgs | None = Field(None, description="augment the training data (distill stages)")
    trim_vocabulary: bool = Field(
        False, description="keep only the word-table rows of the tokens the training data uses (and of every "
        "single character and special token); the stage's model, dev score and exports are the trimmed model's "
        "(no later stage may start from it; WordPiece tokenizers, one word-table scale per row)"
    )
    vocabulary_rows: int | None = Field(
        None, gt=0, description="with trim_vocabulary: fill the trimmed table up to this many rows with the "
        "most frequent tokens the training data does not use (WordPiece vocabularies list tokens by frequency, "
        "lowest ids first), so that dev and user text is split less often into smaller pieces; the training "
        "data's tokens are kept even past it (none: only the training data's tokens; without trim_vocabulary "
        "the whole table is kept and this has no effect)"
    )

    @field_validator("quant")
    @classmethod
    def _known_quant(cls, value):
        if value is None:
            return value
        from xtc.quant.config import get_quant_config

        try:
            get_quant_config(value)
        except XtcError as e:
            raise ValueError(str(e)) from None
        return value

    @field_validator("init")
    @classmethod
    def _init_form(cls, value: str):
        if value.startswith("model:") and not value.removeprefix("model:"):
            raise ValueError("'model:' needs a model name or folder, e.g. model:paraphrase-minilm-l3")
        return value

    @model_validator(mode="after")
    def _finetune_is_plain(self):
        if self.layer_map is not None and not self.init.startswith("model:"):
            raise ValueError("layer_map is for a student started from another model (init: model:...); "
                             "a layer-reduced student's map is its layers")
        if self.init.startswith("model:") and self.layers is not None:
            raise ValueError("layers (layer reduction of the teacher) and init: model:... are exclusive")
        if self.kind == "finetune" and (self.layers is not None or self.quant is not None or self.augment is not None
                                        or self.trim_vocabulary):
            raise ValueError("a finetune stage trains the full-precision teacher on the task labels: "
                             "it takes no layers, quant, augment or trim_vocabulary")
        return self


class Recipe(Schema):
    """An ordered list of stages; the first fine-tunes the teacher, the others distill from it."""

    description: str = Field("", description="what the recipe does")
    stages: list[StageConfig] = Field(min_length=1, description="the stages, run in order")

    @model_validator(mode="after")
    def _shape(self):
        names = [s.name for s in self.stages]
        if len(set(names)) != len(names):
            raise ValueError(f"stage names must be unique, got {names}")
        kinds = [s.kind for s in self.stages]
        if kinds[0] != "finetune" or "finetune" in kinds[1:]:
            raise ValueError("the first stage, and only the first, must be of kind 'finetune' (the teacher)")
        for i, stage in enumerate(self.stages):
            if stage.init not in ("previous", "teacher") and not stage.init.startswith("model:") \
                    and stage.init not in names[:i]:
                raise ValueError(f"stage {stage.name}: init {stage.init!r} is not 'previous', 'teacher', "
                                 f"'model:NAME' or an earlier stage ({', '.join(names[:i])})")
        trimmed = {s.name for s in self.stages if s.trim_vocabulary}
        for i, stage in enumerate(self.stages[1:], 1):  # a trimmed model no longer shares the teacher's token ids
            start = self.start_of(i)  # an earlier stage's name, checked above, or model:...
            if start in trimmed:
                raise ValueError(f"stage {stage.name}: starts from stage {start}, which trims its vocabulary "
                                 "(trim_vocabulary); start it from an earlier stage, or trim only the last one")
        return self

    def start_of(self, index: int) -> str:
        """The stage (a name) or model (``model:...``) that stage ``index`` starts from."""
        init = self.stages[index].init
        if init == "previous":
            return self.stages[index - 1].name
        return self.stages[0].name if init == "teacher" else init

    def stage(self, name: str) -> StageConfig:
        for stage in self.stages:
            if stage.name == name:
                return stage
        raise XtcError(f"recipe has no stage {name!r}; stages: {', '.join(s.name for s in self.stages)}")


class ExportConfig(Schema):
    """Write a quantized model folder in the packed format (packed/SPEC.md)."""

    model: str = Field(description="a quantized model folder (a quantize stage of xtc run)")
    out: Path = Field(description="folder to write")
    format: Literal["packed", "hf", "onnx"] = Field(
        "packed", description="packed: xtc's 1-/2-bit file; hf: a plain dequantized transformers checkpoint; "
        "onnx: the dequantized model as an ONNX graph"
    )
    ternary_packing: Literal["ternary2", "ternary_base3"] = Field(
        "ternary2", description="2-bit weights as 2-bit codes, or 5 per byte in base 3 (1.6 bits; storage only)"
    )
    kept: Literal["fp16", "fp32"] | None = Field(
        None, description="precision of the tensors kept unquantized (default: the quantization config's `kept`, "
        "the precision the model was trained and evaluated in; another changes the model)")
    int8: tuple[str, ...] = Field((), description="a kept tensor to store in int8 (per-row scales), by name (repeatable)",
                                  json_schema_extra={"repeatable": True})


class SizeConfig(Schema):
    """Print a model's size by tensor group and its ratio to FP32."""

    model: str = Field(description="a packed folder, or a model folder (sizes as xtc export would write them)")


class PredictConfig(Schema):
    """Labels and scores of a trained or packed model on raw text."""

    model: str = Field(description="a packed folder or a fine-tuned model folder")
    text: tuple[str, ...] = Field((), description="a text to classify (repeatable)", json_schema_extra={"repeatable": True})
    text_pair: tuple[str, ...] = Field((), description="the second text of each pair, in order (repeatable)",
                                       json_schema_extra={"repeatable": True})
    input: Path | None = Field(None, description="a TSV file of texts (one column) or pairs (two columns), no header")
    batch_size: int = Field(32, gt=0, description="examples per batch")
    max_seq_length: int = Field(128, gt=1, le=4096, description="truncate inputs to this many tokens")

    @model_validator(mode="after")
    def _one_source(self):
        if self.text and self.input is not None:
            raise ValueError("give the examples either with --text (and --text-pair) or with --input, not both")
        if not self.text and self.input is None:
            raise ValueError("no examples: give them with --text (and --text-pair for pairs) or with --input FILE.tsv")
        if self.text_pair and len(self.text_pair) != len(self.text):
            raise ValueError(f"{len(self.text)} --text but {len(self.text_pair)} --text-pair: give one pair per text")
        return self


def _int_list(value):
    """``("16,32", "64")`` (comma lists, the flag repeated or both) -> (16, 32, 64); a list of ints passes."""
    items = value if isinstance(value, (list, tuple)) else [value]
    numbers = []
    for item in items:
        for part in str(item).split(",") if isinstance(item, str) else [item]:
            try:
                number = int(part)
            except (TypeError, ValueError):
                raise ValueError(f"{part!r} is not a whole number; give a list such as 16,32,64") from None
            if number < 1:
                raise ValueError(f"{number} is not positive; give a list such as 16,32,64")
            numbers.append(number)
    return tuple(numbers)


class BenchConfig(Schema):
    """Latency, throughput and memory of a packed model on the torch-free engine, over a grid of
    thread counts x batch sizes x sequence lengths."""

    model: str = Field(description="a packed model folder (xtc export)")
    tokens: tuple[int, ...] = Field((16, 32, 64, 128), min_length=1, json_schema_extra={"repeatable": True},
                                    description="sequence lengths, e.g. 16,32 (repeatable)")
    batch: tuple[int, ...] = Field((1,), min_length=1, json_schema_extra={"repeatable": True},
                                   description="batch sizes, e.g. 1,8 (repeatable)")
    threads: tuple[int, ...] = Field((1,), min_length=1, json_schema_extra={"repeatable": True},
                                     description="engine thread counts, e.g. 1,2 (repeatable)")
    repeats: int = Field(20, ge=1, description="timed calls per point")
    warmup: int = Field(3, ge=0, description="untimed calls per point before the timed ones")

    @field_validator("tokens", "batch", "threads", mode="before")
    @classmethod
    def _lists(cls, value):
        return _int_list(value)


class RunConfig(DataArgs, RunArgs):
    """Run a recipe's stages: teacher -> layer-reduced student -> quantized student."""

    recipe: str = Field(description="preset name (xtc-w1a8-l3, ...) or a YAML recipe file")
    model: str = Field(DEFAULT_MODEL, description="short name (minilm-l6, bert-tiny), local folder or hub name")
    teacher: Path | None = Field(None, description="an already fine-tuned teacher folder: skips the finetune stage")
    set: tuple[str, ...] = Field((), description="override a recipe field: STAGE.FIELD=VALUE (repeatable)",
                                 json_schema_extra={"repeatable": True})
    teacher_layers: tuple[int, ...] | None = Field(
        None, description="teacher layers the student keeps, e.g. 1,3,5 (overrides the recipe's layer reduction)"
    )
    teacher_cache_gb: float = Field(
        4.0, ge=0, description="memory for the teacher's outputs on training examples, reused on later epochs "
        "instead of running the teacher again (0: run it on every batch)"
    )
    teacher_cache_dir: Path | None = Field(
        None, description="keep the teacher's outputs in files in this folder instead (memory-mapped, no memory "
        "limit), where later stages and runs with the same teacher and training data find them"
    )

    @field_validator("teacher_layers", mode="before")
    @classmethod
    def _comma_list(cls, value):
        if isinstance(value, str):
            try:
                return tuple(int(v) for v in value.split(","))
            except ValueError:
                raise ValueError("expected comma-separated layer indices such as 1,3,5") from None
        return value

    deepspeed_config: Path | None = Field(
        None, description="a DeepSpeed config: its compression_training section sets the layers and quantization"
    )
    reuse: tuple[str, ...] = Field(
        (), description="use a finished stage folder instead of training that distill stage: STAGE=DIR (repeatable)",
        json_schema_extra={"repeatable": True},
    )
    dry_run: bool = Field(False, description="check everything, print the resolved stages (for a DeepSpeed "
                          "config: what it maps to) and exit without training")
    fake_quant_only: bool = Field(False, description="train quantization that the packed export and runtime cannot "
                                  "run (e.g. 4-bit activations, static ranges): evaluated as fake quantization only")

    @field_validator("reuse")
    @classmethod
    def _stage_folders(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for item in value:
            if "=" not in item or not item.split("=", 1)[1]:
                raise ValueError(f"expected STAGE=DIR, got {item!r}")
        return value

    def reused(self) -> dict[str, Path]:
        return {k: Path(v) for k, v in (item.split("=", 1) for item in self.reuse)}

    def run_fields(self, recipe: Recipe) -> dict:
        fields = self.model_dump(mode="json", exclude={"overwrite", "glue_dir", "recipe", "set", "out", "tensorboard",
                                                        "teacher_layers", "deepspeed_config", "dry_run",
                                                        "fake_quant_only", "num_processes", "teacher_cache_gb",
                                                        "teacher_cache_dir"})
        # vocabulary_rows shapes only the trim after training, which a rerun redoes when it changed
        return {**fields, "recipe": recipe.model_dump(mode="json", exclude={"stages": {"__all__": {"vocabulary_rows"}}})}
