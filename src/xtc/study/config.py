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
may not vary it.
"""

import hashlib
import itertools
import json
import re
from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError, field_validator

from xtc.data.tasks import get_task
from xtc.errors import XtcError, format_validation_error
from xtc.models import DEFAULT_MODEL
from xtc.recipe import _Config, load_recipe, read_yaml

SPECIAL_KEYS = ("recipe", "seed")


class StudyConfig(_Config):
    description: str = Field("", description="what the study asks")
    model: str = Field(DEFAULT_MODEL, description="the pre-trained encoder every cell starts from")
    tasks: list[str] = Field(min_length=1, description="GLUE tasks; every grid cell runs on each")
    recipe: str = Field("xtc-w1a8-l3", description="base recipe (preset or file) of every cell")
    set: list[str] = Field([], description="overrides applied to every cell: STAGE.FIELD=VALUE")
    grid: dict[str, list[Any]] = Field(description="STAGE.FIELD (or recipe, seed) -> values to try")
    seed: int = Field(42, description="seed of the shared teachers, and of cells when the grid has no seed")
    max_train_samples: int | None = Field(None, gt=0, description="train on the first N rows only")
    max_eval_samples: int | None = Field(None, gt=0, description="evaluate on the first N dev rows only")
    max_seq_length: int = Field(128, gt=1, description="truncate inputs to this many tokens")

    @field_validator("tasks")
    @classmethod
    def _known_tasks(cls, value: list[str]) -> list[str]:
        try:
            return [get_task(t).name for t in value]
        except XtcError as e:
            raise ValueError(str(e)) from None

    @field_validator("grid")
    @classmethod
    def _grid_values(cls, value: dict[str, list]) -> dict[str, list]:
        for key, values in value.items():
            if not values:
                raise ValueError(f"grid key {key!r} has no values")
            if key.split(".")[0] == "teacher":
                raise ValueError(f"grid key {key!r}: the teacher is shared by all cells of a task; vary the students")
        return value


def load_study(path: str | Path) -> StudyConfig:
    """Parse and validate a study file; every cell's recipe is built and validated too."""
    path = Path(path)
    if not path.is_file():
        raise XtcError(f"study file {str(path)!r} does not exist")
    data = read_yaml(path.read_text(), str(path))
    if not isinstance(data, dict):
        raise XtcError(f"{path}: a study is a mapping with 'tasks' and 'grid'")
    try:
        study = StudyConfig.model_validate(data)
    except ValidationError as e:
        raise XtcError(f"{path}: {format_validation_error(e, flags=False)}") from None
    for cell in cells(study):
        try:
            load_recipe(cell.recipe, cell.overrides)
        except XtcError as e:
            raise XtcError(f"{path}: cell {cell.name}: {e}") from None
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
    keys = list(study.grid)
    combos = [dict(zip(keys, values)) for values in itertools.product(*(study.grid[k] for k in keys))]
    return [Cell(study, task, combo) for task in study.tasks for combo in combos]
