"""The GLUE table's runner and its reproduction check (benchmarks/glue): the commands they build from the
teacher grid, the targets' verdicts, and how partial reruns merge. The training itself is the runner's job
and is checked by reproduce.py, not here."""

import shlex
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks" / "glue"))
import reproduce  # noqa: E402
import run_glue  # noqa: E402


@pytest.fixture
def no_results(tmp_path, monkeypatch):
    """The runner with an empty results.json and runs/ folder of its own (the committed one is the table)."""
    monkeypatch.setattr(run_glue, "RESULTS", tmp_path / "results.json")
    monkeypatch.setattr(run_glue, "run_dir", lambda task: tmp_path / "runs" / task.lower())
    monkeypatch.setattr(run_glue, "PRECISION", "bf16")


def cell(score, size=1_000_000, command="xtc finetune --out runs/x --bf16", **extra):
    return {"score": score, "size_bytes": size, "wall_time_s": 60.0, "command": command, **extra}


def results(scores: dict) -> dict:
    """{stage: [score per averaged task]} -> results.json's shape (same score on every task)."""
    return {task: {stage: cell(score) for stage, score in scores.items()} for task in run_glue.AVERAGED}


def test_teacher_is_the_grids_best_cell_or_the_default_outside_it(no_results):
    assert run_glue.teacher_settings("RTE") == ("2e-5", "10")  # benchmarks/teachers/results.json's best RTE cell
    assert run_glue.teacher_settings("WNLI") == ("5e-5", "10")
    assert run_glue.teacher_settings("SST-2") == ("5e-5", "1")  # SST-2's epochs cut
    assert run_glue.teacher_dir("RTE") == Path("runs/teachers-bf16/RTE/lr2e-5-ep10")


def test_a_recorded_teacher_fixes_the_folder_and_precision_of_its_students(no_results):
    run_glue.write_json(run_glue.RESULTS, {"RTE": {"teacher": cell(60.0, command=(
        "xtc finetune --model minilm-l6 --task RTE --out runs/teachers-fp32/RTE/lr2e-5-ep10"))}})
    command = run_glue.run_command("RTE")
    assert command[command.index("--teacher") + 1] == "runs/teachers-fp32/RTE/lr2e-5-ep10"
    assert not any("bf16" in word for word in command)  # the teacher's float32, though this machine has bf16
    assert "--bf16" not in run_glue.plain_command("RTE")
    assert "--bf16" in run_glue.teacher_command("MRPC")  # unrecorded: this machine's precision


def test_sst2_stages_carry_their_budget_cut(no_results):
    words = shlex.join(run_glue.run_command("SST-2"))
    assert all(f"{stage}.epochs=1" in words and f"{stage}.eval_steps=500" in words for stage in run_glue.STAGES[1:])


def test_targets_say_met_or_missed_by_how_much():
    scores = {"teacher": 80.0, "l3_w1a8": 76.0, "l3_w2a8": 79.0, "l6_w2a8": 79.8, "l6_w1a8": 78.4,
              "l3_fp32": 78.0, "pretrained_l3": 77.0, "pretrained_l3_plain": 78.5}
    text = run_glue.targets(results(scores))
    assert "| 95.0% (76.00 of 80.00) | missed by 2.0 percentage points |" in text  # 3L W1A8: 97% asked
    assert "| 98.8% (79.00 of 80.00) | met |" in text  # 3L W2A8: 98.5%
    assert "| 99.8% (79.80 of 80.00) | met |" in text  # 6L W2A8: 99.5%
    assert "| 98.0% (78.40 of 80.00) | met |" in text  # 6L W1A8: 98% exactly
    assert "lowest: 3L W1A8" in text and "met so far" in text  # 95% > the 90% floor
    assert "| 78.00 vs 77.00 | met |" in text
    assert "| 78.00 vs 78.50 | missed by 0.50 points |" in text


def test_targets_wait_for_all_averaged_tasks_and_flag_a_task_below_the_floor():
    partial = results({"teacher": 80.0, "l3_w1a8": 76.0})
    del partial["SST-2"]
    partial["MRPC"]["l3_w1a8"]["score"] = 40.0  # half the teacher
    text = run_glue.targets(partial)
    assert text.count("| not all tasks yet | - |") == len(run_glue.TARGETS)
    assert "missed: 3L W1A8 MRPC 50.0% |" in text  # the other tasks keep 95%


def test_table_keeps_wnli_out_of_the_average():
    table = results({"teacher": 80.0, "l3_w1a8": 72.0})
    table["WNLI"] = {"teacher": cell(56.0), "l3_w1a8": cell(10.0)}
    for task in table:
        table[task]["teacher"]["dev"] = {"dev": {"accuracy": 0.8, "score": 0.8}}
    row = next(line for line in run_glue.table(table).splitlines() if line.startswith("| 3L W1A8 |"))
    assert "| 72.00 | 90.0% |" in row


