"""`xtc study` on the real bert-tiny: cells, records, failures, and a killed study resuming."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from click.testing import CliRunner

from xtc.cli import main
from xtc.errors import XtcError
from xtc.provenance import source_commit
from xtc.rundir import claim
from xtc.study.config import cells, load_study
from xtc.study.runner import read_results

# bert-tiny with budgets of 2 steps per stage: what every study here shares
TINY_BASE = """
model: bert-tiny
tasks: [MRPC]
recipe: xtc-w1a8-l3
max_train_samples: 32
max_eval_samples: 16
set:
  - teacher.max_steps=2
  - layer_reduction.max_steps=2
  - layer_reduction.layers=[1]
  - quantize_w2a8.max_steps=2
  - quantize.max_steps=2
  - teacher.batch_size=16
  - layer_reduction.batch_size=16
  - quantize_w2a8.batch_size=16
  - quantize.batch_size=16
"""

STUDY = TINY_BASE + """description: a tiny study
grid:
  quantize.lr: [1.0e-4, 5.0e-4]
  seed: [1, 2]
"""


@pytest.fixture
def study_file(tmp_path):
    path = tmp_path / "study.yaml"
    path.write_text(STUDY)
    return path


def test_cells_are_the_grid_times_the_tasks(study_file):
    study = load_study(study_file)
    grid = cells(study)
    assert len(grid) == 4 and len({c.name for c in grid}) == 4
    assert {(c.settings["quantize.lr"], c.seed) for c in grid} == {(1e-4, 1), (1e-4, 2), (5e-4, 1), (5e-4, 2)}
    assert all("quantize.lr=" in " ".join(c.overrides) for c in grid)


@pytest.mark.parametrize("change,pattern", [
    ("  quantize.lrr: [1]\n", r"cell MRPC-.*unknown setting 'stages.quantize.lrr'"),
    ("  teacher.lr: [1]\n", r"stage .teacher. is shared by all cells of a task"),
    ("  quantize.epochs: []\n", r"grid key 'quantize.epochs' has no values"),
])
def test_bad_grids_fail_before_running(study_file, change, pattern):
    study_file.write_text(STUDY + change)
    with pytest.raises(XtcError, match=pattern):
        load_study(study_file)


def _study_process(study_file, out, glue_dir, *extra):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.Popen([sys.executable, "-m", "xtc", "study", str(study_file), "--out", str(out),
                             "--glue-dir", str(glue_dir), *extra], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)


def test_killed_study_resumes_without_redoing_finished_cells(study_file, tmp_path, glue_dir):
    out = tmp_path / "study"
    proc = _study_process(study_file, out, glue_dir)
    deadline = time.time() + 240
    while not read_results(out) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGKILL)  # the study and its running cell
    proc.wait()
    finished = {r["cell"] for r in read_results(out) if r["status"] == "ok"}
    assert finished, "no cell finished before the kill"
    stamps = {c: (out / "cells" / c / "summary.json").stat().st_mtime_ns for c in finished}

    result = CliRunner().invoke(main, ["study", str(study_file), "--out", str(out), "--glue-dir", str(glue_dir)])
    assert result.exit_code == 0, result.output
    records = read_results(out)
    ok = [r for r in records if r["status"] == "ok"]
    assert sorted(r["cell"] for r in ok) == sorted(c.name for c in cells(load_study(study_file)))  # each once
    assert {c: (out / "cells" / c / "summary.json").stat().st_mtime_ns for c in finished} == stamps
    assert all(r["bits"] == "W1A8" and r["layers"] == 1 and 0 <= r["dev"]["f1"] <= 1 for r in ok)
    teacher_runs = (out / "teachers" / "MRPC" / "teacher" / "train_log.jsonl").read_text().count('"event": "start"')
    assert teacher_runs == 1


def test_two_processes_share_a_study_folder(study_file, tmp_path, glue_dir):
    """Started together on one folder: the shared teacher is trained once, each cell runs in one of them."""
    out = tmp_path / "study"
    procs = [_study_process(study_file, out, glue_dir, "--threads", "1") for _ in range(2)]
    assert [p.wait(timeout=600) for p in procs] == [0, 0]
    records = read_results(out)
    assert sorted(r["cell"] for r in records) == sorted(c.name for c in cells(load_study(study_file)))  # each once
    assert all(r["status"] == "ok" for r in records)
    # (which process took which cell depends on timing; that a claimed cell is left alone is tested below)
    teacher_runs = (out / "teachers" / "MRPC" / "teacher" / "train_log.jsonl").read_text().count('"event": "start"')
    assert teacher_runs == 1


def test_a_cell_claimed_by_another_process_is_left_to_it(study_file, tmp_path, glue_dir):
    out = tmp_path / "study"
    names = [c.name for c in cells(load_study(study_file))]
    study = ["study", str(study_file), "--out", str(out), "--glue-dir", str(glue_dir)]
    # this test holds the first cell's lock, as another `xtc study` on the folder would while running it
    with claim(out / "cells" / f"{names[0]}.lock", wait=False) as claimed:
        assert claimed
        result = CliRunner().invoke(main, study)
        assert result.exit_code == 0, result.output
        assert sorted(r["cell"] for r in read_results(out)) == sorted(names[1:])
        assert not (out / "cells" / names[0]).exists()
    # released (that process died or finished without recording it): the next run takes it, and only it
    result = CliRunner().invoke(main, study)
    assert result.exit_code == 0, result.output
    assert [r["cell"] for r in read_results(out)][-1] == names[0]
    assert sorted(r["cell"] for r in read_results(out)) == sorted(names)


def test_a_failing_cell_is_recorded_and_the_study_goes_on(study_file, tmp_path, glue_dir):
    # layer 5 does not exist in the 2-layer bert-tiny: those cells fail, the others run.
    grid = STUDY[STUDY.index("grid:"):]
    study_file.write_text(STUDY.replace(grid, "grid:\n  layer_reduction.layers: [[1], [5]]\n"))
    result = CliRunner().invoke(main, ["study", str(study_file), "--out", str(tmp_path / "s"), "--glue-dir",
                                       str(glue_dir)])
    assert result.exit_code == 0, result.output
    records = read_results(tmp_path / "s")
    failed = [r for r in records if r["status"] == "failed"]
    assert len(records) == 2 and len(failed) == 1
    assert "not valid for a 2-layer teacher" in failed[0]["error"]
    assert "this run: 1 cells finished, 1 failed" in result.stdout
    report = CliRunner().invoke(main, ["report", str(tmp_path / "s")])
    assert report.exit_code == 0, report.output
    text = (tmp_path / "s" / "report.md").read_text()
    assert "## Failed cells" in text and text.count("not valid for a 2-layer teacher") == 1
    assert (tmp_path / "s" / "report.html").read_text().startswith("<!doctype html>")
    assert (tmp_path / "s" / "plots" / "pareto.png").stat().st_size > 1000


ONE_FACTOR = TINY_BASE + """shared: [layer_reduction]
seeds: [1]
center: {quantize.lr: 1.0e-4, quantize.warmup_ratio: 0.1}
grids:
  lr: {quantize.lr: [1.0e-4, 5.0e-4]}
  warmup: {quantize.warmup_ratio: [0.0, 0.1]}
