"""Study files: a grid over recipe fields, validated before anything runs.

```yaml
description: budget x learning rate for 1-bit students
model: minilm-l6
tasks: [RTE, MRPC]
recipe: xtc-w1a8-l3              # the base recipe of every cell
set: [layer_reduction.epochs=4]  # fixed overrides for every cell
grid:                            # every combination is one cell per task
  quantize.epochs: [4, 12]
  quantize.lr: [2.0e-5, 5.0e-5]
  recipe: [xtc-w1a8-l3, xtc-w1a8-l3-two-stage]   # "recipe" and "seed" are grid keys too
  seed: [1, 2]
```

The teacher stage is shared by all cells of a task (fine-tuned once), so the grid
may not vary it. A study of many factors uses one-factor sub-grids instead, each varying
its keys around a center, the stages in ``shared`` trained once per task (from the base
recipe) and reused by every cell, and ``seeds`` repeating every cell:

```yaml
recipe: xtc-w1a8-l3
shared: [layer_reduction]        # one layer-reduced student per task, every cell quantizes it
reuse:                           # optional: shared stages already trained, e.g. by another study
  RTE: {layer_reduction: runs/other-study/teachers/RTE/layer_reduction}
seeds: [1, 2]
center: {quantize.epochs: 3, quantize.lr: 5.0e-5}
grids:
  budget: {quantize.epochs: [1, 3, 6]}
  lr: {quantize.lr: [2.0e-5, 5.0e-5, 1.0e-4]}   # (3 epochs, 5e-5) is one cell, shared by both
```
"""

import hashlib
import itertools
import json
import re
from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError, field_validator, model_validator

from xtc.data.tasks import get_task
from xtc.errors import XtcError, format_validation_error
from xtc.recipe import DEFAULT_MODEL
from xtc.recipe_io import load_recipe, read_yaml
from xtc.schema import Schema
from xtc.text import read_text

SPECIAL_KEYS = ("recipe", "seed")


class StudyConfig(Schema):
    description: str = Field("", description="what the study asks")
    model: str = Field(DEFAULT_MODEL, description="the pre-trained encoder every cell starts from")
    tasks: list[str] = Field(min_length=1, description="GLUE tasks; every grid cell runs on each")
    recipe: str = Field("xtc-w1a8-l3", description="base recipe (preset or file) of every cell")
    set: list[str] = Field([], description="overrides applied to every cell: STAGE.FIELD=VALUE")
    grid: dict[str, list[Any]] | None = Field(None, description="STAGE.FIELD (or recipe, seed) -> values to try")
    grids: dict[str, dict[str, list[Any]]] | None = Field(
        None, description="named one-factor sub-grids (instead of grid): each varies its keys around `center`")
    center: dict[str, Any] = Field({}, description="with grids: the value of every key a sub-grid does not vary")
    seeds: list[int] | None = Field(None, description="run every cell once per seed (the grid may then not vary "
                                    "seed)")
    teachers: dict[str, Path] = Field({}, description="already fine-tuned teachers by task (skips training them)")
    shared: list[str] = Field([], description="distill stages trained once per task (after the teacher) and "
                              "reused by every cell; the grid may not vary them")
    reuse: dict[str, dict[str, Path]] = Field({}, description="finished folders of shared stages, by task and "
                                              "stage: used instead of training them (e.g. another study's)")
    seed: int = Field(42, description="seed of the shared teachers, and of cells when the grid has no seed")
    max_train_samples: int | None = Field(None, gt=0, description="train on the first N rows only")
    max_eval_samples: int | None = Field(None, gt=0, description="evaluate on the first N dev rows only")
    max_seq_length: int = Field(128, gt=1, description="truncate inputs to this many tokens")
    teacher_cache_dir: Path | None = Field(None, description="where cells keep the teachers' outputs on the "
                                           "training data, read by later cells (default: the study's "
                                           "teacher-outputs/ folder)")

    @field_validator("tasks")
    @classmethod
    def _known_tasks(cls, value: list[str]) -> list[str]:
        try:
            return [get_task(t).name for t in value]
        except XtcError as e:
            raise ValueError(str(e)) from None

    @model_validator(mode="after")
    def _one_grid_form(self):
        for field in ("teachers", "reuse"):
            unknown = set(getattr(self, field)) - set(self.tasks)
            if unknown:
                raise ValueError(f"{field}: {min(unknown)!r} is not one of the study's tasks {self.tasks}")
        for task, stages in self.reuse.items():
            unshared = set(stages) - set(self.shared)
            if unshared:
                raise ValueError(f"reuse: {task}: {min(unshared)!r} is not a shared stage; shared: {self.shared}")
        if (self.grid is None) == (self.grids is None):
            raise ValueError("give either grid (every combination) or grids (one-factor sub-grids around center)")
        if self.grid is not None and self.center:
            raise ValueError("center goes with grids, not grid")
        for name, sub in (self.grids or {"grid": self.grid}).items():
            if self.seeds is not None and "seed" in sub:
                raise ValueError(f"{name}: seeds are given by `seeds`; do not vary seed in a grid too")
            for key, values in sub.items():
                if not values:
                    raise ValueError(f"grid key {key!r} has no values")
                stage = key.split(".")[0]
                if stage == "teacher" or stage in self.shared:
                    raise ValueError(f"grid key {key!r}: stage {stage!r} is shared by all cells of a task; "
                                     "vary the other stages")
            if self.grids is not None:
                missing = [k for k in self.grid_keys() if k not in sub and k not in self.center and k != "seed"]
                if missing:
                    raise ValueError(f"sub-grid {name!r} leaves {missing} unset: give them in center")
        return self

    def grid_keys(self) -> list[str]:
        """Every key a cell is described by, in file order."""
        subs = [self.grid] if self.grid is not None else list((self.grids or {}).values())
        seeds = ["seed"] if self.seeds is not None else []
        return list(dict.fromkeys([*(k for sub in subs for k in sub), *self.center, *seeds]))


