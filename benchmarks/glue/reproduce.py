"""Rerun a task's recorded GLUE commands into a fresh folder and compare with the recorded cells.

Run from the repository root, in the background (the commands resume like the table's):

    nohup python benchmarks/glue/reproduce.py --task MRPC > runs/reproduce-mrpc.log 2>&1 &

Each training command of results.json (the teacher's `xtc finetune`, the task's `xtc run`, the plain
fine-tuning row's `xtc finetune`) is run
again exactly as recorded, one thread as in the table, with only its --out moved under
runs/repro/ (the student stages still distil from the recorded teacher folder, as recorded). Then
per cell: the weight file's tensors against the original folder's, bit for bit (when it is on this
machine), the dev score by the recorded `xtc eval` command on the new folder against the recorded
score, and for quantized rows the packed file exported by the recorded `xtc export` command (the
default export), compared the same way. (Tensors, not file bytes: safetensors writes a file's metadata keys in a
random order, and the table's packed files also name their source folder, which exports no longer
do.) The comparison is written to benchmarks/glue/REPRODUCED.md (one section per task) and
reproduced.json.

With ``--alongside`` it runs beside the table's own run of the task (one core each, the same CPU: bf16 and
float32 kernels differ between CPU kinds, so a rerun on another kind of CPU is not expected to be bit for bit):
the commands are the runner's (run_glue.py builds them; give the runner's --precision if it had one), the
students start once the table has recorded its teacher (made by the same command, else it stops there), and
the comparison waits for the task's every cell and first checks that the recorded commands are the ones that
were rerun. Start the table's runner first: the waits end with an error when no runner holds the task.
"""

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

import run_glue
from run_glue import QUANTIZED, ROWS, load_results, main_metric
from safetensors.numpy import load_file

from xtc.provenance import source_commit
from xtc.rundir import claim

HERE = Path(__file__).parent
JSON_OUT, MD_OUT = HERE / "reproduced.json", HERE / "REPRODUCED.md"
REPRO = Path("runs") / "repro"


def moved(path: str) -> str:
    """runs/glue2/mrpc -> runs/repro/glue2/mrpc: the rerun's folder for a recorded one."""
    return str(REPRO / Path(path).relative_to("runs"))


def out_of(command: str) -> str:
    """The folder a recorded command writes (its --out)."""
    words = shlex.split(command)
    return words[words.index("--out") + 1]


def with_out_moved(command: str) -> list[str]:
    return replace_paths(command, {out_of(command): moved(out_of(command))})


def replace_paths(command: str, paths: dict[str, str]) -> list[str]:
    return [paths.get(w, w) for w in shlex.split(command)]


def same_tensors(recorded: Path, rerun: Path) -> str:
    if not recorded.exists():
        return "not on this machine"
    a, b = load_file(recorded), load_file(rerun)
    same = sorted(a) == sorted(b) and all(a[k].dtype == b[k].dtype and a[k].tobytes() == b[k].tobytes() for k in a)
    return "identical" if same else "differ"


def stage_folder(command: str, stage: str) -> str:
    """A finetune command's folder is its cell's (the teacher, the plain fine-tuning row); a run's has a folder per stage."""
    return out_of(command) if shlex.split(command)[1] == "finetune" else f"{out_of(command)}/{stage}"


def eval_score(command: list[str]) -> float:
    dev = json.loads(run_glue.sh(command, stdout=subprocess.PIPE).stdout)
    return main_metric(dev)[1]


def check_cell(stage: str, cell: dict) -> dict:
    old = stage_folder(cell["command"], stage)
    new = moved(old)
    row = {"stage": stage, "recorded": cell["score"], "recorded_commit": cell.get("xtc_commit"),
           "weights": same_tensors(Path(old) / "model.safetensors", Path(new) / "model.safetensors")}
    row["score"] = eval_score(replace_paths(cell["eval_command"], {old: new}))
    if stage in QUANTIZED:
        packed = cell["packed"]
        old_packed, new_packed = f"{old}.packed", moved(f"{old}.packed")
        if not (Path(new_packed) / "packed.safetensors").exists():
            run_glue.sh(replace_paths(packed["export_command"], {old: new, old_packed: new_packed}),
                        stdout=subprocess.DEVNULL)
        row["packed_recorded"] = packed["score"]
        row["packed_score"] = eval_score(replace_paths(packed["eval_command"], {old_packed: new_packed}))
        row["packed_weights"] = same_tensors(Path(old_packed) / "packed.safetensors",
                                             Path(new_packed) / "packed.safetensors")
    return row


