"""Choose each task's MiniLM-L6 teacher by dev score over a grid of learning rate x epochs.

Run from the repository root, in the background; it is resumable (a finished run folder is
reused by `xtc finetune`, an interrupted one resumes from its checkpoint, a recorded cell is
not run again):

    nohup python benchmarks/teachers/run_teachers.py --jobs 2 > runs/teachers.log 2>&1 &

Every cell is one `xtc finetune` (seed 42, length-grouped batches, bf16 autocast; the best dev
checkpoint of the run is kept, so a 10-epoch cell may pick an earlier epoch). With ``--jobs 2``
two cells train side by side, one thread each. Each cell's command, dev metrics and training
time go to results.json, the grid and the chosen teacher per task (the best dev score; ties go
to the cheaper cell) to RESULTS.md; both are committed as each cell finishes (``--no-commit``
to skip). The chosen teacher's folder is ``runs/teachers/<task>/best`` (a symlink).
"""

import argparse
import json
import os
import shlex
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from xtc.provenance import source_commit

HERE = Path(__file__).parent
RESULTS = HERE / "results.json"
TABLE = HERE / "RESULTS.md"
RUNS = Path("runs") / "teachers"
LRS = ["2e-5", "5e-5", "1e-4"]
EPOCHS = {"RTE": [3, 10], "MRPC": [3, 10], "STS-B": [3, 10], "CoLA": [3, 10], "SST-2": [1, 3]}
TASKS = list(EPOCHS)
LOCK = threading.Lock()


def cell_name(lr: str, epochs: int) -> str:
    return f"lr{lr}-ep{epochs}"


def command(task: str, lr: str, epochs: int) -> list[str]:
    extra = ["--eval-steps", "500"] if task == "SST-2" else []
    return ["xtc", "finetune", "--model", "minilm-l6", "--task", task, "--glue-dir", "../shared/data/glue",
            "--lr", lr, "--epochs", str(epochs), "--group-by-length", "--bf16", *extra,
            "--out", str(RUNS / task / cell_name(lr, epochs))]


def best_cell(cells: dict) -> str:
    """The highest dev score; ties go to fewer epochs, then the lower lr."""
    return max(cells, key=lambda c: (cells[c]["score"], -cells[c]["epochs"], -float(cells[c]["lr"])))


def table(results: dict) -> str:
    lines = ["# MiniLM-L6 teachers: a grid of learning rate x epochs per task, GLUE dev, this machine (2 CPU cores)",
             "", "Made by `python benchmarks/teachers/run_teachers.py --jobs 2` (each cell's command is in "
             "results.json): `xtc finetune`, seed 42, batch 32, length-grouped batches, bf16 autocast, the best "
             "dev checkpoint of each run kept. Two cells train side by side with one thread each, so times are "
             "per thread. The chosen teacher of a task (**bold**) is its best dev score; every retention figure "
             "of the GLUE table is against it.", "",
             "| task | " + " | ".join(f"lr {lr}" for lr in LRS) + " | chosen |", "|---" * (len(LRS) + 2) + "|"]
    for task in TASKS:
        cells = results.get(task, {})
        if not cells:
            continue
        best = best_cell(cells)
        for epochs in EPOCHS[task]:
            row = []
            for lr in LRS:
                c = cells.get(cell_name(lr, epochs))
                if c is None:
                    row.append("-")
                    continue
                text = (f"{c['score'] * 100:.2f} (ep {c['best_epoch']:g} of {epochs}, "
                        f"{c['wall_time_s'] / 60:.0f} min)")
                row.append(f"**{text}**" if cell_name(lr, epochs) == best else text)
            lines.append(f"| {task}, {epochs} epochs | " + " | ".join(row) + f" | {best} |")
    lines += ["", "Scores: the task's GLUE score x100 (CoLA MCC, MRPC mean of F1 and accuracy, STS-B mean of "
              "Pearson and Spearman, accuracy otherwise); in brackets, the epoch of the kept checkpoint and "
              "the training time."]
    return "\n".join(lines) + "\n"


def record(task: str, lr: str, epochs: int, cmd: list[str], results: dict, commit: bool) -> None:
    metrics = json.loads((Path(cmd[-1]) / "metrics.json").read_text())
    dev = next(iter(metrics["dev"].values()))
    steps_per_epoch = metrics["total_steps"] / metrics["epochs"]
    cell = {"command": shlex.join(cmd), "xtc_commit": source_commit(), "lr": lr, "epochs": epochs,
            "score": dev["score"], "dev": metrics["dev"], "best_step": metrics["best_step"],
            "best_epoch": round(metrics["best_step"] / steps_per_epoch, 2), "total_steps": metrics["total_steps"],
            "train_examples": metrics["train_examples"], "wall_time_s": metrics["wall_time_s"]}
    with LOCK:
        results.setdefault(task, {})[cell_name(lr, epochs)] = cell
        RESULTS.write_text(json.dumps(results, indent=2) + "\n")
        TABLE.write_text(table(results))
        best = RUNS / task / "best"
        best.unlink(missing_ok=True)
        best.symlink_to(best_cell(results[task]))
        if commit:
            subprocess.run(["git", "add", str(RESULTS), str(TABLE)], check=True)
            subprocess.run(["git", "commit", "-q", "-m", f"teachers: {task} {cell_name(lr, epochs)}", "--",
                            str(RESULTS), str(TABLE)], check=False)


def run_cell(task: str, lr: str, epochs: int, results: dict, commit: bool) -> None:
    cmd = command(task, lr, epochs)
    print("$", shlex.join(cmd), flush=True)
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    log = Path(cmd[-1]).with_suffix(".log")
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("a") as f:
        subprocess.run(cmd, check=True, env=env, stdout=f, stderr=subprocess.STDOUT)
    record(task, lr, epochs, cmd, results, commit)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", nargs="*", default=TASKS)
    parser.add_argument("--jobs", type=int, default=1, help="cells trained side by side")
    parser.add_argument("--no-commit", action="store_true")
    args = parser.parse_args()
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    todo = [(t, lr, e) for t in args.tasks for e in EPOCHS[t] for lr in LRS
            if cell_name(lr, e) not in results.get(t, {})]
    with ThreadPoolExecutor(args.jobs) as pool:
        jobs = [pool.submit(run_cell, *cell, results, not args.no_commit) for cell in todo]
    failed = [j.exception() for j in jobs if j.exception()]
    print(table(results), file=sys.stderr)
    if failed:
        sys.exit(f"{len(failed)} cells failed, first: {failed[0]}")


if __name__ == "__main__":
    main()
