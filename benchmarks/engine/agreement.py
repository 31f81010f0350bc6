"""Issue 18's numerics contract on trained models and real GLUE rows: the engine against the fake-quant model.

    python benchmarks/engine/agreement.py runs/ablation-fp32 --glue-dir ../shared/data/glue \
        --out benchmarks/engine/agreement

Each finished quantize stage of a study folder (or each stage folder given) is exported with the default
settings (`xtc export`), and every dev row of its task is scored twice: by the fake-quant torch model of the
stage folder and by the engine on the packed folder, both at 128 tokens, one row at a time (no padding).
Per model: the dev metric of each, their difference, the share of rows whose predictions differ, and the
logit difference relative to the row's largest |logit| (its maximum and the share of rows above 1e-3) and to
the largest |logit| of the dev set.

The fake-quant model is `xtc eval`'s: its float ops in the engine's order (xtc.quant.runtime_order), so the
engine should agree with it to the float rounding of the pooler's tanh. (AGREEMENT.md files written
before that order existed compared against torch's own order.)

A control: the same fake-quant model run in float64 (the same weights, codes and rules; only the float
arithmetic is exact-er) against itself in float32, with the same measures. It shows how far the model's own
logits move when only the float rounding changes: an 8-bit activation code on a rounding boundary flips in it
too: agreement needs the same order of operations, not more precision.
"""

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
import torch

from xtc.data.glue import load_examples
from xtc.data.metrics import compute_metrics
from xtc.data.tasks import get_task
from xtc.engine import Engine
from xtc.evaluation import load_trained
from xtc.models import load_model, load_tokenizer
from xtc.packed.export import write_packed

TOKENS = 128


def stage_folders(paths: list[Path]) -> list[Path]:
    found = []
    for path in paths:
        if (path / "metrics.json").is_file():
            found.append(path)
        else:  # a study folder: each finished cell's last stage
            found += sorted(p.parent for p in path.glob("cells/*/quantize/metrics.json"))
    return found


def compare(stage: Path, glue_dir: Path, scratch: Path) -> dict:
    config = json.loads((stage / "config.json").read_text())
    task = get_task(config["finetuning_task"])
    fake = load_trained(str(stage), task)
    tokenizer = load_tokenizer(stage)
    packed = scratch / stage.parent.name
    write_packed(fake, packed, tokenizer)
    engine = Engine.load(packed)
    examples = load_examples(task, "dev", glue_dir)
    fake64 = load_model(str(stage), task)[0].eval().double()  # torch's own ops (no runtime order), in float64
    ours, theirs, exact = [], [], []
    with torch.no_grad():
        for e in examples:
            batch = tokenizer(*e.texts, truncation=True, max_length=TOKENS, return_tensors="pt")
            theirs.append(fake(**batch).logits[0].numpy())
            exact.append(fake64(**batch).logits[0].numpy())
            ours.append(engine.logits(**{k: v.numpy() for k, v in batch.items()})[0])
    ours, theirs, exact = np.array(ours), np.array(theirs), np.array(exact)
    pick = (lambda z: z[:, 0]) if task.is_regression else (lambda z: z.argmax(1))
    labels = [e.label for e in examples]
    metric = {name: compute_metrics(task, pick(z), labels)["score"] * 100
              for name, z in (("fake", theirs), ("engine", ours), ("float64", exact))}

    def differences(other: np.ndarray, name: str) -> dict:
        relative = np.abs(other - theirs).max(axis=1) / np.abs(theirs).max(axis=1)
        return {name: round(metric[name], 2), "difference": round(metric[name] - metric["fake"], 2),
                "predictions_differ": float(np.mean(pick(other) != pick(theirs))) if not task.is_regression else None,
                "max_relative_logit_difference": float(relative.max()),
                "max_logit_difference_over_largest": float(np.abs(other - theirs).max() / np.abs(theirs).max()),
                "rows_above_1e-3": float(np.mean(relative > 1e-3))}

    return {"stage": str(stage), "task": task.name, "rows": len(examples), "fake_quant": round(metric["fake"], 2),
            "recorded": round(json.loads((stage / "metrics.json").read_text())["dev"]["dev"]["score"] * 100, 2),
            **differences(ours, "engine"), "float64_control": differences(exact, "float64")}


def table(rows: list[dict], command: str) -> str:
    lines = ["# The engine against the fake-quant model on trained models and real GLUE dev rows", "",
             f"Made by `{command}` (see its docstring). Scores x100 "
             "(MCC for CoLA, mean of Pearson and Spearman for STS-B); `recorded` is the stage's metrics.json "
             "(batched, padded). Relative logit difference: max |engine - fake| over a row's logits / the row's max |fake|; "
             "the last column divides the largest difference by the largest |fake| logit of the whole dev set. A study "
             "cell's settings are in its study's results.jsonl, under the same name. The float64 columns: the same "
             "fake-quant model run in float64 against itself in float32 (the control in the docstring).",
             "", "| stage | task | rows | recorded | fake-quant | engine | engine - fake | predictions differ | "
             "max rel. logit diff | rows > 1e-3 | max diff / largest dev logit | float64 - fake | float64: rows > 1e-3 | "
             "float64: max diff / largest dev logit |", "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        c = r["float64_control"]
        differ = "-" if r["predictions_differ"] is None else f"{100 * r['predictions_differ']:.2f}%"
        name = Path(r["stage"]).parent.name  # a study cell: its settings, cut, and the hash that tells them apart
        lines.append(f"| {name if len(name) <= 60 else name[:48] + '...' + name[-9:]} | {r['task']} | {r['rows']} | {r['recorded']:.2f} | "
                     f"{r['fake_quant']:.2f} | {r['engine']:.2f} | {r['difference']:+.2f} | {differ} | "
                     f"{r['max_relative_logit_difference']:.1e} | {100 * r['rows_above_1e-3']:.1f}% | "
                     f"{r['max_logit_difference_over_largest']:.1e} | {c['difference']:+.2f} | "
                     f"{100 * c['rows_above_1e-3']:.1f}% | {c['max_logit_difference_over_largest']:.1e} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    import shlex
    import sys

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("paths", nargs="+", type=Path, help="study folders or quantize stage folders")
    parser.add_argument("--glue-dir", type=Path, required=True)
    parser.add_argument("--out", type=Path, help="folder for agreement.json and AGREEMENT.md")
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        for stage in stage_folders(args.paths):
            rows.append(compare(stage, args.glue_dir, Path(scratch)))
            print(json.dumps(rows[-1]), flush=True)
    command = shlex.join(["python", "benchmarks/engine/agreement.py", *sys.argv[1:]])
    print(table(rows, command))
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "agreement.json").write_text(json.dumps(rows, indent=2) + "\n")
        (args.out / "AGREEMENT.md").write_text(table(rows, command))
