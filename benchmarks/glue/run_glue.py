"""The GLUE results table: every XTC row on every task with training data here, measured on this machine.

Run from the repository root, in the background (resumable: a finished teacher or stage is
reused, an interrupted one resumes from its checkpoint, a recorded cell is not redone):

    nohup python benchmarks/glue/run_glue.py --jobs 1 > runs/glue2.log 2>&1 &

Per task: the MiniLM-L6 teacher (`xtc finetune` of the teacher grid's best cell,
benchmarks/teachers/results.json), then one `xtc run` of
benchmarks/glue/xtc-glue.yaml with that teacher, whose stages are the table's rows, then the
plain fine-tuning of paraphrase-MiniLM-L3 at the 3L student's budget. As each stage finishes,
its cell is recorded: dev metrics, training wall time, the size of its file (quantized rows:
the default packed export, evaluated packed; its difference from the stage folder is shown, and
warned about beyond 0.1 points), with the commands that made it. results.json, RESULTS.md and
accuracy_vs_size.png are rewritten and committed per cell (``--no-commit`` to skip). ``--report`` only rewrites the
table and plot from results.json. The previous table (6 epochs of QAT at lr 5e-5, 3-epoch
teachers) is kept in benchmarks/glue/v1/.

With ``--jobs 2`` two tasks train side by side, one thread each (OMP_NUM_THREADS=1); separate
runner processes may also run at once: each task is claimed by one runner (a lock file in
runs/glue2/), and cells are merged into results.json under a lock.

Precision: bf16 autocast on a GPU or a CPU with bf16 instructions (AVX-512 BF16, AMX), else float32
(``--precision`` to choose); every command that trains says which (``--bf16`` / ``bf16=true``), and
a task's cells all share its teacher's precision. On a GPU machine, ``--jobs 6`` trains the six tasks
side by side on the one GPU (about 50 minutes on an H200, estimated from one-epoch stage times in
benchmarks/gpu/RESULTS.md).
"""

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import torch

from xtc.pipeline import needs_trim
from xtc.provenance import source_commit
from xtc.recipe import StageConfig
from xtc.recipe_io import load_recipe
from xtc.rundir import claim, write_json
from xtc.train import cpu_has_bf16

HERE = Path(__file__).parent
RECIPE = "benchmarks/glue/xtc-glue.yaml"  # relative to the repository root, where the commands run
RESULTS, TABLE, PLOT = HERE / "results.json", HERE / "RESULTS.md", HERE / "accuracy_vs_size.png"
README = HERE.parents[1] / "README.md"  # the table is copied between its glue:start / glue:end markers
NOTES = HERE / "notes.json"  # {task: {stage: note}}: written by hand, e.g. when a cell's timing was disturbed
GLUE = "../shared/data/glue"
TEACHER_OUTPUTS = "runs/teacher-outputs"  # the teachers' outputs on the training data, shared with benchmarks/study
TASKS = ["RTE", "MRPC", "STS-B", "CoLA", "WNLI", "SST-2"]  # the table's column order
AVERAGED = ["CoLA", "SST-2", "MRPC", "STS-B", "RTE"]  # WNLI is reported, not averaged
ROWS = {  # stage -> row label, in table order
    "teacher": "MiniLM-L6 teacher (6L FP32)",
    "l3_fp32": "3L FP32 (layer reduction + KD)",
    "l6_w2a8": "6L W2A8",
    "l6_w1a8": "6L W1A8",
    "l3_w2a8": "3L W2A8",
    "l3_w1a8": "3L W1A8",
    "pretrained_l3": "paraphrase-MiniLM-L3 (pre-training distilled) + same KD",
    "pretrained_l3_plain": "paraphrase-MiniLM-L3, plain fine-tuning (same budget)",
}
PLAIN = "pretrained_l3_plain"  # not a stage of the recipe: its own `xtc finetune`
QUANTIZED = {"l6_w2a8", "l6_w1a8", "l3_w2a8", "l3_w1a8"}
STAGES = [stage for stage in ROWS if stage != PLAIN]  # the recipe's, in table order
GLUE_RECIPE = load_recipe(HERE / "xtc-glue.yaml")  # RECIPE, read here for its stages' settings
# SST-2 has 67k training rows (18-27x the others): one epoch per stage, evaluated every 500 steps.
CUT = {"SST-2": {"epochs": "1", "eval_steps": "500"}}
TEACHER_GRID = HERE.parent / "teachers" / "results.json"  # {task: {cell: {lr, epochs, score, ...}}}
DEFAULT_TEACHER = {"lr": "5e-5", "epochs": 10}  # tasks outside the grid (WNLI, SST-2): the presets' teacher
PRECISION = "bf16" if (torch.cuda.is_available() and torch.cuda.is_bf16_supported()) or cpu_has_bf16() else "fp32"
PRECISIONS = ["auto", "bf16", "fp32"]  # --precision's choices; choose_precision() sets PRECISION before any command
MAX_PACKED_GAP = 0.1  # points: the bound between a packed file and its stage folder (the runner warns beyond)


