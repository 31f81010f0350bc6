"""Rerun a task's recorded GLUE commands into a fresh folder and compare with the recorded cells.

Run from the repository root, in the background (the commands resume like the table's):

    nohup python benchmarks/glue/reproduce.py --task MRPC > runs/reproduce-mrpc.log 2>&1 &

Each training command of results.json (the teacher's `xtc finetune`, the task's `xtc run`, the plain
fine-tuning row's `xtc finetune`) is run
again exactly as recorded, with the thread count of its cells, with only its --out moved under
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

``--stages`` reruns only the commands that made the given cells (`xtc run` skips the stages already in its
folder) and replaces their rows in the task's comparison, keeping the others'. Each rerun uses the thread count its
cells were trained with (a cell's ``threads`` in results.json, 1 where absent: training, export and evaluation are
not bit for bit the same across thread counts); cells of different thread counts are rerun with one ``--stages``
each.
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
        run_glue.export_once(Path(new), Path(new_packed),
                             replace_paths(packed["export_command"], {old: new, old_packed: new_packed}))
        row["packed_recorded"] = packed["score"]
        row["packed_score"] = eval_score(replace_paths(packed["eval_command"], {old_packed: new_packed}))
        row["packed_weights"] = same_tensors(Path(old_packed) / "packed.safetensors",
                                             Path(new_packed) / "packed.safetensors")
    return row


def markdown(task: str, entry: dict) -> str:
    lines = [f"## {task}", "", "Rerun by:", ""]
    lines += [f"- `{r['command']}` (xtc commit {r['commit']}): {', '.join(ROWS[s] for s in r['stages'])}"
              + (f". {r['note']}" if r.get("note") else "") for r in entry["reruns"]]
    lines += ["", "which ran:", ""] + [f"    {c}" for c in entry["commands"]]
    lines += ["", "| row | recorded (commit) | rerun | weights | packed: recorded | rerun | packed tensors |",
              "|---|---|---|---|---|---|---|"]
    for r in entry["cells"]:
        packed = (f"{r['packed_recorded']:.2f} | {r['packed_score']:.2f} | "
                  f"{r['packed_weights']}") if "packed_score" in r else "- | - | -"
        lines.append(f"| {ROWS[r['stage']]} | {r['recorded']:.2f} ({r['recorded_commit']}) | {r['score']:.2f} | "
                     f"{r['weights']} | {packed} |")
    missing = [ROWS[s] for s in ROWS if s not in {r["stage"] for r in entry["cells"]}]
    return "\n".join(lines) + "\n" + (f"\nNot rerun yet: {', '.join(missing)}.\n" if missing else "")


def merged(previous: dict | None, entry: dict) -> dict:
    """The task's comparison with ``entry``'s cells replacing the previous ones of the same stages, in table order."""
    if previous is None:
        return entry
    cells = {c["stage"]: c for c in previous["cells"]} | {c["stage"]: c for c in entry["cells"]}
    return {"reruns": previous["reruns"] + entry["reruns"],
            "commands": list(dict.fromkeys(previous["commands"] + entry["commands"])),
            "cells": [cells[s] for s in ROWS if s in cells]}


def threads_of(cells: dict, stages: list[str]) -> int:
    """The one thread count the stages were trained with; an error if they differ."""
    counts = {cells[s].get("threads", 1) for s in stages}
    if len(counts) > 1:
        by = ", ".join(f"{s}: {cells[s].get('threads', 1)}" for s in stages)
        sys.exit(f"these cells were trained with different thread counts ({by}): rerun them with one --stages each")
    return counts.pop()


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


def rerun(command: str) -> None:
    words = with_out_moved(command)
    if words[1] == "finetune" and (Path(moved(out_of(command))) / "metrics.json").exists():
        print(f"finished earlier: {shlex.join(words)}")  # (`xtc run` skips its finished stages itself)
        return
    run_glue.sh(words)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", required=True, choices=run_glue.TASKS)
    parser.add_argument("--alongside", action="store_true",
                        help="run beside the table's run of the task (see the module's docstring)")
    parser.add_argument("--precision", choices=run_glue.PRECISIONS, default="auto",
                        help="with --alongside: the table runner's --precision")
    parser.add_argument("--stages", nargs="+", choices=list(ROWS),
                        help="only these recorded cells: rerun what made them, replace their rows (not with --alongside)")
    args = parser.parse_args()
    if args.stages and args.alongside:
        parser.error("--stages reruns recorded cells: not with --alongside")
    if args.alongside:  # the teacher's, the run's, the plain row's, as run_glue.py builds them (one thread each)
        os.environ["OMP_NUM_THREADS"] = "1"
        run_glue.choose_precision(args.precision)
        commands = [shlex.join(run_glue.teacher_command(args.task))]
        rerun(commands[0])
        recorded = wait_for(args.task, ["teacher"])["teacher"]["command"]  # the students distil from its folder
        if recorded != commands[0]:
            sys.exit(f"the table's teacher was made by another command than the one rerun:\n{recorded}\n{commands[0]}")
        commands += [shlex.join(run_glue.run_command(args.task)), shlex.join(run_glue.plain_command(args.task))]
        for command in commands[1:]:
            rerun(command)
        cells = wait_for(args.task, list(ROWS))
        recorded = list(dict.fromkeys(c["command"] for c in cells.values()))
        if sorted(recorded) != sorted(commands):
            sys.exit(f"the table recorded other commands than those rerun:\n{recorded}\n{commands}")
        stages = list(ROWS)
    else:
        cells = load_results().get(args.task, {})
        stages = args.stages or [s for s in ROWS if s in cells]
        if missing := [s for s in stages if s not in cells]:
            sys.exit(f"{args.task} has no recorded {', '.join(missing)}: nothing to rerun")
        os.environ["OMP_NUM_THREADS"] = str(threads_of(cells, stages))  # the reruns, exports and evaluations
        commands = list(dict.fromkeys(cells[s]["command"] for s in stages))
        for command in commands:
            rerun(command)
    threads = os.environ["OMP_NUM_THREADS"]
    entry = {"reruns": [{"command": shlex.join(["python", "benchmarks/glue/reproduce.py", *sys.argv[1:]]),
                         "commit": source_commit(), "stages": stages}],
             "commands": [f"OMP_NUM_THREADS={threads} {shlex.join(with_out_moved(c))}" for c in commands],
             "cells": [check_cell(stage, cells[stage]) for stage in stages]}
    done = json.loads(JSON_OUT.read_text()) if JSON_OUT.exists() else {}
    done[args.task] = merged(done.get(args.task) if args.stages else None, entry)
    JSON_OUT.write_text(json.dumps(done, indent=2) + "\n")
    MD_OUT.write_text("# GLUE cells rerun from their recorded commands\n\n"
                      "Each task's training commands from results.json, run again into runs/repro/ "
                      "(`benchmarks/glue/reproduce.py`), then evaluated and exported by the recorded commands, "
                      "with the thread count the cells were trained with. "
                      "\"identical\": every tensor of the file is bit for bit the recorded run's.\n\n"
                      + "\n".join(markdown(t, e) for t, e in done.items()))
    print(MD_OUT.read_text())


if __name__ == "__main__":
    main()