"""


def test_one_factor_grids_share_their_center_cell(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(ONE_FACTOR.replace("seeds: [1]", "seeds: [1, 2]"))
    grid = cells(load_study(path))
    settings = [(c.settings["quantize.lr"], c.settings["quantize.warmup_ratio"], c.seed) for c in grid]
    # (1e-4, 0.1) is reached by both sub-grids: one cell per seed, not two
    assert sorted(settings) == sorted([(1e-4, 0.1, 1), (1e-4, 0.1, 2), (5e-4, 0.1, 1), (5e-4, 0.1, 2),
                                       (1e-4, 0.0, 1), (1e-4, 0.0, 2)])
    assert [seed for *_, seed in settings] == [1, 1, 1, 2, 2, 2]  # seeds outermost: half a study sees every setting


@pytest.mark.parametrize("change,pattern", [
    ("center: {quantize.lr: 1.0e-4, quantize.warmup_ratio: 0.1}", "leaves \\['quantize.warmup_ratio'\\] unset"),
    ("grids:", "give either grid .* or grids"),
    ("seeds: [1]", "reuse: MRPC: 'quantize' is not a shared stage"),
    ("  lr: {quantize.lr: [1.0e-4, 5.0e-4]}", "stage 'layer_reduction' is shared by all cells"),
    ("  lr: {quantize.lr: [1.0e-4, 5.0e-4]}", "seeds are given by `seeds`"),
])
def test_bad_one_factor_studies_fail_before_running(tmp_path, change, pattern):
    replacement = {
        "leaves": "center: {quantize.lr: 1.0e-4}",
        "give": "grid: {quantize.lr: [1]}\ngrids:",
        "stage": "  lr: {layer_reduction.lr: [1.0e-4, 5.0e-4]}",
        "seeds": "  lr: {quantize.lr: [1.0e-4], seed: [3]}",
        "reuse:": "seeds: [1]\nreuse: {MRPC: {quantize: runs/elsewhere}}",
    }[pattern.split()[0].strip("\\[")]
    path = tmp_path / "s.yaml"
    path.write_text(ONE_FACTOR.replace(change, replacement))
    with pytest.raises(XtcError, match=pattern):
        load_study(path)


def test_shared_stage_is_trained_once_and_reused_by_every_cell(tmp_path, glue_dir):
    from xtc.study.report import write_report

    path = tmp_path / "s.yaml"
    path.write_text(ONE_FACTOR)
    out = tmp_path / "study"
    result = CliRunner().invoke(main, ["study", str(path), "--out", str(out), "--glue-dir", str(glue_dir)])
    assert result.exit_code == 0, result.output
    records = read_results(out)
    assert len(records) == 3 and all(r["status"] == "ok" for r in records)
    assert (out / "teachers" / "MRPC" / "layer_reduction" / "metrics.json").is_file()
    for cell in (out / "cells").iterdir():
        if cell.is_dir():
            assert not (cell / "layer_reduction").exists() and (cell / "quantize" / "metrics.json").is_file()
    for record in records:  # a cell's wall time is its own stages', not the shared teacher's and student's too
        own = sum(json.loads((out / "cells" / record["cell"] / stage / "metrics.json").read_text())["wall_time_s"]
                  for stage in ("quantize_w2a8", "quantize"))
        assert record["wall_time_s"] == pytest.approx(own, abs=0.1)
        assert record["xtc_commit"] == source_commit()  # which code made it (None outside a git checkout)
    report = write_report(out).read_text()
    assert "by_quantize_lr.png" in report and "by_quantize_warmup_ratio.png" in report

    # a study that is given its teacher does not train one
    teacher = out / "teachers" / "MRPC" / "teacher"
    path.write_text(ONE_FACTOR.replace("shared: [layer_reduction]", f"shared: [layer_reduction]\nteachers: {{MRPC: {teacher}}}")
                    .replace("  warmup: {quantize.warmup_ratio: [0.0, 0.1]}\n", ""))
    result = CliRunner().invoke(main, ["study", str(path), "--out", str(tmp_path / "again"), "--glue-dir", str(glue_dir)])
    assert result.exit_code == 0, result.output
    assert not (tmp_path / "again" / "teachers" / "MRPC" / "teacher").exists()
    assert (tmp_path / "again" / "teachers" / "MRPC" / "layer_reduction" / "metrics.json").is_file()
    assert all(r["status"] == "ok" for r in read_results(tmp_path / "again"))

    # a study given its shared stage too (here: the first study's) trains neither
    reduced = out / "teachers" / "MRPC" / "layer_reduction"
    path.write_text(path.read_text().replace("teachers:", f"reuse: {{MRPC: {{layer_reduction: {reduced}}}}}\nteachers:"))
    result = CliRunner().invoke(main, ["study", str(path), "--out", str(tmp_path / "third"), "--glue-dir", str(glue_dir)])
    assert result.exit_code == 0, result.output
    assert not (tmp_path / "third" / "teachers" / "MRPC").exists()
    records = read_results(tmp_path / "third")
    assert records and all(r["status"] == "ok" for r in records)
    # the quantized cells start from that student: the same as the first study's cells at the same settings
    first = {json.dumps(r["settings"], sort_keys=True): r["dev"] for r in read_results(out)}
    assert all(first[json.dumps(r["settings"], sort_keys=True)] == r["dev"] for r in records)
