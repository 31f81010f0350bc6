"""Training time with plain shuffled batches vs length-grouped ones (``group_by_length``), side by side.

    python benchmarks/train/group_by_length.py [--tasks STS-B CoLA RTE] [--rows 1280] [--epochs 2] [--rounds 2]

Runs the same distill stage (MiniLM-L6 teacher -> its 3-layer GLUE student -> W1A8, one thread,
teacher outputs kept in memory) twice per round and task, alternating: batches drawn at random
(the default) and batches of similar lengths (``--set quantize.group_by_length=true``). Prints
each stage's training wall time (metrics.json), the share of padding tokens in each, the ratio,
and the dev score each ended with (a small-sample sanity check, not an accuracy result). Needs
the GLUE table's teachers and 3-layer students (benchmarks/glue). Writes group_by_length.md
beside this script.
"""

import argparse
import statistics
import tempfile
from pathlib import Path

from quantize_stage import GLUE, run_quantize_stage

HERE = Path(__file__).parent
VARIANTS = {"shuffled (default)": [], "grouped by length": ["--set", "quantize.group_by_length=true"]}


def padding_share(task: str, rows: int, group: bool) -> float:
    """Padding tokens / all tokens over one epoch of batches of 32, as the stage batches them."""
    from xtc.data.batching import make_loader, tokenize
    from xtc.data.glue import load_examples
    from xtc.data.tasks import get_task
    from xtc.models import load_tokenizer

    tokenizer = load_tokenizer("minilm-l6")
    features = tokenize(tokenizer, load_examples(get_task(task), "train", GLUE, rows), 128)
    masks = [b["attention_mask"] for b in make_loader(tokenizer, features, 32, shuffle=True, seed=42,
                                                      group_by_length=group)]
    return 1 - sum(int(m.sum()) for m in masks) / sum(m.numel() for m in masks)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", nargs="+", default=["STS-B", "CoLA", "RTE"])
    parser.add_argument("--rows", type=int, default=1280)
    parser.add_argument("--epochs", type=float, default=2)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--note", default="", help="e.g. what else ran on the machine")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for task in args.tasks:
            runs = {name: [] for name in VARIANTS}
            for r in range(args.rounds):
                for i, (name, extra) in enumerate(VARIANTS.items()):
                    runs[name].append(run_quantize_stage(Path(tmp) / f"{task}-{i}-{r}", task, args.rows, args.epochs, extra))
                    print(f"{task} round {r + 1}, {name}: {runs[name][-1]['wall_time_s']:.1f} s", flush=True)
            base = statistics.median(m["wall_time_s"] for m in runs["shuffled (default)"])
            for (name, ms), group in zip(runs.items(), (False, True)):
                wall = statistics.median(m["wall_time_s"] for m in ms)
                scores = ", ".join(f"{m['dev'][next(iter(m['dev']))]['score'] * 100:.2f}" for m in ms)
                rows.append(f"| {task} | {name} | {padding_share(task, args.rows, group) * 100:.0f}% | "
                            f"{', '.join(str(m['wall_time_s']) for m in ms)} | {wall:.1f} | {base / wall:.2f}x | {scores} |")
    lines = [
        f"# Length-grouped batches: {args.rows} rows, {args.epochs:g} epochs of 3L W1A8 KD, 1 thread",
        "",
        f"Command: `python benchmarks/train/group_by_length.py --tasks {' '.join(args.tasks)} --rows {args.rows} "
        f"--epochs {args.epochs:g} --rounds {args.rounds}`" + (f"  \n{args.note}" if args.note else ""),
        "",
        "| task | batches | padding tokens | training wall time per round (s) | median (s) | speed-up | dev score per round |",
        "|---|---|---|---|---|---|---|",
        *rows,
        "",
        ("Dev scores come from runs on a few rows for a few epochs: a check that nothing broke, not a comparison "
         "of accuracy."),
    ]
    print("\n".join(lines))
    (HERE / "group_by_length.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
