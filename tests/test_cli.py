"""The `xtc` command as a user meets it: finetune, eval, and one clear line for bad input."""

import json
import subprocess
import sys

import pytest
from click.testing import CliRunner

from xtc.cli import main

FAST = ["--max-train-samples", "48", "--max-eval-samples", "32", "--max-steps", "3", "--batch-size", "16"]


def xtc(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def assert_user_error(result, pattern):
    assert result.exit_code == 2, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("xtc: error: "), result.stderr
    assert pytest.importorskip("re").search(pattern, lines[0]), lines[0]


@pytest.fixture(scope="module")
def rte_run(tmp_path_factory, glue_dir):
    out = tmp_path_factory.mktemp("runs") / "rte-teacher"
    result = xtc("finetune", "--model", "bert-tiny", "--task", "RTE", "--glue-dir", glue_dir, "--out", out, *FAST)
    assert result.exit_code == 0, result.output
    return out, result


def test_finetune_writes_an_hf_model_folder(rte_run):
    out, result = rte_run
    for name in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "metrics.json",
                 "train_log.jsonl", "xtc_run.json"):
        assert (out / name).is_file(), name
    assert not list(out.glob("*.bin")) and not list(out.glob(".save-*"))
    assert "RTE best dev" in result.stdout and "accuracy" in result.stdout
    from transformers import AutoModelForSequenceClassification

    assert AutoModelForSequenceClassification.from_pretrained(out).config.finetuning_task == "RTE"


def test_eval_prints_the_metrics_of_the_saved_model(rte_run, glue_dir):
    out, _ = rte_run
    result = xtc("eval", out, "--task", "rte", "--glue-dir", glue_dir, "--max-eval-samples", "32", "--json")
    assert result.exit_code == 0, result.output
    recorded = json.loads((out / "metrics.json").read_text())["dev"]
    assert json.loads(result.stdout)["dev"] == pytest.approx(recorded["dev"])
    plain = xtc("eval", out, "--task", "RTE", "--glue-dir", glue_dir)
    assert plain.exit_code == 0 and plain.stdout.startswith("dev: accuracy ")


def test_same_run_is_reused_and_a_different_run_refused(rte_run, glue_dir):
    out, _ = rte_run
    base = ["finetune", "--model", "bert-tiny", "--task", "RTE", "--glue-dir", glue_dir, "--out", out]
    again = xtc(*base, *FAST)
    assert again.exit_code == 0 and "already holds this finished run" in again.output
    assert_user_error(xtc(*base, *FAST, "--lr", "1e-3"),
                      r"holds a different run \(differs in: lr\); pass --overwrite")


def test_overwrite_replaces_a_different_run(tmp_path, glue_dir):
    out = tmp_path / "run"
    base = ["finetune", "--model", "bert-tiny", "--task", "WNLI", "--glue-dir", glue_dir, "--out", out, *FAST]
    assert xtc(*base).exit_code == 0
    result = xtc(*base, "--seed", "7", "--overwrite")
    assert result.exit_code == 0, result.output
    assert json.loads((out / "xtc_run.json").read_text())["seed"] == 7


def test_refuses_a_folder_that_is_not_a_run(tmp_path, glue_dir):
    (tmp_path / "notes.txt").write_text("mine")
    assert_user_error(xtc("finetune", "--model", "bert-tiny", "--task", "RTE", "--glue-dir", glue_dir,
                          "--out", tmp_path, "--overwrite"), "is not empty and holds no xtc run")
    assert (tmp_path / "notes.txt").exists()


@pytest.mark.parametrize("args,pattern", [
    (["--task", "XNLI"], r"invalid value 'XNLI' for --task: unknown task 'XNLI'; valid tasks: CoLA, SST-2, MRPC, "
                         r"STS-B, QQP, MNLI, QNLI, RTE, WNLI"),
    (["--task", "RTE", "--lr", "fast"], r"invalid value 'fast' for --lr"),
    (["--task", "RTE", "--batch-size", "0"], r"invalid value '0' for --batch-size: .*greater than 0"),
    (["--task", "RTE", "--glue-dir", "/no/such/glue"], r"GLUE folder '/no/such/glue' does not exist"),
    (["--task", "RTE", "--model", "./no-such-model"], r"model folder './no-such-model' does not exist"),
    (["--task", "QNLI"], r"missing GLUE file .*QNLI/train.tsv"),
])
def test_bad_finetune_input(args, pattern, glue_dir, tmp_path):
    full = ["finetune", "--glue-dir", glue_dir, "--out", tmp_path / "o", "--model", "bert-tiny"]
    assert_user_error(xtc(*full, *args), pattern)


def test_missing_required_flag(tmp_path):
    assert_user_error(xtc("finetune", "--out", tmp_path), r"missing required setting --task")


