"""Validated configs for xtc's stages; the CLI flags are generated from these classes.

Each field's ``description`` is its ``--help`` text. Unknown keys and bad values
fail at construction with a message naming the field, the value and the valid
choices (``format_validation_error``).
"""

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from xtc.data.tasks import get_task
from xtc.errors import XtcError
from xtc.models import DEFAULT_MODEL


class _Config(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DataArgs(_Config):
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


class FinetuneConfig(DataArgs):
    """Fine-tune a full-precision teacher on one GLUE task."""

    model: str = Field(DEFAULT_MODEL, description="short name (minilm-l6, bert-tiny), local folder or hub name")
    out: Path = Field(description="output folder (HF-style model folder + metrics.json + train_log.jsonl)")
    epochs: float = Field(3.0, gt=0, description="training epochs (ignored when --max-steps is set)")
    max_steps: int | None = Field(None, gt=0, description="total optimizer steps; overrides --epochs")
    lr: float = Field(5e-5, gt=0, description="peak learning rate (AdamW)")
    batch_size: int = Field(32, gt=0, description="training batch size")
    eval_batch_size: int = Field(64, gt=0, description="evaluation batch size")
    weight_decay: float = Field(0.01, ge=0, description="AdamW weight decay (none on biases and LayerNorm)")
    warmup_ratio: float = Field(0.1, ge=0, lt=1, description="fraction of steps with linear warm-up")
    max_grad_norm: float = Field(1.0, gt=0, description="gradient clipping norm")
    seed: int = Field(42, description="random seed (data order, dropout, new head)")
    eval_steps: int | None = Field(None, gt=0, description="also evaluate on dev every N steps (always at epoch ends)")
    logging_steps: int = Field(10, gt=0, description="write the training loss to the log every N steps")
    max_train_samples: int | None = Field(None, gt=0, description="train on the first N rows only")
    overwrite: bool = Field(False, description="replace an output folder that holds a different run")

    def run_fields(self) -> dict:
        """The settings that define the run (what a rerun must match to reuse the folder)."""
        return self.model_dump(mode="json", exclude={"overwrite", "glue_dir"})


class EvalConfig(DataArgs):
    """Evaluate a fine-tuned model folder on a GLUE split."""

    model: str = Field(description="fine-tuned model folder (or hub name)")
    split: str = Field("dev", description="split to score: dev (MNLI: both dev sets), dev_matched, dev_mismatched or train")
    batch_size: int = Field(64, gt=0, description="evaluation batch size")


def format_validation_error(error: ValidationError, flags: bool = True) -> str:
    """One line per problem: the field (as a CLI flag), the value given, and why."""
    lines = []
    for item in error.errors():
        field = ".".join(str(p) for p in item["loc"]) or "config"
        name = f"--{field.replace('_', '-')}" if flags else field
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            lines.append(f"unknown setting {name!r}")
        elif item["type"] == "missing":
            lines.append(f"missing required setting {name}")
        else:
            lines.append(f"invalid value {item.get('input')!r} for {name}: {message}")
    return "; ".join(lines)
