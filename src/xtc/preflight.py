"""Everything about a run that can be checked before work starts, checked at once and in well under a
second: no torch, no weights (a hub model's tokenizer, for a stage that trims its vocabulary, needs
transformers). The recipe with its overrides or DeepSpeed config, against the model's
``config.json``: the teacher layers each stage keeps, and quantization the packed export and runtime can
run. Every problem is listed in one error.
"""

import json
from pathlib import Path

from xtc.arch import architecture
from xtc.data.tasks import get_task
from xtc.errors import XtcError
from xtc.layer_choice import teacher_layers_problem
from xtc.packed.codecs import unstorable
from xtc.quant.config import LINEAR_ROLES, get_quant_config
from xtc.recipe import Recipe, RunConfig, StageConfig
from xtc.recipe_io import load_recipe, with_overrides


def resolve_recipe(config: RunConfig) -> Recipe:
    """The run's recipe with ``--deepspeed-config``, ``--set`` and ``--teacher-layers`` applied, validated.
    With a DeepSpeed config, ``--set`` applies to the recipe it maps to (stages: the teacher and compress)."""
    from xtc.deepspeed_config import recipe_from_deepspeed

    if config.deepspeed_config is None:
        recipe = load_recipe(config.recipe, config.set)
    else:
        if config.teacher_layers is not None:
            raise XtcError("give the layers either with --teacher-layers or in the DeepSpeed config, not both")
        recipe = recipe_from_deepspeed(config.deepspeed_config, load_recipe(config.recipe),
                                       str(model_config(config.teacher or config.model).get("model_type")))
        recipe = with_overrides(recipe, config.set, f"the recipe of {config.deepspeed_config}")
    if config.teacher_layers is None:
        return recipe
    if not any(s.layers is not None for s in recipe.stages):
        raise XtcError(f"--teacher-layers: recipe {config.recipe!r} has no layer-reduction stage")
    stages = [s.model_copy(update={"layers": list(config.teacher_layers)}) if s.layers is not None else s
              for s in recipe.stages]
    return recipe.model_copy(update={"stages": stages})


def model_config(name: str | Path) -> dict:
    """The ``config.json`` of a short name, folder or hub name, without loading weights."""
    from xtc.models import resolve_model

    source = Path(resolve_model(name))
    if (source / "config.json").is_file():
        try:
            return json.loads((source / "config.json").read_text())
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise XtcError(f"{source / 'config.json'}: not a valid JSON model config") from None
    from transformers import AutoConfig  # a hub name: its config is in the local cache, or this fails

    try:
        return AutoConfig.from_pretrained(str(source)).to_dict()
    except (OSError, ValueError) as e:
        raise XtcError(f"could not load model {str(name)!r}: {str(e).splitlines()[0]}") from None


def check_run(config: RunConfig) -> Recipe:
    """The resolved recipe, after every check that needs no training; all problems in one XtcError."""
    recipe = resolve_recipe(config)
    teacher = model_config(config.teacher or config.model)
    arch = architecture(str(teacher.get("model_type")))
    if not isinstance(teacher.get(arch.num_layers_key), int):
        raise XtcError(f"{config.teacher or config.model}: its config.json has no {arch.num_layers_key}")
    layers = {recipe.stages[0].name: teacher[arch.num_layers_key]}  # each stage's layer count, as far as known
    problems = []
    recorded = teacher.get("finetuning_task") if config.teacher is not None else None
    if recorded and recorded.lower() != get_task(config.task).name.lower():
        problems.append(f"--teacher {config.teacher} was trained on {recorded}, not {get_task(config.task).name}")
    for i, stage in enumerate(recipe.stages[1:], start=1):
        start_name = recipe.start_of(i)
        start = layers.get(start_name)
        origin = "" if start_name == recipe.stages[0].name else f" (it starts from stage {start_name})"
        if stage.init.startswith("model:"):
            start = _student_layers(stage, teacher[arch.num_layers_key], problems)
        count = start
        if stage.layers is not None and start is not None:
            keep = stage.layers if isinstance(stage.layers, list) else None
            if keep is None and not 0 < stage.layers <= start:
                problems.append(f"stage {stage.name}: cannot keep {stage.layers} layers of a {start}-layer model "
                                f"(choose 1 to {start}){origin}")
            problem = teacher_layers_problem(keep, start) if keep is not None else None
            if problem:
                problems.append(f"stage {stage.name}: {problem}{origin}")
            count = len(keep) if keep is not None else stage.layers
        layers[stage.name] = count
        if stage.quant is not None and not config.fake_quant_only:
            problems += _quantization_problems(stage, arch, count if count is not None else start)
        if stage.trim_vocabulary:
            problem = _trim_problem(stage, config.teacher or config.model, arch)
            if problem:
                problems.append(f"stage {stage.name}: trim_vocabulary: {problem} (--set {stage.name}."
                                "trim_vocabulary=false keeps the whole table)")
    if problems:
        raise XtcError("the run cannot go as configured:\n  " + "\n  ".join(problems)
                       if len(problems) > 1 else problems[0])
    return recipe


def _student_layers(stage: StageConfig, num_teacher: int, problems: list[str]) -> int | None:
    """The layer count of another pre-trained model (init: model:NAME), its layer_map checked."""
    other = model_config(stage.init.removeprefix("model:"))
    count = other.get(architecture(str(other.get("model_type"))).num_layers_key)
    if stage.layer_map is not None:
        if len(stage.layer_map) != count or not all(0 <= t < num_teacher for t in stage.layer_map):
            problems.append(f"stage {stage.name}: layer_map {stage.layer_map} must give a teacher layer (0 to "
                            f"{num_teacher - 1}) for each of the student's {count} layers")
    return count


def _trim_problem(stage: StageConfig, model: str | Path, arch) -> str | None:
    """What xtc.vocab would refuse after the stage has trained, found before: the tokenizer, the word-table rule."""
    from xtc.models import load_tokenizer, resolve_model
    from xtc.vocab import trim_problem

    try:  # a problem loading it joins the others (one error lists them all)
        local = Path(resolve_model(model)) / "tokenizer.json"  # read as is: no transformers (seconds) when local
        text = local.read_text() if local.is_file() else load_tokenizer(model).backend_tokenizer.to_str()
    except XtcError as e:
        return str(e)
    tokenizer = json.loads(text)
    rule = get_quant_config(stage.quant).rule_for(arch.word_embeddings) if stage.quant is not None else None
    return trim_problem(tokenizer, rule)


def _quantization_problems(stage: StageConfig, arch, num_layers: int | None) -> list[str]:
    """Rules that would train a model the packed export refuses, found on the architecture's module names."""
    quant = get_quant_config(stage.quant)
    linears = [f"{arch.layers}.{i}.{getattr(arch, role)}" for i in range(num_layers or 1) for role in LINEAR_ROLES]
    linears.append(arch.pooler)
    embeddings = [arch.word_embeddings, arch.position_embeddings, f"{arch.embeddings}.token_type_embeddings"]
    problems = {}
    for name, linear in [*((n, True) for n in linears), *((n, False) for n in embeddings)]:
        rule = quant.rule_for(name)
        problem = unstorable(rule, linear) if rule is not None else None
        if problem and problem not in problems.values():
            problems[name] = problem
    return [f"stage {stage.name}: {name}: {problem} (--fake-quant-only trains it anyway, without a packed export)"
            for name, problem in problems.items()]
