"""Fine-tune the MiniLM-L6 teachers with xtc's default budget and record their dev metrics.

Run from the repository root (in the background; it is resumable: a finished
run folder is reused by `xtc finetune`, a recorded task is not run again):

    nohup python benchmarks/teachers/run_teachers.py > runs/teachers.log 2>&1 &

Each task's command, dev metrics and training time (the training loop's wall time,
summed over resumes; loading and tokenizing take seconds more) go to results.json, the table to
RESULTS.md, and both are committed as each task finishes (``--no-commit`` to skip).
"""

import argparse
import json
import shlex
import subprocess
import sys
from pathlib import Path

from xtc.provenance import source_commit

HERE = Path(__file__).parent
RESULTS = HERE / "results.json"
TABLE = HERE / "RESULTS.md"
TASKS = ["RTE", "MRPC", "STS-B", "CoLA", "SST-2"]


def command(task: str) -> list[str]:
    return ["xtc", "finetune", "--model", "minilm-l6", "--task", task,
            "--glue-dir", "../shared/data/glue", "--out", f"runs/{task.lower()}-teacher"]


def table(results: dict) -> str:
    rows = ["| task | dev metrics | best step / total | training time | command |", "|---|---|---|---|---|"]
    for task in TASKS:
        if task not in results:
            continue
        r = results[task]
        dev = next(iter(r["dev"].values()))
        shown = ", ".join(f"{k} {v * 100:.2f}" for k, v in dev.items() if k != "score")
        rows.append(f"| {task} | {shown} | {r['best_step']} / {r['total_steps']} | "
                    f"{r['wall_time_s'] / 60:.1f} min | `{r['command']}` |")
    return "\n".join(rows) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", nargs="*", default=TASKS)
    parser.add_argument("--no-commit", action="store_true")
    args = parser.parse_args()
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    for task in args.tasks:
        if task in results:
            continue
        cmd = command(task)
        print("$", shlex.join(cmd), flush=True)
        subprocess.run(cmd, check=True)
        metrics = json.loads((Path(cmd[-1]) / "metrics.json").read_text())
        commit = source_commit()
        results[task] = {"command": shlex.join(cmd), "xtc_commit": commit, "dev": metrics["dev"],
                         "best_step": metrics["best_step"], "total_steps": metrics["total_steps"],
                         "train_examples": metrics["train_examples"], "wall_time_s": metrics["wall_time_s"]}
        RESULTS.write_text(json.dumps(results, indent=2) + "\n")
        TABLE.write_text("# MiniLM-L6 teachers: GLUE dev, default budget, this machine (2 CPU cores)\n\n"
                         + table(results))
        if not args.no_commit:
            subprocess.run(["git", "add", str(RESULTS), str(TABLE)], check=True)
            subprocess.run(["git", "commit", "-q", "-m", f"teachers: MiniLM-L6 on {task}", "--",
                            str(RESULTS), str(TABLE)], check=False)
    print(table(results), file=sys.stderr)


if __name__ == "__main__":
    main()
