"""Run a study's cells as `xtc run` processes: resumable, parallel, failures recorded.

``OUT/results.jsonl`` gets one JSON line per cell as it ends (settings, final dev
metrics, packed size, wall time; or the error of a failed cell). Running the
study again skips the cells recorded as ok, retries failed ones, and resumes an
interrupted cell from its checkpoints (each cell is an `xtc run` folder in
``OUT/cells/``). The teacher of each task is fine-tuned once, in ``OUT/teachers/``.

Several `xtc study` processes may share one folder (e.g. one more started when a core
frees up): each cell, and each task's shared stages, is claimed with a lock file
(``flock``, released by the system if a process dies), so no two processes run the same one.
"""

import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

import yaml

from xtc.data.tasks import get_task
from xtc.errors import XtcError
from xtc.provenance import source_commit
from xtc.recipe_io import load_recipe
from xtc.rundir import claim
from xtc.study.config import Cell, StudyConfig, cells, load_study
from xtc.progress import bar, note

RESULTS = "results.jsonl"
STUDY_FILE = "study.json"


def read_results(out: Path) -> list[dict]:
    path = Path(out) / RESULTS
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _finished(out: Path) -> set[str]:
    return {r["cell"] for r in read_results(out) if r["status"] == "ok"}


def _xtc_run(args: list[str], log: Path, threads: int) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "HF_HUB_OFFLINE": os.environ.get("HF_HUB_OFFLINE", "1")}
    with log.open("a") as f:
        return subprocess.run([sys.executable, "-m", "xtc", "run", *args], env=env, stdout=f, stderr=subprocess.STDOUT,
                              check=False)


def _common_args(study: StudyConfig, out: Path, glue_dir: Path | None) -> list[str]:
    store = study.teacher_cache_dir or out / "teacher-outputs"
    args = ["--model", study.model, "--max-seq-length", str(study.max_seq_length), "--teacher-cache-dir", str(store)]
    if glue_dir is not None:
        args += ["--glue-dir", str(glue_dir)]
    for flag in ("max_train_samples", "max_eval_samples"):
        if getattr(study, flag) is not None:
            args += [f"--{flag.replace('_', '-')}", str(getattr(study, flag))]
    return args


def _last_error(log: Path) -> str:
    lines = [line for line in log.read_text(errors="replace").splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("xtc: error:") or "Error" in line]
    return (errors or lines or ["no output"])[-1][-500:]


def _shared_stages(study: StudyConfig, task: str, out: Path, glue_dir: Path | None, threads: int) -> dict[str, Path]:
    """Train (once) the base recipe's teacher and ``shared`` stages for ``task``: {stage name: folder}."""
    base = load_recipe(study.recipe, study.set)
    stages = [base.stages[0], *(s for s in base.stages[1:] if s.name in study.shared)]
    folder = out / "teachers" / task
    names = [s.name for s in stages]
    given = study.teachers.get(task)
    found = {name: folder / name for name in names}
    if given is not None:
        found[names[0]] = given
    for name, stage_dir in study.reuse.get(task, {}).items():
        if not (stage_dir / "metrics.json").is_file():
            raise XtcError(f"reuse: {task} {name}: {stage_dir} is not a finished stage folder (no metrics.json)")
        found[name] = stage_dir
    with claim(out / "teachers" / f"{task}.lock", wait=True):  # another process may be training them
        if not all((found[name] / "metrics.json").is_file() for name in names):
            _train_shared(study, task, stages, folder, given, out, glue_dir, threads)
    return found


def _train_shared(study: StudyConfig, task: str, stages: list, folder: Path, given: Path | None, out: Path,
                  glue_dir: Path | None, threads: int) -> None:
    recipe_file = out / "teachers" / f"{task}.yaml"
    recipe_file.parent.mkdir(parents=True, exist_ok=True)
    recipe_file.write_text(yaml.safe_dump({"description": f"stages of {task} shared by the cells",
                                           "stages": [s.model_dump(mode="json", exclude_none=True) for s in stages]}))
    log = out / "teachers" / f"{task}.log"
    teacher = ["--teacher", str(given)] if given is not None else []
    proc = _xtc_run(["--recipe", str(recipe_file), "--task", task, "--out", str(folder), "--seed", str(study.seed),
                     *teacher, *_common_args(study, out, glue_dir)], log, threads)
    if proc.returncode != 0:
        raise XtcError(f"the shared stages of {task} failed: {_last_error(log)} (log: {log})")