def markdown(task: str, entry: dict) -> str:
    ran = f"Rerun by xtc commit {entry['commit']}: `python benchmarks/glue/reproduce.py --task {task}`, which ran:"
    lines = [f"## {task}", "", ran, ""]
    lines += [f"    OMP_NUM_THREADS=1 {c}" for c in entry["commands"]]
    lines += ["", "| row | recorded (commit) | rerun | weights | packed: recorded | rerun | packed tensors |",
              "|---|---|---|---|---|---|---|"]
    for r in entry["cells"]:
        packed = (f"{r['packed_recorded']:.2f} | {r['packed_score']:.2f} | "
                  f"{r['packed_weights']}") if "packed_score" in r else "- | - | -"
        lines.append(f"| {ROWS[r['stage']]} | {r['recorded']:.2f} ({r['recorded_commit']}) | {r['score']:.2f} | "
                     f"{r['weights']} | {packed} |")
    return "\n".join(lines) + "\n"


def wait_for(task: str, stages: list[str]) -> dict:
    """The task's recorded cells, once the table has recorded all of ``stages``; an error if the table's runner
    is not training the task (its lock is free) and they are not all there."""
    while True:
        cells = load_results().get(task, {})
        if all(s in cells for s in stages):
            return cells
        with claim(run_glue.run_dir(task).with_suffix(".lock"), wait=False) as free:
            cells = load_results().get(task, {})  # (the runner may have recorded the last one and let go)
            missing = [s for s in stages if s not in cells]
            if free and missing:
                sys.exit(f"{task}: no table runner is training it, and it has not recorded {', '.join(missing)}: "
                         "start run_glue.py for it first")
            if not missing:
                return cells
        time.sleep(60)


def rerun(command: str, env: dict) -> None:
    words = with_out_moved(command)
    if words[1] == "finetune" and (Path(moved(out_of(command))) / "metrics.json").exists():
        print(f"finished earlier: {shlex.join(words)}")  # (`xtc run` skips its finished stages itself)
        return
    run_glue.sh(words, env=env)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", required=True, choices=run_glue.TASKS)
    parser.add_argument("--alongside", action="store_true",
                        help="run beside the table's run of the task (see the module's docstring)")
    parser.add_argument("--precision", choices=run_glue.PRECISIONS, default="auto",
                        help="with --alongside: the table runner's --precision")
    args = parser.parse_args()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    if args.alongside:  # the teacher's, the run's, the plain row's, as run_glue.py builds them
        run_glue.choose_precision(args.precision)
        commands = [shlex.join(run_glue.teacher_command(args.task))]
        rerun(commands[0], env)
        recorded = wait_for(args.task, ["teacher"])["teacher"]["command"]  # the students distil from its folder
        if recorded != commands[0]:
            sys.exit(f"the table's teacher was made by another command than the one rerun:\n{recorded}\n{commands[0]}")
        commands += [shlex.join(run_glue.run_command(args.task)), shlex.join(run_glue.plain_command(args.task))]
        for command in commands[1:]:
            rerun(command, env)
    else:
        commands = list(dict.fromkeys(c["command"] for c in load_results()[args.task].values()))
        for command in commands:
            rerun(command, env)
    cells = wait_for(args.task, list(ROWS)) if args.alongside else load_results()[args.task]
    recorded = list(dict.fromkeys(c["command"] for c in cells.values()))
    if sorted(recorded) != sorted(commands):
        sys.exit(f"the table recorded other commands than those rerun:\n{recorded}\n{commands}")
    entry = {"commit": source_commit(), "commands": [shlex.join(with_out_moved(c)) for c in commands],
             "cells": [check_cell(stage, cells[stage]) for stage in ROWS if stage in cells]}
    done = json.loads(JSON_OUT.read_text()) if JSON_OUT.exists() else {}
    done[args.task] = entry
    JSON_OUT.write_text(json.dumps(done, indent=2) + "\n")
    MD_OUT.write_text("# GLUE cells rerun from their recorded commands\n\n"
                      "Each task's training commands from results.json, run again into runs/repro/ "
                      "(`benchmarks/glue/reproduce.py`), then evaluated and exported by the recorded commands. "
                      "\"identical\": every tensor of the file is bit for bit the recorded run's.\n\n"
                      + "\n".join(markdown(t, e) for t, e in done.items()))
    print(MD_OUT.read_text())


if __name__ == "__main__":
    main()
