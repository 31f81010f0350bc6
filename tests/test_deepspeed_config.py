"""DeepSpeed compression_training configs (the XTC W1A8 / W2A8 layer-reduction setups) as xtc recipes."""

import copy
import json

import pytest
import torch
from click.testing import CliRunner

from xtc.cli import main
from xtc.data.tasks import get_task
from xtc.deepspeed_config import recipe_from_deepspeed
from xtc.errors import XtcError
from xtc.models import load_model
from xtc.quant.config import PRESETS
from xtc.quant.apply import quantize_, quantized_modules
from xtc.recipe_io import load_recipe

MODULES = ["attention.self", "intermediate", "word_embeddings", "output.dense"]


def ds_config(bits: int, layers: list[int]) -> dict:
    """A config in the format of DeepSpeedExamples' XTC configs (compression/bert/config/XTC)."""
    return {
        "train_batch_size": 16, "train_micro_batch_size_per_gpu": 16, "steps_per_print": 200,
        "zero_optimization": {"stage": 0}, "fp16": {"enabled": False}, "gradient_clipping": 1.0,
        "prescale_gradients": True, "wall_clock_breakdown": False,
        "compression_training": {
            "layer_reduction": {"enabled": True, "keep_number_layer": len(layers),
                                "module_name_prefix": "bert.encoder.layer", "teacher_layer": layers,
                                "other_module_name": ["bert.pooler", "bert.embeddings", "classifier"]},
            "weight_quantization": {
                "shared_parameters": {"enabled": True, "quantizer_kernel": False, "schedule_offset": 0,
                                      "quantize_groups": 1, "quantize_verbose": False,
                                      "quantization_type": "symmetric", "quantize_weight_in_forward": True,
                                      "rounding": "nearest",
                                      "fp16_mixed_quantize": {"enabled": False, "quantize_change_ratio": 0.1}},
                "different_groups": {"wq1": {"params": {"start_bits": bits, "target_bits": bits,
                                                        "quantization_period": 0}, "modules": MODULES}}},
            "activation_quantization": {
                "shared_parameters": {"enabled": True, "quantization_type": "symmetric",
                                      "range_calibration": "dynamic", "schedule_offset": 0},
                "different_groups": {"aq1": {"params": {"bits": 8}, "modules": MODULES[:2] + MODULES[3:]}}},
            "sparse_pruning": {"shared_parameters": {"enabled": False, "schedule_offset": 2000, "method": "l1"},
                               "different_groups": {"sp1": {"params": {"dense_ratio": 0.5},
                                                            "modules": ["attention.self"]}}},
            "head_pruning": {"shared_parameters": {"enabled": False, "schedule_offset": 2000, "method": "topk",
                                                   "num_heads": 12}, "different_groups": {}},
        },
    }


def write(tmp_path, config) -> str:
    path = tmp_path / "ds_config.json"
    path.write_text(json.dumps(config, indent=2))
    return str(path)


@pytest.mark.parametrize("bits,preset", [(1, "w1a8"), (2, "w2a8")])
def test_xtc_setups_map_to_the_reference_quantization(tmp_path, bits, preset):
    recipe = recipe_from_deepspeed(write(tmp_path, ds_config(bits, [1, 3, 5])), load_recipe(f"xtc-{preset}-l3"), "bert")
    teacher, compress = recipe.stages
    assert teacher.kind == "finetune" and teacher.batch_size == 16
    assert compress.kind == "distill" and compress.layers == [1, 3, 5] and compress.init == "teacher"
    assert compress.batch_size == 16 and compress.max_grad_norm == 1.0
    assert not compress.trim_vocabulary  # the W1A8 preset's last stage trims; a DeepSpeed config never asks to
    # The same modules, bits and granularities as the preset's 1-/2-bit rules (a DeepSpeed config names
    # no 8-bit rows), on the real bert-tiny.
    model, _ = load_model("bert-tiny", get_task("RTE"))
    low_bit = PRESETS[preset].model_copy(update={"rules": PRESETS[preset].rules[:2]})
    from_ds = dict(quantized_modules(quantize_(copy.deepcopy(model), compress.quant)))
    from_preset = dict(quantized_modules(quantize_(copy.deepcopy(model), low_bit)))
    assert from_ds.keys() == from_preset.keys() and len(from_ds) == 13
    for name, module in from_ds.items():
        a, b = module.spec, from_preset[name].spec
        assert (a.weight_bits, a.granularity, a.act_bits, a.act_mode) == (b.weight_bits, b.granularity, b.act_bits,
                                                                            b.act_mode), name
    ids = torch.tensor([[101, 7592, 2088, 102]])
    a, b = (quantize_(copy.deepcopy(model), q).eval() for q in (compress.quant, low_bit))
    assert torch.equal(a(input_ids=ids).logits, b(input_ids=ids).logits)


