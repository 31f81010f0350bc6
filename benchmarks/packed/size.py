"""Packed file sizes: BERT-base geometry (random weights: size depends only on shapes) and MiniLM-L6.

    python benchmarks/packed/size.py [--minilm-runs runs/rte-w1 runs/mrpc-w2]

Prints a Markdown table and writes it, with the raw numbers, to size.md / size.json
beside this script. Every size is a file on disk written by this run: the FP32
checkpoint by ``save_pretrained``, the packed ones by ``xtc export``.
"""

import argparse
import copy
import json
import tempfile
from pathlib import Path

import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer, BertConfig

from xtc.models import resolve_model
from xtc.compression import export
from xtc.packed.layout import WEIGHTS_FILE
from xtc.quant.apply import quantize_
from xtc.quant.config import PRESETS
from xtc.reduce import reduce_layers

HERE = Path(__file__).parent


def configs(preset: str) -> dict:
    """The preset (the default: position embeddings and pooler trained as 8-bit rows, the rest fp16) and
    the paper's choice (only the Linears and word embeddings quantized; the rest fp16)."""
    config = PRESETS[preset]
    return {"default": config, "paper (position embeddings, pooler fp16)":
            config.model_copy(update={"rules": config.rules[:2]})}


def file_mb(path: Path) -> float:
    return path.stat().st_size / 1e6


def bert_base_rows(tmp: Path) -> list[dict]:
    torch.manual_seed(0)
    teacher = AutoModelForSequenceClassification.from_config(BertConfig(num_labels=2)).eval()  # BERT-base geometry
    tokenizer = AutoTokenizer.from_pretrained(resolve_model("minilm-l6"))  # same 30522-token uncased vocab
    teacher.save_pretrained(tmp / "fp32")
    base = file_mb(tmp / "fp32" / "model.safetensors")
    rows = [{"model": "BERT-base 12L FP32 (safetensors)", "mb": base, "ratio": 1.0}]
    for layers, keep in ((12, list(range(12))), (6, [1, 3, 5, 7, 9, 11]), (5, [2, 4, 6, 8, 10])):
        student = reduce_layers(teacher, keep)
        for preset in ("w1a8", "w2a8"):
            for variant, config in configs(preset).items():
                model = quantize_(copy.deepcopy(student), config)
                out = tmp / f"{layers}-{preset}-{len(rows)}"
                export(model, out, tokenizer)
                mb = file_mb(out / WEIGHTS_FILE)
                rows.append({"model": f"BERT-base {layers}L {preset.upper()}, {variant}", "mb": mb,
                             "ratio": base / mb})
                if preset == "w2a8" and variant == "default":
                    out = tmp / f"{layers}-{preset}-base3"
                    export(model, out, tokenizer, ternary="ternary_base3")
                    mb = file_mb(out / WEIGHTS_FILE)
                    rows.append({"model": f"BERT-base {layers}L W2A8 base-3 (1.6 bits), default", "mb": mb,
                                 "ratio": base / mb})
    return rows


def minilm_rows(runs: list[Path], tmp: Path) -> list[dict]:
    rows = []
    for run in runs:
        teacher = run / "teacher" / "model.safetensors"
        if not teacher.is_file() or not (run / "quantize" / "config.json").is_file():
            continue
        base = file_mb(teacher)
        rows.append({"model": f"{run.name}: MiniLM-L6 teacher FP32", "mb": base, "ratio": 1.0})
        reduced = run / "layer_reduction" / "model.safetensors"
        if reduced.is_file():
            rows.append({"model": f"{run.name}: 3L FP32", "mb": file_mb(reduced), "ratio": base / file_mb(reduced)})
        out = tmp / f"{run.name}-packed"
        export(run / "quantize", out)
        mb = file_mb(out / WEIGHTS_FILE)
        rows.append({"model": f"{run.name}: 3L quantized, default export", "mb": mb, "ratio": base / mb})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minilm-runs", nargs="*", type=Path, default=[])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        rows = bert_base_rows(Path(tmp)) + minilm_rows(args.minilm_runs, Path(tmp))
    table = ["| model | file (MB) | smaller than FP32 |", "|---|---|---|"]
    table += [f"| {r['model']} | {r['mb']:.2f} | {r['ratio']:.1f}x |" for r in rows]
    text = "\n".join(table)
    print(text)
    (HERE / "size.md").write_text("# Packed file sizes\n\nMade by `python benchmarks/packed/size.py"
                                  + "".join(f" {p}" for p in ([] if not args.minilm_runs else
                                                               ["--minilm-runs", *map(str, args.minilm_runs)]))
                                  + "`, every file the default `xtc export` of a model quantized with the "
                                  "config named. The default presets train and store the position embeddings and "
                                  "the pooler as 8-bit rows (weights only) and every other kept tensor in float16; "
                                  "the paper's choice keeps the position embeddings and pooler in float16 too.\n\n"
                                  + text + "\n")
    (HERE / "size.json").write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