def test_partial_rerun_replaces_its_rows_and_keeps_the_others_in_table_order():
    before = {"reruns": [{"command": "a", "commit": "1", "stages": ["teacher", "l3_fp32"]}],
              "commands": ["OMP_NUM_THREADS=1 xtc run"],
              "cells": [{"stage": "teacher", "score": 1}, {"stage": "l3_fp32", "score": 2}]}
    new = {"reruns": [{"command": "b", "commit": "2", "stages": ["l6_w1a8", "l3_fp32"]}],
           "commands": ["OMP_NUM_THREADS=2 xtc run"],
           "cells": [{"stage": "l6_w1a8", "score": 3}, {"stage": "l3_fp32", "score": 4}]}
    merged = reproduce.merged(before, new)
    assert [(c["stage"], c["score"]) for c in merged["cells"]] == [("teacher", 1), ("l3_fp32", 4), ("l6_w1a8", 3)]
    assert [r["commit"] for r in merged["reruns"]] == ["1", "2"]
    assert len(merged["commands"]) == 2
    assert "Not rerun yet: 6L W2A8" in reproduce.markdown("MRPC", {**merged, "cells": [
        {**c, "recorded": 1.0, "recorded_commit": "x", "weights": "identical"} for c in merged["cells"]]})


def test_cells_of_different_thread_counts_are_not_rerun_together():
    cells = {"l6_w2a8": {}, "l6_w1a8": {"threads": 2}}
    assert reproduce.threads_of(cells, ["l6_w1a8"]) == 2
    assert reproduce.threads_of(cells, ["l6_w2a8"]) == 1  # recorded before cells kept their count: one thread
    with pytest.raises(SystemExit, match="different thread counts"):
        reproduce.threads_of(cells, ["l6_w2a8", "l6_w1a8"])


def test_recorded_commands_move_to_the_rerun_folder():
    command = "xtc run --teacher runs/teachers-bf16/MRPC/lr1e-4-ep3 --out runs/glue2/mrpc --set a.bf16=true"
    words = reproduce.with_out_moved(command)
    assert words[words.index("--out") + 1] == "runs/repro/glue2/mrpc"
    assert words[words.index("--teacher") + 1] == "runs/teachers-bf16/MRPC/lr1e-4-ep3"  # distils from the recorded one


def test_a_trimming_stage_counts_as_finished_once_trimmed_to_the_recipes_rows(tmp_path):
    """metrics.json is written when training ends, then again by the trim: a cell is recorded only after the
    trim with the recipe's vocabulary_rows (an earlier trim with other rows is redone by `xtc run`)."""
    stage = run_glue.GLUE_RECIPE.stage("l3_w1a8")
    assert stage.trim_vocabulary and stage.vocabulary_rows == 24000
    assert not run_glue.finished_stage(tmp_path, stage)
    for vocabulary, finished in [(None, False), ({"kept": 13452, "rows": None}, False), ({"kept": 13452}, False),
                                 ({"kept": 24000, "rows": 24000}, True)]:
        run_glue.write_json(tmp_path / "metrics.json", {"dev": {}} | ({"vocabulary": vocabulary} if vocabulary else {}))
        assert run_glue.finished_stage(tmp_path, stage) is finished
    assert run_glue.finished_stage(tmp_path, run_glue.GLUE_RECIPE.stage("l3_w2a8"))  # no trim: metrics.json is enough


def test_w1a8_cells_trimmed_before_vocabulary_rows_are_named_and_redone(no_results):
    cells = results({"teacher": 80.0, "l3_w1a8": 70.0})
    cells["MRPC"]["l3_w1a8"]["vocabulary_rows"] = 24000
    text = run_glue.notes_text(cells)
    assert "(to be recorded again): RTE 3L W1A8, STS-B 3L W1A8, CoLA 3L W1A8, SST-2 3L W1A8." in text and "MRPC 3L W1A8" not in text
    assert run_glue.older_trim_stages("STS-B", cells["STS-B"]) == ["l3_w1a8"] and run_glue.older_trim_stages("MRPC", cells["MRPC"]) == []
    for task in cells:
        cells[task]["l3_w1a8"]["vocabulary_rows"] = 24000
    assert "to be recorded again" not in run_glue.notes_text(cells)
    # the recipe's row count changed since a cell was recorded: its stage folder says so, and it is redone
    folder = run_glue.run_dir("MRPC") / "l3_w1a8"
    folder.mkdir(parents=True)
    run_glue.write_json(folder / "metrics.json", {"dev": {}, "vocabulary": {"kept": 24000, "rows": 24000}})
    assert run_glue.older_trim_stages("MRPC", cells["MRPC"]) == []
    run_glue.write_json(folder / "metrics.json", {"dev": {}, "vocabulary": {"kept": 20000, "rows": 20000}})
    assert run_glue.older_trim_stages("MRPC", cells["MRPC"]) == ["l3_w1a8"]
    assert "(to be recorded again): MRPC 3L W1A8." in run_glue.notes_text(cells)