@contextmanager
def results_lock():
    with THREAD_LOCK, claim(HERE / ".results.lock", wait=True):
        yield


THREAD_LOCK = threading.Lock()


def load_results() -> dict:
    return json.loads(RESULTS.read_text()) if RESULTS.exists() else {}


def teacher_settings(task: str) -> tuple[str, str]:
    """(lr, epochs): the teacher grid's best cell for the task, or the presets' teacher outside the grid;
    SST-2's epochs cut."""
    grid = json.loads(TEACHER_GRID.read_text()).get(task, {})
    cell = max(grid.values(), key=lambda c: c["score"]) if grid else DEFAULT_TEACHER
    return str(cell["lr"]), CUT.get(task, {}).get("epochs", str(cell["epochs"]))


def teacher_dir(task: str) -> Path:
    """The recorded teacher's folder once there is one (the grid may change after), else the grid's choice."""
    recorded = load_results().get(task, {}).get("teacher")
    if recorded:
        return Path(out_of(shlex.split(recorded["command"])))
    lr, epochs = teacher_settings(task)
    return Path("runs") / f"teachers-{PRECISION}" / task / f"lr{lr}-ep{epochs}"


def choose_precision(choice: str) -> None:
    global PRECISION
    PRECISION = PRECISION if choice == "auto" else choice


def command_precision(command: str) -> str:
    return "bf16" if "--bf16" in shlex.split(command) else "fp32"


def task_precision(task: str) -> str:
    """The recorded teacher's precision (a task's cells share it, also when resumed on another CPU), else PRECISION."""
    recorded = load_results().get(task, {}).get("teacher")
    return command_precision(recorded["command"]) if recorded else PRECISION


def finetune_command(model: str, task: str, lr: str, epochs: str, out: Path) -> list[str]:
    cmd = ["xtc", "finetune", "--model", model, "--task", task, "--glue-dir", GLUE, "--lr", lr, "--epochs", epochs,
           "--group-by-length", "--out", str(out)]
    cmd += ["--bf16"] if task_precision(task) == "bf16" else []
    return cmd + (["--eval-steps", CUT[task]["eval_steps"]] if task in CUT else [])


def teacher_command(task: str) -> list[str]:
    """The grid cell's command (the grid ran bf16 autocast), in this run's precision."""
    return finetune_command("minilm-l6", task, *teacher_settings(task), teacher_dir(task))


def plain_command(task: str) -> list[str]:
    """paraphrase-MiniLM-L3 fine-tuned on the labels alone, at the 3L FP32 student's epochs and lr."""
    l3 = GLUE_RECIPE.stage("l3_fp32")
    epochs = CUT.get(task, {}).get("epochs", f"{l3.epochs:g}")
    return finetune_command("paraphrase-minilm-l3", task, f"{l3.lr:g}", epochs,
                            run_dir(task).with_name(f"{task.lower()}-l3-plain"))