@pytest.mark.parametrize("edit,pattern", [
    (lambda c: c["compression_training"]["weight_quantization"]["shared_parameters"].update(quantize_groups=64),
     r"weight_quantization.shared_parameters.quantize_groups = 64: xtc uses one scale per matrix"),
    (lambda c: c["compression_training"]["weight_quantization"]["different_groups"]["wq1"]["params"].update(
        start_bits=8), r"start_bits = 8: progressive bit reduction is not supported"),
    (lambda c: c["compression_training"]["weight_quantization"]["shared_parameters"].update(schedule_offset=400),
     r"schedule_offset = 400: xtc quantizes from the first step"),
    (lambda c: c["compression_training"]["sparse_pruning"]["shared_parameters"].update(enabled=True),
     r"sparse_pruning.shared_parameters.enabled = true: pruning is not supported"),
    (lambda c: c["compression_training"]["layer_reduction"].update(keep_number_layer=4),
     r"keep_number_layer = 4: must equal the length of teacher_layer \(3\)"),
    (lambda c: c["compression_training"]["layer_reduction"].update(module_name_prefix="roberta.encoder.layer"),
     r"module_name_prefix = \"roberta.encoder.layer\": the bert model's layers are bert.encoder.layer"),
    (lambda c: c["fp16"].update(enabled=True), r"fp16.enabled = true: xtc trains in FP32"),
    (lambda c: c["compression_training"]["activation_quantization"]["different_groups"]["aq1"].update(
        modules=["pooler"]), r"xtc quantizes the inputs of quantized Linear layers only"),
    (lambda c: c.pop("compression_training"), r"no compression_training section"),
])
def test_settings_xtc_cannot_honour_are_named(tmp_path, edit, pattern):
    config = ds_config(1, [1, 3, 5])
    edit(config)
    with pytest.raises(XtcError, match=pattern):
        recipe_from_deepspeed(write(tmp_path, config), load_recipe("xtc-w1a8-l3"), "bert")


def test_run_with_a_deepspeed_config(tmp_path, glue_dir):
    ds = write(tmp_path, ds_config(1, [1]))
    result = CliRunner().invoke(main, [
        "run", "--recipe", "xtc-w1a8-l3", "--deepspeed-config", ds, "--model", "bert-tiny", "--task", "MRPC",
        "--glue-dir", str(glue_dir), "--out", str(tmp_path / "run"), "--max-train-samples", "32",
        "--max-eval-samples", "16", "--set", "teacher.max_steps=2", "--set", "compress.max_steps=2"])
    assert result.exit_code == 0, result.output
    assert "| compress | 1 | W1A8 |" in result.stdout
    bad = CliRunner().invoke(main, ["run", "--recipe", "xtc-w1a8-l3", "--deepspeed-config", str(tmp_path / "no.json"),
                                    "--task", "MRPC", "--out", str(tmp_path / "x")])
    assert bad.exit_code == 2 and "does not exist" in bad.stderr


def test_every_setting_xtc_cannot_honour_is_named_in_one_message(tmp_path):
    config = ds_config(1, [1, 3, 5])
    compression = config["compression_training"]
    compression["weight_quantization"]["shared_parameters"].update(quantize_groups=64, schedule_offset=400)
    compression["layer_reduction"].update(keep_number_layer=4)
    config["fp16"].update(enabled=True)
    with pytest.raises(XtcError, match="4 settings xtc cannot honour") as error:
        recipe_from_deepspeed(write(tmp_path, config), load_recipe("xtc-w1a8-l3"), "bert")
    for key in ("quantize_groups", "schedule_offset", "keep_number_layer", "fp16.enabled"):
        assert key in str(error.value)


def test_dry_run_prints_the_mapping_and_checks_it_against_the_model(tmp_path):
    ds = write(tmp_path, ds_config(1, [1]))
    args = ["run", "--recipe", "xtc-w1a8-l3", "--deepspeed-config", ds, "--model", "bert-tiny", "--task", "MRPC",
            "--out", str(tmp_path / "run"), "--dry-run"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "name: compress" in result.stdout and "- 1" in result.stdout and "nothing trained" in result.stdout
    assert not (tmp_path / "run").exists()
    # --set names the mapped stages: layer_reduction is not one of them any more
    result = CliRunner().invoke(main, [*args, "--set", "layer_reduction.epochs=3"])
    assert result.exit_code == 2 and "no stage 'layer_reduction'; stages: teacher, compress" in result.stderr
    # layers written for a 12-layer model, static ranges and 4-bit activations: all found before any training
    config = ds_config(1, [1, 7, 11])
    config["compression_training"]["activation_quantization"]["shared_parameters"]["range_calibration"] = "static"
    result = CliRunner().invoke(main, [*args[:4], write(tmp_path, config), *args[5:]])
    assert result.exit_code == 2
    assert "teacher layers [1, 7, 11] are not valid for a 2-layer teacher" in result.stderr
    assert "static activation ranges" in result.stderr and "--fake-quant-only" in result.stderr


def test_a_bad_run_fails_before_torch_is_imported(tmp_path):
    """`xtc run` checks everything first without importing torch or transformers (what takes the seconds):
    a DeepSpeed config written for a 12-layer model, given a 2-layer one, fails at once."""
    import subprocess
    import sys

    ds = write(tmp_path, ds_config(1, [1, 7, 11]))
    code = ("import sys\nfrom xtc.cli import main\ntry:\n    main(sys.argv[1:])\nexcept SystemExit as e:\n"
            "    print('exit', e.code, 'torch' in sys.modules, 'transformers' in sys.modules)\n")
    args = ["run", "--recipe", "xtc-w1a8-l3", "--deepspeed-config", ds, "--model", "bert-tiny", "--task", "MRPC",
            "--out", str(tmp_path / "run")]
    result = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True)
    assert "teacher layers [1, 7, 11] are not valid for a 2-layer teacher" in result.stderr
    assert result.stdout.split() == ["exit", "2", "False", "False"]
    assert not (tmp_path / "run").exists()