def test_malformed_glue_file(tmp_path, glue_dir):
    (tmp_path / "RTE").mkdir()
    rows = (glue_dir / "RTE" / "train.tsv").read_text().splitlines()[:3]
    (tmp_path / "RTE" / "train.tsv").write_text("\n".join(rows) + "\n7\tno second sentence\n")
    result = xtc("finetune", "--model", "bert-tiny", "--task", "RTE", "--glue-dir", tmp_path, "--out", tmp_path / "o")
    assert_user_error(result, r"RTE/train.tsv:4: expected 4 tab-separated columns, found 2")


def test_eval_bad_model_folders(tmp_path, glue_dir):
    (tmp_path / "gpt" ).mkdir()
    (tmp_path / "gpt" / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    assert_user_error(xtc("eval", tmp_path / "gpt", "--task", "RTE", "--glue-dir", glue_dir),
                      "model type 'gpt2' is not a supported encoder")
    assert_user_error(xtc("eval", tmp_path / "none", "--task", "RTE", "--glue-dir", glue_dir),
                      "does not exist")
    assert_user_error(xtc("eval", "bert-tiny", "--task", "RTE", "--glue-dir", glue_dir),
                      "has no classification head: fine-tune it first")


def test_eval_bad_split(rte_run, glue_dir):
    out, _ = rte_run
    assert_user_error(xtc("eval", out, "--task", "RTE", "--glue-dir", glue_dir, "--split", "test"),
                      "RTE has no split 'test'; valid splits: train, dev")


def test_console_script_prints_no_traceback(tmp_path):
    """The installed entry point, as a user runs it."""
    proc = subprocess.run([sys.executable, "-m", "xtc", "eval", str(tmp_path / "missing"), "--task", "nope"],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and proc.stderr.count("\n") == 1
    assert proc.stderr.startswith("xtc: error: invalid value 'nope' for --task")


def test_run_flags_reach_the_config(tmp_path, glue_dir):
    """--teacher-layers takes one comma list; --set repeats; a bad override stops before any work."""
    result = xtc("run", "--recipe", "xtc-w1a8-l3", "--task", "RTE", "--glue-dir", glue_dir, "--out", tmp_path / "o",
                 "--teacher-layers", "1,3,5", "--set", "quantize.epochs=2", "--set", "quantize.lrr=1")
    assert_user_error(result, r"preset xtc-w1a8-l3: unknown setting 'stages.quantize.lrr'")
    assert not (tmp_path / "o").exists()
    assert_user_error(xtc("run", "--recipe", "xtc-w1a8-l3", "--task", "RTE", "--out", tmp_path / "o",
                          "--teacher-layers", "1,x"), r"invalid value '1,x' for --teacher-layers")


def test_settings_added_later_and_left_off_keep_a_run_the_same():
    from xtc.rundir import _same_settings

    old = {"lr": 1e-4, "recipe": {"stages": [{"name": "q", "quant": "w1a8"}]}}
    assert _same_settings(old, {"lr": 1e-4, "recipe": {"stages": [{"name": "q", "quant": "w1a8", "augment": None}]}})
    assert not _same_settings(old, {"lr": 1e-4, "recipe": {"stages": [{"name": "q", "quant": "w1a8",
                                                                        "augment": {"copies": 2}}]}})
    assert not _same_settings(old, {"lr": 2e-4, "recipe": old["recipe"]})


def test_a_training_command_on_the_base_install_says_which_extra_it_needs(tmp_path, glue_dir):
    # torch absent, as on `pip install xtc` (no extras): sys.modules[name] = None makes its import fail
    code = ("import sys\nsys.modules['torch'] = None\nfrom xtc.cli import main\nmain(sys.argv[1:])\n")
    result = subprocess.run([sys.executable, "-c", code, "finetune", "--model", "bert-tiny", "--task", "RTE",
                             "--glue-dir", str(glue_dir), "--out", str(tmp_path / "run")], capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "xtc: error: this command needs torch, which the base install (packed models only) does not bring: "
        "pip install 'xtc[train]'"]


def test_a_bad_run_of_the_trimming_preset_fails_before_torch_is_imported(tmp_path):
    """xtc-w1a8-l3 trims its vocabulary: its pre-run check reads the model's tokenizer.json, still without
    torch or transformers, and lists the layer problem found beside it."""
    import subprocess
    import sys

    code = ("import sys\nfrom xtc.cli import main\ntry:\n    main(sys.argv[1:])\nexcept SystemExit as e:\n"
            "    print('exit', e.code, 'torch' in sys.modules, 'transformers' in sys.modules)\n")
    args = ["run", "--recipe", "xtc-w1a8-l3", "--model", "bert-tiny", "--task", "MRPC", "--out", str(tmp_path / "run"),
            "--set", "layer_reduction.layers=[1, 7, 11]"]
    result = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, check=False)
    assert "teacher layers [1, 7, 11] are not valid for a 2-layer teacher" in result.stderr, result.stderr
    assert result.stdout.split() == ["exit", "2", "False", "False"]