def run_dir(task: str) -> Path:
    return Path("runs") / "glue2" / task.lower()  # (the v1 table's were runs/glue/: other benchmarks read those)


def run_command(task: str) -> list[str]:
    cmd = ["xtc", "run", "--recipe", RECIPE, "--model", "minilm-l6", "--task", task,
           "--teacher", str(teacher_dir(task)), "--glue-dir", GLUE, "--teacher-cache-dir", TEACHER_OUTPUTS,
           "--out", str(run_dir(task))]
    for stage in STAGES[1:]:
        for field, value in CUT.get(task, {}).items():
            cmd += ["--set", f"{stage}.{field}={value}"]
        cmd += ["--set", f"{stage}.bf16=true"] if task_precision(task) == "bf16" else []
    return cmd


def sh(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    print("$", shlex.join(cmd), flush=True)
    return subprocess.run(cmd, check=True, text=True, **kw)


def main_metric(dev: dict) -> tuple[str, float]:
    """The table's number for a task, in points: its GLUE score (the mean of its metrics when it has
    two: F1 and accuracy for MRPC, Pearson and Spearman for STS-B), and what that number is."""
    metrics = next(iter(dev.values()))
    names = [k for k in metrics if k != "score"]
    return (names[0] if len(names) == 1 else "mean of " + " & ".join(names)), metrics["score"] * 100


def evaluate(folder: Path, task: str) -> tuple[dict, str]:
    cmd = ["xtc", "eval", str(folder), "--task", task, "--glue-dir", GLUE, "--json"]
    return json.loads(sh(cmd, stdout=subprocess.PIPE).stdout), shlex.join(cmd)


def record(task: str, stage: str, folder: Path, command: str, results: dict, commit: bool) -> None:
    """One cell: its dev metric re-evaluated by `xtc eval` (the fake-quant model's inference, which the
    packed runtime must reproduce), and for quantized rows the packed files, evaluated the same way."""
    metrics = json.loads((folder / "metrics.json").read_text())
    dev, eval_command = evaluate(folder, task)
    cell = {"command": command, "eval_command": eval_command, "dev": dev, "score": main_metric(dev)[1],
            "training_dev": metrics["dev"], "wall_time_s": metrics["wall_time_s"], "xtc_commit": source_commit(),
            "threads": threads()}
    if "vocabulary" in metrics:  # a trimmed word table: its rows
        cell["vocabulary_rows"] = metrics["vocabulary"]["kept"]
    if stage in QUANTIZED:  # the default export: the file users get, and the model the stage scored
        packed = folder.with_name(f"{stage}.packed")
        export = ["xtc", "export", str(folder), "--out", str(packed)]
        export_once(folder, packed, export)
        packed_dev, packed_eval = evaluate(packed, task)
        cell["packed"] = {"dev": packed_dev, "score": main_metric(packed_dev)[1], "export_command": shlex.join(export),
                          "eval_command": packed_eval}
        cell.update(size_bytes=(packed / "packed.safetensors").stat().st_size, file="packed.safetensors (default export)")
        if abs(cell["packed"]["score"] - cell["score"]) > MAX_PACKED_GAP:
            print(f"WARNING {task} {stage}: the packed file scores {cell['packed']['score']:.2f}, the stage folder "
                  f"{cell['score']:.2f}: more than {MAX_PACKED_GAP} apart", flush=True)
    else:
        cell.update(size_bytes=(folder / "model.safetensors").stat().st_size, file="model.safetensors (FP32)")
    with results_lock():  # several runner processes may share results.json: merge under a file lock
        results.clear()
        results.update(load_results())
        results.setdefault(task, {})[stage] = cell
        write_outputs(results)
        if commit:
            git_commit([str(p) for p in (RESULTS, TABLE, PLOT, README) if p.exists()], f"glue: {task} {stage}")
    print(f"recorded {task} {stage}: {cell['score']:.2f}", flush=True)


def export_once(folder: Path, packed: Path, command: list[str]) -> None:
    """Run the export ``command`` of ``folder`` into ``packed`` unless it holds an export of the folder's model as
    it is now (a trim with other rows rewrites the stage's model.safetensors after an earlier export)."""
    file = packed / "packed.safetensors"
    if file.exists() and file.stat().st_mtime >= (folder / "model.safetensors").stat().st_mtime:
        return
    shutil.rmtree(packed, ignore_errors=True)
    sh(command, stdout=subprocess.DEVNULL)


def git_commit(files: list[str], message: str) -> None:
    """Commit the table's files; retried, and never fatal: another process (a study's watcher, a person) may hold
    git's index lock for a moment, and the next cell commits the files again."""
    for attempt in range(5):
        added = subprocess.run(["git", "add", *files], check=False)
        if added.returncode == 0 and subprocess.run(["git", "commit", "-q", "-m", message, "--", *files],
                                                    check=False).returncode in (0, 1):
            return
        time.sleep(2 + 3 * attempt)
    print(f"WARNING: could not commit {message!r}; the files are written", flush=True)


def run_task(task: str, results: dict, commit: bool) -> None:
    # a lock file per task: two runners (e.g. benchmarks/run_all.sh's workers) never train one task
    with claim(run_dir(task).with_suffix(".lock"), wait=False) as claimed:
        if not claimed:
            print(f"{task}: another runner is training it; skipped here", flush=True)
            return
        with results_lock():  # another runner may have finished cells of it since this one started
            results.clear()
            results.update(load_results())
        run_claimed_task(task, results, commit)


def threads() -> int:
    """The thread count of every command this runner starts (training, export, evaluation): their results are bit
    for bit the same only at the same count, so each cell records it (cells recorded without it used 1)."""
    return int(os.environ.get("OMP_NUM_THREADS", "1"))


def run_claimed_task(task: str, results: dict, commit: bool) -> None:
    os.environ["OMP_NUM_THREADS"] = str(threads())
    env = dict(os.environ)
    if "teacher" not in results.get(task, {}):
        cmd = teacher_command(task)
        sh(cmd, env=env)
        record(task, "teacher", Path(out_of(cmd)), shlex.join(cmd), results, commit)
    elif not (teacher_dir(task) / "metrics.json").exists():  # runs/ is not in git: a fresh checkout lacks it
        remake_teacher(task, results[task]["teacher"], env)
    todo = [s for s in STAGES[1:] if s not in results.get(task, {}) or s in older_trim_stages(task, results[task])]
    if todo:
        run_stages(task, todo, results, commit, env)
    if PLAIN not in results.get(task, {}):
        cmd = plain_command(task)
        sh(cmd, env=env)
        record(task, PLAIN, Path(out_of(cmd)), shlex.join(cmd), results, commit)


def remake_teacher(task: str, cell: dict, env: dict) -> None:
    """The recorded teacher, trained again by its recorded command for the stages still to run; it must score as
    recorded (the recorded students distilled from it), else they would distil from another model."""
    cmd = shlex.split(cell["command"])
    sh(cmd, env=env)
    score = main_metric(evaluate(Path(out_of(cmd)), task)[0])[1]
    if score != cell["score"]:
        raise RuntimeError(f"{task}: the teacher made again scores {score:.4f}, the recorded one {cell['score']:.4f} "
                           "(another kind of CPU?): its remaining students would distil from another model")


def finished_stage(folder: Path, stage: StageConfig) -> bool:
    """A stage that trims its vocabulary writes metrics.json when training ends and again, with "vocabulary",
    once its folder holds the trimmed model (as many rows as the recipe says): only then is it the stage's
    result."""
    metrics = folder / "metrics.json"
    return metrics.exists() and not needs_trim(stage, json.loads(metrics.read_text()))


def out_of(cmd: list[str]) -> str:
    return cmd[cmd.index("--out") + 1]


def run_stages(task: str, todo: list[str], results: dict, commit: bool, env: dict) -> None:
    cmd = run_command(task)
    out = run_dir(task)  # (not cmd[-1]: SST-2's command ends with its budget cuts, and its stages went unrecorded)
    print("$", shlex.join(cmd), flush=True)
    with open(Path("runs") / f"glue-{task.lower()}.log", "a") as log:
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
        while True:  # record each stage as soon as its metrics.json appears
            finished = proc.poll() is not None
            for stage in list(todo):
                if finished_stage(out / stage, GLUE_RECIPE.stage(stage)):
                    record(task, stage, out / stage, shlex.join(cmd), results, commit)
                    todo.remove(stage)
            if finished:
                break
            time.sleep(30)
    if proc.returncode != 0:
        raise RuntimeError(f"{task}: xtc run exited with {proc.returncode}; see runs/glue-{task.lower()}.log")


# ---- the table and the plot ------------------------------------------------------------------------

def average(task_scores: dict) -> float | None:
    if not all(t in task_scores for t in AVERAGED):
        return None
    return sum(task_scores[t] for t in AVERAGED) / len(AVERAGED)


def table(results: dict) -> str:
    tasks = [t for t in TASKS if t in results]
    metric = {t: main_metric(results[t]["teacher"]["dev"])[0] if "teacher" in results[t] else "?" for t in tasks}
    head = " | ".join(f"{t} ({metric[t]})" for t in tasks)
    lines = [(f"| row | {head} | avg (5 tasks, no WNLI) | % of teacher | size (MB) | smaller than teacher | "
              "training time |"), "|---" * (len(tasks) + 6) + "|"]
    teacher_avg = average({t: results[t]["teacher"]["score"] for t in tasks if "teacher" in results[t]})
    by_task = notes()
    for stage, label in ROWS.items():
        cells = {t: results[t][stage] for t in tasks if stage in results[t]}
        if not cells:
            continue
        scores = " | ".join(f"{cells[t]['score']:.2f}" if t in cells else "-" for t in tasks)
        avg = average({t: c["score"] for t, c in cells.items()})
        keep = f"{100 * avg / teacher_avg:.1f}%" if avg is not None and teacher_avg else "-"
        size = row_size(cells)
        teacher_size = next((results[t]["teacher"]["size_bytes"] for t in cells if "teacher" in results[t]), None)
        ratio = f"{teacher_size / size:.1f}x" if teacher_size else "-"
        sizes = sorted({round(c["size_bytes"] / 1e6, 2) for c in cells.values()})
        shown = f"{sizes[0]:.2f}" if len(sizes) == 1 else f"{size / 1e6:.2f} ({sizes[0]:.2f}-{sizes[-1]:.2f})"
        minutes = sum(c["wall_time_s"] for c in cells.values()) / 60
        noted = "*" if any(stage in by_task.get(t, {}) for t in cells) else ""
        lines.append(f"| {label} | {scores} | {'-' if avg is None else f'{avg:.2f}'} | {keep} | {shown} | "
                     f"{ratio} | {minutes:.0f} min ({len(cells)} tasks){noted} |")
    return "\n".join(lines)


def row_size(cells: dict) -> int:
    """A row's file size: the largest of its tasks' files (a trimmed word table differs by task; otherwise
    only the head does, by a few bytes)."""
    return max(c["size_bytes"] for c in cells.values())


TARGETS = {"l3_w1a8": 97.0, "l3_w2a8": 98.5, "l6_w2a8": 99.5, "l6_w1a8": 98.0}  # % of the teacher's average
TASK_FLOOR = 90.0  # % of the teacher: no task of a quantized row below it
MAX_L3_W1A8_MB = 3.5


def targets(results: dict) -> str:
    """Each target of issue 16, met or missed and by how much, once the tasks it needs are measured."""
    def avg(stage):
        return average({t: results[t][stage]["score"] for t in results if stage in results[t]})

    lines = ["| target | measured | verdict |", "|---|---|---|"]
    teacher = avg("teacher")
    for stage, goal in TARGETS.items():
        got = avg(stage)
        if got is None or teacher is None:
            lines.append(f"| {ROWS[stage]}: at least {goal}% of the teacher's average | not all tasks yet | - |")
            continue
        kept = 100 * got / teacher
        verdict = "met" if kept >= goal else f"missed by {goal - kept:.1f} percentage points"
        lines.append(f"| {ROWS[stage]}: at least {goal}% of the teacher's average | {kept:.1f}% "
                     f"({got:.2f} of {teacher:.2f}) | {verdict} |")
    below = [(t, s, 100 * results[t][s]["score"] / results[t]["teacher"]["score"]) for t in AVERAGED if t in results
             for s in ROWS if s in QUANTIZED and s in results[t] and "teacher" in results[t]]
    if below:
        worst = min(below, key=lambda x: x[2])
        under = [f"{ROWS[s]} {t} {k:.1f}%" for t, s, k in below if k < TASK_FLOOR]
        lines.append(f"| no task of a quantized row below {TASK_FLOOR:.0f}% of its teacher | lowest: {ROWS[worst[1]]} "
                     f"{worst[0]} {worst[2]:.1f}% ({len(below)} cells) | "
                     f"{'met so far' if not under else 'missed: ' + ', '.join(under)} |")
    cells = {t: results[t]["l3_w1a8"] for t in results if "l3_w1a8" in results[t]}
    if cells:
        size = row_size(cells) / 1e6
        met = "met" if len(cells) == len(TASKS) else "met so far"
        lines.append(f"| {ROWS['l3_w1a8']} default packed file at most {MAX_L3_W1A8_MB} MB | {size:.2f} MB (largest "
                     f"of {len(cells)} tasks) | {met if size <= MAX_L3_W1A8_MB else 'missed'} |")
    ours = avg("l3_fp32")
    for other in ("pretrained_l3", PLAIN):
        theirs = avg(other)
        if ours is not None and theirs is not None:
            verdict = "met" if ours > theirs else f"missed by {theirs - ours:.2f} points"
            lines.append(f"| our 3L FP32 beats {ROWS[other]} on the average | {ours:.2f} vs {theirs:.2f} | {verdict} |")
    return "Targets (GLUE average of CoLA, SST-2, MRPC, STS-B, RTE):\n\n" + "\n".join(lines) + "\n"


def notes() -> dict:
    return json.loads(NOTES.read_text()) if NOTES.exists() else {}


def notes_text(results: dict) -> str:
    lines = [f"- {task} {ROWS[stage]}: {note}" for task, by_stage in notes().items() for stage, note in by_stage.items()
             if stage in results.get(task, {})]
    return (("Notes (\\* in the table):\n\n" + "\n".join(lines) + "\n") if lines else "") + older_trims(results)


def older_trim_stages(task: str, cells: dict) -> list[str]:
    """A task's W1A8 cells whose word table is not the recipe's: recorded before `vocabulary_rows` (they keep only
    the training data's tokens), or their stage folder was trimmed with other rows (the recipe's count changed
    since). The runner's `xtc run` trims them again (xtc.pipeline.needs_trim), and it records them again."""
    trims = {s.name for s in GLUE_RECIPE.stages if s.trim_vocabulary}
    return [stage for stage, cell in cells.items() if stage in trims
            and ("vocabulary_rows" not in cell or trimmed_otherwise(run_dir(task) / stage, GLUE_RECIPE.stage(stage)))]


def trimmed_otherwise(folder: Path, stage: StageConfig) -> bool:
    """A finished stage folder (when this checkout has it: runs/ is not in git) trimmed with other rows than
    the recipe's."""
    return (folder / "metrics.json").exists() and not finished_stage(folder, stage)


def older_trims(results: dict) -> str:
    older = [f"{task} {ROWS[stage]}" for task in TASKS for stage in older_trim_stages(task, results.get(task, {}))]
    return ("\nRecorded with another word table than the recipe's `vocabulary_rows` "
            f"(to be recorded again): {', '.join(older)}.\n") if older else ""


def packed_check(results: dict) -> str:
    lines = ["| task | row | stage folder | its float ops | default packed file | difference | size (MB) |",
             "|---|---|---|---|---|---|---|"]
    for task in TASKS:
        for stage, label in ROWS.items():
            cell = results.get(task, {}).get(stage)
            if cell and "packed" in cell:
                packed = cell["packed"]["score"]
                order = "the engine's" if cell.get("eval_order") == "runtime" else "torch's"
                if "torch_order_score" in cell:
                    order += f" (torch's: {cell['torch_order_score']:.2f})"
                lines.append(f"| {task} | {label} | {cell['score']:.2f} | {order} | {packed:.2f} | "
                             f"{packed - cell['score']:+.2f} | {cell['size_bytes'] / 1e6:.2f} |")
    return "\n".join(lines)


def plot(results: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = []
    for stage, label in ROWS.items():
        cells = {t: results[t][stage] for t in results if stage in results[t]}
        avg = average({t: c["score"] for t, c in cells.items()})
        if avg is not None:
            points.append((row_size(cells) / 1e6, avg, label))
    if not points:
        return
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for size, avg, label in points:
        ax.scatter(size, avg)
        ax.annotate(label, (size, avg), textcoords="offset points", xytext=(5, 4), fontsize=8)
    ax.set_xscale("log")
    ax.set_xlabel("model file size (MB, log scale)")
    ax.set_ylabel("GLUE dev average (CoLA, SST-2, MRPC, STS-B, RTE)")
    ax.set_title("XTC on MiniLM-L6: accuracy vs size")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(PLOT, dpi=120)
    plt.close(fig)


def precisions(results: dict) -> str:
    return ", ".join(f"{t} {command_precision(c['teacher']['command'])}"
                     for t in TASKS if "teacher" in (c := results.get(t, {}))) or "none yet"


def write_outputs(results: dict) -> None:
    write_json(RESULTS, results)  # atomic: teacher_dir() reads it outside the lock
    cut = ", ".join(f"{t}: {v['epochs']} epoch per stage (eval every {v['eval_steps']} steps)" for t, v in CUT.items())
    TABLE.write_text(f"""# XTC on GLUE dev: MiniLM-L6 and its compressed students, measured on this project's 2-core CPU machines

Made by `python benchmarks/glue/run_glue.py --jobs 1` (every cell's exact commands are in
results.json). Teachers: `xtc finetune` of each task's best cell of the teacher grid
([benchmarks/teachers](../teachers/RESULTS.md): lr x epochs, best dev epoch kept), re-run;
WNLI and SST-2, outside the grid, 10 epochs at lr 5e-5. Students: the stages of
[xtc-glue.yaml](xtc-glue.yaml), each distilled in one stage from the teacher, with the
presets' budgets: layer reduction and the pre-training-distilled 3L model 10 epochs at lr
1e-4; W2A8 18 epochs at lr 5e-4; W1A8 18 epochs at lr 1e-3 from the W2A8 row, with a 2-bit
word table trimmed to the training data's tokens and filled up to 24,000 rows with the most frequent
other tokens (`vocabulary_rows`, the file's row count in results.json). The plain fine-tuning row is `xtc finetune`
of paraphrase-MiniLM-L3 at the 3L student's epochs and lr. Budgets cut further for {cut}.
Length-grouped batches. Precision per task: bf16 autocast where the machine that trained it
had bf16 instructions, else float32 (every cell's command says which: `--bf16`, `bf16=true`;
the 1-bit ablation measured both, side by side, in the [README](../../README.md)): {precisions(results)}.
One thread per training process (OMP_NUM_THREADS=1; MRPC's reproduction check ran beside
it on the other core), so training times are per thread. Sizes: the FP32 safetensors file for FP32
rows; for quantized rows the default packed file (`xtc export`: kept tensors in float16,
position embeddings and pooler as 8-bit rows, as trained and evaluated), the largest of the
row's tasks (a trimmed word table differs by task). The teacher's file is the reference for
the ratios. A stage interrupted at the end of a working session resumes from its checkpoint
in the next, sometimes under a later commit; results.json records the commit that finished
each cell. The previous table (3-epoch teachers, 6 epochs of QAT at lr 5e-5) is in [v1/](v1/RESULTS.md).

{table(results)}

{notes_text(results)}
{targets(results)}
Every number above is `xtc eval` of the stage folder (the fake-quant model in inference, whose
1-/2-bit Linears compute the exact integer products the packed kernels compute). Each quantized
row was also exported with the default `xtc export` and the packed file evaluated with the
packed runtime (`xtc eval PACKED`); the issue asks for agreement within {MAX_PACKED_GAP} points.
`xtc eval` now runs a quantized folder's other float ops (embeddings sum, LayerNorm, attention,
GELU) in the engine's order too (`xtc.quant.runtime_order`), so that both compute the same 8-bit
activation codes; cells evaluated before that, in torch's order, say so below (in brackets: a
re-measured cell's score in torch's order). In torch's order a code on a rounding boundary can
flip, and a flipped code moves every later layer: near-tied dev rows can change class.

{packed_check(results)}

Reproduction: `python benchmarks/glue/reproduce.py --task TASK` reruns a task's recorded training
commands into a fresh folder and compares every cell's weights and scores with the recorded ones
({"[REPRODUCED.md](REPRODUCED.md)" if (HERE / "REPRODUCED.md").exists() else
  "not run yet for this table; the previous table's: [v1/REPRODUCED.md](v1/REPRODUCED.md)"}).

![accuracy vs size](accuracy_vs_size.png)
""")
    plot(results)
    copy_to_readme(results)


def copy_to_readme(results: dict) -> None:
    """The README's copy of the table and targets, between its <!-- glue:start --> / <!-- glue:end --> lines."""
    start, end = "<!-- glue:start -->", "<!-- glue:end -->"
    text = README.read_text()
    if start not in text or end not in text:
        return
    cells = sum(len(by_stage) for by_stage in results.values())
    status = ("complete" if cells == len(TASKS) * len(ROWS) else
              f"in progress, {cells} of {len(TASKS) * len(ROWS)} cells measured")
    body = (f"Status: {status} (copied from [RESULTS.md](benchmarks/glue/RESULTS.md), which has the packed-file "
            f"checks and notes).\n\n{table(results)}\n\n{targets(results)}")
    before, rest = text.split(start, 1)
    README.write_text(f"{before}{start}\n{body}{end}{rest.split(end, 1)[1]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", nargs="*", default=TASKS, choices=TASKS)
    parser.add_argument("--jobs", type=int, default=1, help="tasks trained side by side")
    parser.add_argument("--no-commit", action="store_true")
    parser.add_argument("--precision", choices=PRECISIONS, default="auto",
                        help="auto: bf16 autocast on a GPU with bf16 or a CPU with bf16 instructions, else float32")
    parser.add_argument("--report", action="store_true", help="only rewrite RESULTS.md and the plot")
    args = parser.parse_args()
    choose_precision(args.precision)
    results = load_results()
    if args.report:
        write_outputs(results)
        return
    with ThreadPoolExecutor(args.jobs) as pool:
        jobs = {task: pool.submit(run_task, task, results, not args.no_commit) for task in args.tasks}
    failed = {t: j.exception() for t, j in jobs.items() if j.exception()}
    for task, error in failed.items():
        print(f"{task} failed: {error}", file=sys.stderr)
    print(table(results))
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
