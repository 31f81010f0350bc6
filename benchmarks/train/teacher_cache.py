"""Training time with and without the teacher's kept outputs (``--teacher-cache-gb``), side by side.

    python benchmarks/train/teacher_cache.py [--task STS-B] [--rows 640] [--epochs 6] [--rounds 2]

Runs the same distill stage (MiniLM-L6 teacher -> its 3-layer GLUE student -> W1A8, one thread)
with the cache off and on, alternating, ``--rounds`` times each, and prints each stage's
training wall time (metrics.json, teacher fill included) and the ratio. Needs the GLUE table's
teacher and 3-layer student (benchmarks/glue). Writes teacher_cache.md beside this script.
"""

import argparse
import json
import os
import statistics
import subprocess
import tempfile
from pathlib import Path

HERE = Path(__file__).parent
GLUE = "../shared/data/glue"


def run_stage(out: Path, task: str, rows: int, epochs: int, gb: float) -> float:
    slug = task.lower()
    subprocess.run(
        ["xtc", "run", "--recipe", "xtc-w1a8-l3", "--model", "minilm-l6", "--task", task,
         "--teacher", f"runs/{slug}-teacher", "--reuse", f"layer_reduction=runs/glue/{slug}/l3_fp32",
         "--max-train-samples", str(rows), "--max-eval-samples", "64", "--set", f"quantize.epochs={epochs}",
         "--glue-dir", GLUE, "--out", str(out), "--teacher-cache-gb", str(gb)],
        check=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return json.loads((out / "quantize" / "metrics.json").read_text())["wall_time_s"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="STS-B")
    parser.add_argument("--rows", type=int, default=640)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--note", default="", help="e.g. what else ran on the machine")
    args = parser.parse_args()
    times = {0.0: [], 4.0: []}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            for gb in times:
                times[gb].append(run_stage(Path(tmp) / f"{gb}-{r}", args.task, args.rows, args.epochs, gb))
                print(f"round {r + 1}, teacher cache {gb:g} GiB: {times[gb][-1]:.1f} s", flush=True)
    off, on = statistics.median(times[0.0]), statistics.median(times[4.0])
    lines = [
        f"# Teacher cache: {args.task}, {args.rows} rows, {args.epochs} epochs of 3L W1A8 KD, 1 thread",
        "",
        f"Command: `python benchmarks/train/teacher_cache.py --task {args.task} --rows {args.rows} "
        f"--epochs {args.epochs} --rounds {args.rounds}`" + (f"  \n{args.note}" if args.note else ""),
        "",
        "| teacher cache | training wall time per round (s) | median (s) |",
        "|---|---|---|",
        f"| off (`--teacher-cache-gb 0`) | {', '.join(f'{t:.1f}' for t in times[0.0])} | {off:.1f} |",
        f"| on (default, 4 GiB) | {', '.join(f'{t:.1f}' for t in times[4.0])} | {on:.1f} |",
        "",
        f"Speed-up: {off / on:.2f}x ({(1 - on / off) * 100:.0f}% less time; the first epoch runs the teacher, "
        "the later ones read its kept outputs).",
    ]
    print("\n".join(lines))
    (HERE / "teacher_cache.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
