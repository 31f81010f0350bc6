"""Recipes from files: YAML recipes and the presets shipped in ``xtc/recipes/``, with
``--set STAGE.FIELD=VALUE`` overrides, validated into a ``Recipe``."""

import re
from importlib import resources
from pathlib import Path

import yaml
from pydantic import ValidationError

from xtc.errors import XtcError, format_validation_error
from xtc.recipe import Recipe
from xtc.text import read_text

PRESET_DIR = resources.files("xtc") / "recipes"


def preset_names() -> list[str]:
    return sorted(p.name.removesuffix(".yaml") for p in PRESET_DIR.iterdir() if p.name.endswith(".yaml"))


def read_yaml(text: str, where: str):
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = f":{mark.line + 1}" if mark else ""
        raise XtcError(f"{where}{line}: not valid YAML ({getattr(e, 'problem', None) or e})") from None


def _apply_override(data: dict, override: str) -> None:
    """``STAGE.FIELD=VALUE`` (or ``STAGE.distill.FIELD=VALUE``, or ``description=...``); VALUE is YAML."""
    key, sep, raw = override.partition("=")
    if not sep or not key:
        raise XtcError(f"override {override!r} is not of the form STAGE.FIELD=VALUE")
    value = read_yaml(raw, f"override {override!r}")
    path = key.split(".")
    stages = {s.get("name"): s for s in data.get("stages", []) if isinstance(s, dict)}
    if len(path) == 1:
        target = data
    elif path[0] in stages:
        target = stages[path[0]]
        for part in path[1:-1]:
            target = target.setdefault(part, {})
        path = path[-1:]
    else:
        raise XtcError(f"override {override!r}: the recipe has no stage {path[0]!r}; stages: {', '.join(stages)}")
    target[path[0]] = value


def load_recipe(name_or_path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Recipe:
    """A preset name or a YAML file, with ``STAGE.FIELD=VALUE`` overrides, validated."""
    path = Path(name_or_path)
    if path.is_file():
        text, where = read_text(path), str(path)
    elif str(name_or_path) in preset_names():
        text, where = (PRESET_DIR / f"{name_or_path}.yaml").read_text(), f"preset {name_or_path}"
    else:
        raise XtcError(f"recipe {str(name_or_path)!r} is neither a file nor a preset; presets: {', '.join(preset_names())}")
    data = read_yaml(text, where)
    if not isinstance(data, dict):
        raise XtcError(f"{where}: a recipe is a mapping with a 'stages' list")
    return _validated(data, overrides, where)


def with_overrides(recipe: Recipe, overrides: list[str] | tuple[str, ...], where: str) -> Recipe:
    """``recipe`` with ``STAGE.FIELD=VALUE`` overrides applied, validated again."""
    return _validated(recipe.model_dump(mode="json"), overrides, where) if overrides else recipe


def _validated(data: dict, overrides, where: str) -> Recipe:
    for override in overrides:
        _apply_override(data, override)
    try:
        return Recipe.model_validate(data)
    except ValidationError as e:
        raise XtcError(f"{where}: {_name_stages(format_validation_error(e, flags=False), data)}") from None


def _name_stages(message: str, data: dict) -> str:
    """'stages.2.epochs' -> 'stages.quantize.epochs' in error messages."""
    names = {str(i): s["name"] for i, s in enumerate(data.get("stages") or []) if isinstance(s, dict) and "name" in s}
    return re.sub(r"stages\.(\d+)\b", lambda m: f"stages.{names.get(m.group(1), m.group(1))}", message)