def load_study(path: str | Path) -> StudyConfig:
    """Parse and validate a study file; every cell's recipe is built and validated too."""
    path = Path(path)
    if not path.is_file():
        raise XtcError(f"study file {str(path)!r} does not exist")
    data = read_yaml(read_text(path), str(path))
    if not isinstance(data, dict):
        raise XtcError(f"{path}: a study is a mapping with 'tasks' and 'grid'")
    try:
        study = StudyConfig.model_validate(data)
    except ValidationError as e:
        raise XtcError(f"{path}: {format_validation_error(e, flags=False)}") from None
    for cell in cells(study):
        try:
            recipe = load_recipe(cell.recipe, cell.overrides)
        except XtcError as e:
            raise XtcError(f"{path}: cell {cell.name}: {e}") from None
        missing = set(study.shared) - {s.name for s in recipe.stages[1:]}
        if missing:
            raise XtcError(f"{path}: cell {cell.name}: its recipe has no stage {min(missing)!r} to share")
    return study


class Cell:
    """One run of the study: a task and one value of every grid key."""

    def __init__(self, study: StudyConfig, task: str, settings: dict[str, Any]):
        self.task, self.settings = task, settings
        self.recipe = settings.get("recipe", study.recipe)
        self.seed = settings.get("seed", study.seed)
        fields = [f"{k}={_yaml_value(v)}" for k, v in settings.items() if k not in SPECIAL_KEYS]
        self.overrides = [*study.set, *fields]
        described = ",".join(f"{k}={v}" for k, v in settings.items())
        digest = hashlib.sha256(json.dumps([task, settings], sort_keys=True, default=str).encode()).hexdigest()[:8]
        self.name = f"{task}-{re.sub(r'[^A-Za-z0-9_.=,-]+', '_', described)[:80]}-{digest}"


def _yaml_value(value) -> str:
    return json.dumps(value) if not isinstance(value, str) else value


def cells(study: StudyConfig) -> list[Cell]:
    """Every combination of ``grid``; or, with ``grids``, the union of each sub-grid's combinations,
    the other keys at their ``center`` values (a setting reached by two sub-grids is one cell)."""
    combos: list[dict] = []
    for sub in [study.grid] if study.grid is not None else list(study.grids.values()):
        keys = list(sub)
        for values in itertools.product(*(sub[k] for k in keys)):
            combo = {**study.center, **dict(zip(keys, values))}
            if combo not in combos:
                combos.append(combo)
    # seeds outermost: a study stopped halfway has every task and setting at its first seed(s)
    ordered = []
    for seed in study.seeds or [None]:
        for task in study.tasks:
            for combo in combos:
                cell = {**combo, "seed": seed} if seed is not None else combo
                ordered.append(Cell(study, task, {k: cell[k] for k in study.grid_keys() if k in cell}))
    return ordered
