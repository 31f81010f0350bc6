"""Recipes: presets, YAML files, overrides, and errors that name the field."""

import pytest

from xtc.errors import XtcError
from xtc.recipe_io import load_recipe, preset_names


def test_presets_ship_and_validate():
    assert {"xtc-w1a8-l3", "xtc-w2a8-l3", "xtc-w1a8", "xtc-w2a8", "xtc-w1a8-l6", "xtc-w1a8-l5"} <= set(preset_names())
    for name in preset_names():
        recipe = load_recipe(name)
        assert recipe.stages[0].kind == "finetune" and all(s.kind == "distill" for s in recipe.stages[1:])
    l3 = load_recipe("xtc-w1a8-l3")
    assert [s.name for s in l3.stages] == ["teacher", "layer_reduction", "quantize_w2a8", "quantize"]
    assert l3.stage("layer_reduction").layers == [1, 3, 5] and l3.stage("quantize").quant == "w1a8-word2"
    assert l3.stage("quantize").trim_vocabulary and l3.stage("quantize_w2a8").quant == "w2a8"
    assert load_recipe("xtc-w2a8-l3").stage("quantize").quant == "w2a8"
    assert load_recipe("xtc-w1a8-l6").stage("layer_reduction").layers == [1, 3, 5, 7, 9, 11]
    assert load_recipe("xtc-w1a8-l5").stage("layer_reduction").layers == [2, 4, 6, 8, 10]
    two = load_recipe("xtc-w1a8-l3-two-stage")
    first, second = two.stage("quantize_intermediate"), two.stage("quantize_prediction")
    assert first.distill.logit_weight == 0 and second.distill.hidden_weight == second.distill.attention_weight == 0
    one_stage_epochs = load_recipe("xtc-w1a8-l3").stage("quantize").epochs
    assert first.epochs + second.epochs == one_stage_epochs  # equal total budget


def test_overrides():
    recipe = load_recipe("xtc-w1a8-l3", ["quantize.epochs=20", "quantize.lr=1e-4", "layer_reduction.layers=[0, 5]",
                                         "quantize.distill.temperature=2", "description=mine"])
    q = recipe.stage("quantize")
    assert q.epochs == 20 and q.lr == 1e-4 and q.distill.temperature == 2 and recipe.description == "mine"
    assert recipe.stage("layer_reduction").layers == [0, 5]


def test_yaml_file(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("stages:\n  - {name: t, kind: finetune, max_steps: 5}\n"
                    "  - {name: q, kind: distill, quant: w2a8, distill: {attention_weight: 0}}\n")
    recipe = load_recipe(path)
    assert recipe.stage("q").distill.attention_weight == 0 and recipe.stage("t").max_steps == 5


@pytest.mark.parametrize("overrides,pattern", [
    (["quantize.epochz=3"], r"preset xtc-w1a8-l3: unknown setting 'stages.quantize.epochz'"),
    (["quantize.lr=-1"], r"invalid value -1 for stages.quantize.lr: Input should be greater than 0"),
    (["quantize.quant=w3a8"], r"stages.quantize.quant: unknown quantization preset 'w3a8'; valid presets: w1a8, w2a8"),
    (["quantize.kind=prune"], r"stages.quantize.kind: Input should be 'finetune' or 'distill'"),
    (["quantize.distill.hidden_weight=x"], r"stages.quantize.distill.hidden_weight"),
    (["qat.epochs=3"], r"the recipe has no stage 'qat'; stages: teacher, layer_reduction, quantize"),
    (["quantize.epochs"], r"not of the form STAGE.FIELD=VALUE"),
    (["teacher.quant=w1a8"], r"^preset xtc-w1a8-l3: stages.teacher: a finetune stage trains the full-precision "
                              r"teacher on the task labels: it takes no layers, quant, augment or trim_vocabulary$"),
])
def test_bad_fields_are_named(overrides, pattern):
    with pytest.raises(XtcError, match=pattern):
        load_recipe("xtc-w1a8-l3", overrides)


def test_bad_files(tmp_path):
    with pytest.raises(XtcError, match=r"recipe 'nope' is neither a file nor a preset; presets: xtc-w1a8, "):
        load_recipe("nope")
    bad = tmp_path / "bad.yaml"
    bad.write_text("stages:\n  - name: t\n   kind: finetune\n")
    with pytest.raises(XtcError, match=rf"{bad}:3: not valid YAML"):
        load_recipe(bad)
    bad.write_text("stages:\n  - {name: q, kind: distill}\n")
    with pytest.raises(XtcError, match="the first stage, and only the first, must be of kind 'finetune'"):
        load_recipe(bad)
    bad.write_text("- just a list\n")
    with pytest.raises(XtcError, match="a recipe is a mapping"):
        load_recipe(bad)


def test_teacher_layers_flag():
    from xtc.preflight import resolve_recipe
    from xtc.recipe import RunConfig

    config = RunConfig(recipe="xtc-w1a8-l3", task="RTE", out="x", teacher_layers="0,2,5")
    assert resolve_recipe(config).stage("layer_reduction").layers == [0, 2, 5]
    with pytest.raises(XtcError, match="has no layer-reduction stage"):
        resolve_recipe(RunConfig(recipe="xtc-w1a8", task="RTE", out="x", teacher_layers="1"))
    with pytest.raises(ValueError, match="comma-separated layer indices"):
        RunConfig(recipe="xtc-w1a8-l3", task="RTE", out="x", teacher_layers="1;3")


def test_start_of_names_the_stage_or_model_each_stage_starts_from():
    from xtc.recipe import Recipe

    recipe = Recipe.model_validate({"stages": [
        {"name": "t", "kind": "finetune"}, {"name": "a", "kind": "distill", "layers": [0]},
        {"name": "b", "kind": "distill", "init": "teacher"}, {"name": "c", "kind": "distill", "init": "a"},
        {"name": "d", "kind": "distill", "init": "model:bert-tiny"}]})
    assert [recipe.start_of(i) for i in range(1, 5)] == ["t", "t", "a", "model:bert-tiny"]
