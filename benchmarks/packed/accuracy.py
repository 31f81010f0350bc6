"""GLUE dev metrics of a quantized stage: fake-quant model vs its packed exports (kept tensors fp32, fp16, int8).

    python benchmarks/packed/accuracy.py runs/rte-w1/quantize --task RTE --glue-dir ../shared/data/glue

The packed models run on the low-bit kernels (xtc.runtime). Appends a table to
accuracy.md beside this script with the command that made it.
"""

import argparse
import shlex
import sys
import tempfile
from pathlib import Path

from xtc.evaluation import evaluate
from xtc.compression import export
from xtc.packed.layout import WEIGHTS_FILE
from xtc.recipe import EvalConfig

HERE = Path(__file__).parent
INT8_KEPT = ("bert.embeddings.position_embeddings.weight", "bert.pooler.dense.weight")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("stage")
    parser.add_argument("--task", required=True)
    parser.add_argument("--glue-dir", required=True)
    args = parser.parse_args()

    def score(model: str) -> dict:
        results = evaluate(EvalConfig(model=model, task=args.task, glue_dir=args.glue_dir))
        return next(iter(results.values()))

    rows = [("fake-quant (xtc eval of the stage folder)", score(args.stage), None)]
    with tempfile.TemporaryDirectory() as tmp:
        for label, kwargs in (("packed, kept fp32", {"kept": "fp32"}), ("packed, kept fp16", {}),
                              ("packed, kept fp16, position embeddings + pooler int8", {"int8_tensors": INT8_KEPT})):
            out = export(args.stage, Path(tmp) / label.replace(" ", "_"), **kwargs)
            rows.append((label, score(str(out)), (out / WEIGHTS_FILE).stat().st_size / 1e6))
    metrics = [k for k in rows[0][1] if k != "score"]
    base = rows[0][1]
    lines = [f"## `{args.stage}` on {args.task} dev\n", f"`python benchmarks/packed/accuracy.py {shlex.join(sys.argv[1:])}`\n",
             "| model | " + " | ".join(metrics) + " | difference to fake-quant (points) | file (MB) |",
             "|---|" + "---|" * (len(metrics) + 2)]
    for label, result, mb in rows:
        diff = max(abs(result[m] - base[m]) * 100 for m in metrics)
        lines.append(f"| {label} | " + " | ".join(f"{result[m] * 100:.2f}" for m in metrics)
                     + f" | {diff:.2f} | {'-' if mb is None else f'{mb:.2f}'} |")
    text = "\n".join(lines) + "\n"
    print(text)
    path = HERE / "accuracy.md"
    previous = path.read_text() if path.exists() else "# Packed vs fake-quant accuracy\n\n"
    path.write_text(previous + "\n" + text)


if __name__ == "__main__":
    main()
