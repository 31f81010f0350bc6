"""Training time with and without the teacher's kept outputs, side by side.

    python benchmarks/train/teacher_cache.py [--task STS-B] [--rows 640] [--epochs 6] [--rounds 2]

Runs the same distill stage (MiniLM-L6 teacher -> its 3-layer GLUE student -> W1A8, one thread)
in four ways, alternating, ``--rounds`` times each: teacher on every batch (``--teacher-cache-gb
0``), outputs kept in memory (the default), outputs written to files (``--teacher-cache-dir``,
an empty folder: the first run of a study), and read from those files (a later run). Prints each
stage's training wall time (metrics.json, teacher fill included) and the ratios. Needs the GLUE
table's teacher and 3-layer student (benchmarks/glue). Writes teacher_cache[-EPOCHS].md beside
this script.
"""

import argparse
import statistics
import tempfile
from pathlib import Path

from quantize_stage import run_quantize_stage

HERE = Path(__file__).parent

VARIANTS = {  # name -> extra xtc run arguments (STORE: this round's store folder)
    "off (`--teacher-cache-gb 0`)": ["--teacher-cache-gb", "0"],
    "in memory (default)": [],
    "files, written (`--teacher-cache-dir`, empty)": ["--teacher-cache-dir", "STORE"],
    "files, read (`--teacher-cache-dir`, filled)": ["--teacher-cache-dir", "STORE"],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="STS-B")
    parser.add_argument("--rows", type=int, default=640)
    parser.add_argument("--epochs", type=float, default=6)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--note", default="", help="e.g. what else ran on the machine")
    args = parser.parse_args()
    times = {name: [] for name in VARIANTS}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            store = str(Path(tmp) / f"store-{r}")
            for i, (name, extra) in enumerate(VARIANTS.items()):
                extra = [store if a == "STORE" else a for a in extra]
                metrics = run_quantize_stage(Path(tmp) / f"{i}-{r}", args.task, args.rows, args.epochs,
                                             [*extra, "--max-eval-samples", "64"])
                times[name].append(metrics["wall_time_s"])
                print(f"round {r + 1}, {name}: {times[name][-1]:.1f} s", flush=True)
    base = statistics.median(times["off (`--teacher-cache-gb 0`)"])
    lines = [
        f"# Teacher outputs: {args.task}, {args.rows} rows, {args.epochs:g} epochs of 3L W1A8 KD, 1 thread",
        "",
        f"Command: `python benchmarks/train/teacher_cache.py --task {args.task} --rows {args.rows} "
        f"--epochs {args.epochs:g} --rounds {args.rounds}`" + (f"  \n{args.note}" if args.note else ""),
        "",
        "| teacher outputs | training wall time per round (s) | median (s) | speed-up vs off |",
        "|---|---|---|---|",
        *(f"| {name} | {', '.join(f'{t:.1f}' for t in ts)} | {statistics.median(ts):.1f} | "
          f"{base / statistics.median(ts):.2f}x |" for name, ts in times.items()),
        "",
        "Kept in memory, the teacher runs once (the first pass); read from files, not at all.",
    ]
    print("\n".join(lines))
    suffix = "" if args.epochs == 6 else f"-{args.epochs:g}"
    (HERE / f"teacher_cache{suffix}.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