def _claim_and_run(cell: Cell, study: StudyConfig, shared: dict[str, Path], out: Path, glue_dir: Path | None,
                   threads: int) -> dict | None:
    """Run the cell and append its record to results.jsonl (under its lock, so that the next process to
    claim it sees it finished); None when another process runs it or has finished it."""
    with claim(out / "cells" / f"{cell.name}.lock", wait=False) as claimed:
        if not claimed or cell.name in _finished(out):
            return None
        record = _run_cell(cell, study, shared, out, glue_dir, threads)
        with (out / RESULTS).open("a") as results:
            results.write(json.dumps(record) + "\n")  # one line, one write: appends of processes do not interleave
        return record


def _run_cell(cell: Cell, study: StudyConfig, shared: dict[str, Path], out: Path, glue_dir: Path | None,
              threads: int) -> dict:
    folder = out / "cells" / cell.name
    log = out / "cells" / f"{cell.name}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    teacher, *reused = shared.items()
    args = ["--recipe", cell.recipe, "--task", cell.task, "--teacher", str(teacher[1]), "--out", str(folder),
            "--seed", str(cell.seed), *_common_args(study, out, glue_dir)]
    for name, stage_dir in reused:
        args += ["--reuse", f"{name}={stage_dir}"]
    for override in cell.overrides:
        args += ["--set", override]
    proc = _xtc_run(args, log, threads)
    record = {"cell": cell.name, "task": cell.task, "settings": cell.settings, "recipe": cell.recipe,
              "seed": cell.seed, "elapsed_s": round(time.perf_counter() - started, 1), "runner_pid": os.getpid(),
              "xtc_commit": source_commit()}  # the code the cell ran (a study may span several commits)
    if proc.returncode != 0:
        return {**record, "status": "failed", "error": _last_error(log), "log": str(log)}
    summary = json.loads((folder / "summary.json").read_text())
    final = summary["stages"][-1]
    split = get_task(cell.task).dev_splits[0]
    return {**record, "status": "ok", "dev": final["dev"][split], "stage": final["stage"], "bits": final["bits"],
            "layers": final["layers"], "size_mb": round(final["size_mb"], 4),
            # the cell's own training: stages given to it (the teacher, shared stages) are counted once, elsewhere
            "wall_time_s": round(sum(s["wall_time_s"] or 0 for s in summary["stages"] if not s.get("given")), 1)}


def run_study(path: str | Path, out: str | Path, jobs: int = 1, glue_dir: str | Path | None = None,
              threads: int | None = None) -> list[dict]:
    """Run every cell not yet recorded as ok (nor running in another process); returns the records of this
    invocation. ``threads`` per cell defaults to the cores shared among the ``jobs``."""
    study = load_study(path)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    settings = study.model_dump(mode="json")
    if (out / STUDY_FILE).is_file():
        if json.loads((out / STUDY_FILE).read_text()) != settings:
            raise XtcError(f"{out} holds a different study; choose another --out")
    else:
        (out / STUDY_FILE).write_text(json.dumps(settings, indent=2) + "\n")
    glue = Path(glue_dir) if glue_dir else None
    done = _finished(out)
    todo = [c for c in cells(study) if c.name not in done]
    threads = threads or max(1, (os.cpu_count() or 1) // jobs)
    progress = bar(total=len(done) + len(todo), initial=len(done), desc="study", unit="cell")
    shared = {task: _shared_stages(study, task, out, glue, threads * jobs) for task in dict.fromkeys(c.task for c in todo)}
    records = []
    with ThreadPoolExecutor(jobs) as pool:
        futures = [pool.submit(_claim_and_run, c, study, shared[c.task], out, glue, threads) for c in todo]
        for future in as_completed(futures):
            record = future.result()
            progress.update(1)
            if record is None:  # another process's cell
                continue
            records.append(record)
            if record["status"] != "ok":
                note(f"cell {record['cell']} failed: {record['error']}")
            elif progress.disable:
                note(f"study: {progress.n}/{progress.total} cells; finished {record['cell']}")
    progress.close()
    return records
