"""The one-call API for notebooks and scripts: ``xtc.compress`` (what `xtc run` does, plus export) and
``xtc.export`` (a stage folder or an in-memory model to a packed folder)."""

from dataclasses import dataclass
from pathlib import Path

from xtc.errors import XtcError
from xtc.recipe import RunConfig


@dataclass(frozen=True)
class CompressResult:
    """What ``compress`` made: one summary row per stage (as `xtc run` prints them), the final
    stage's folder (a fake-quant HF model folder) and, unless ``export=False``, its packed folder."""

    stages: list[dict]
    model_dir: Path
    packed_dir: Path | None

    @property
    def final(self) -> dict:
        return self.stages[-1]


def compress(model: str, task: str, out: str | Path, recipe: str = "xtc-w1a8-l3", *,
             overrides: dict[str, object] | None = None, export: bool = True, **options) -> CompressResult:
    """Run ``recipe`` (a preset name or a YAML file) on ``model`` for the GLUE ``task`` into ``out``.

    ``overrides``: recipe fields by ``"STAGE.FIELD"`` (as ``--set``), e.g.
    ``{"quantize.epochs": 20}``. ``options``: any other `xtc run` setting by its name
    (``teacher``, ``glue_dir``, ``teacher_layers``, ``max_train_samples``, ``seed``, ...).
    Like `xtc run`, a finished stage is skipped and an interrupted one resumed. Bad settings
    raise ``XtcError`` naming the field.
    """
    from pydantic import ValidationError

    from xtc.errors import format_validation_error
    from xtc.models import model_and_tokenizer
    from xtc.packed.export import write_packed
    from xtc.pipeline import run_recipe

    sets = tuple(f"{key}={value}" for key, value in (overrides or {}).items())
    try:
        config = RunConfig(model=model, task=task, out=Path(out), recipe=recipe, set=sets, **options)
    except ValidationError as e:
        raise XtcError(format_validation_error(e)) from None
    rows = run_recipe(config)
    model_dir = Path(out) / rows[-1]["stage"]
    packed_dir = None
    if export and (model_dir / "config.json").is_file() and rows[-1]["bits"] != "FP32":
        stage_model, tokenizer = model_and_tokenizer(model_dir)
        packed_dir = write_packed(stage_model, Path(out) / "packed", tokenizer)
    return CompressResult(stages=rows, model_dir=model_dir, packed_dir=packed_dir)


def export(model, out_dir: str | Path, tokenizer=None, **options) -> Path:
    """Write a quantized model packed into ``out_dir`` (SPEC.md): a stage folder of `xtc run` (its
    tokenizer comes with it) or an in-memory model quantized with ``quantize_`` and its ``tokenizer``.
    ``options``: ``ternary``, ``int8_tensors``, ``kept`` (``xtc.packed.export.write_packed``)."""
    from xtc.models import model_and_tokenizer
    from xtc.packed.export import write_packed

    model, tokenizer = model_and_tokenizer(model, tokenizer)
    return write_packed(model, out_dir, tokenizer, **options)
