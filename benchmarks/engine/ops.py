"""Where the engine's time goes (issue 18): the whole forward against its Linears, and each Linear's
multiply-adds per second against this core's 8-bit multiply-add ceiling.

    python benchmarks/engine/ops.py [--repeats 50]

One thread, batch 1, random weights, bench.py's geometries, xtc W1A8, every time the best of --repeats
calls. The forward is Engine.logits on random ids. Each Linear of the forward is timed alone at its shape with
kernels.linear (the per-token 8-bit quantization and the product, the two calls the forward makes, plus
a few microseconds of Python); the last layer's Linears after attention run on the [CLS] row only, as in
the forward. "other" is the forward less its Linears: embeddings, attention, LayerNorms, GELU, pooler and
classifier. The ceiling is a loop of independent multiply-add instructions with no memory traffic: on
AVX-512 VNNI vpdpbusd (benchmarks/packed/vnni_peak.c), on AVX2 vpmaddubsw + vpaddw (avx2_peak.c), the
instructions of the kernels' inner loop. Results: ops.md and ops.json beside this script (or --out).
"""

import argparse
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

import numpy as np
import torch
from transformers import BertConfig, BertForSequenceClassification

from xtc import kernels
from xtc.compression import export
from xtc.engine import Engine
from xtc.models import load_tokenizer
from xtc.quant.apply import quantize_

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "packed"))
from bench import GEOMETRIES, VOCAB, cpu_model, save  # noqa: E402
from peak import ceiling  # noqa: E402

TOKENS = [16, 128]
CEILINGS = {"avx512-vnni": ("vnni_peak.c", ("-mavx512f", "-mavx512bw", "-mavx512vnni"), "vpdpbusd"),
            "avx2": ("avx2_peak.c", ("-mavx2",), "vpmaddubsw + vpaddw")}


def best_ms(fn, repeats: int) -> float:
    """The fastest of ``repeats`` calls after a warm-up: the parts are timed apart, and on a shared host a
    median moves by tens of percent between two runs, the best by a few."""
    fn()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best * 1e3


def w1a8_folder(geometry: str, folder: Path) -> Path:
    """The geometry with random weights (seed 0), quantized W1A8 and exported packed into ``folder``."""
    torch.manual_seed(0)
    model = BertForSequenceClassification(BertConfig(**GEOMETRIES[geometry], vocab_size=VOCAB, num_labels=2)).eval()
    return export(quantize_(model, "w1a8"), folder, load_tokenizer("bert-tiny"))


def linear_ms(k: int, n: int, rows: int, repeats: int) -> float:
    rng = np.random.default_rng(0)
    weights = kernels.prepare(rng.choice(np.int8([-1, 1]), (n, k)), 1)
    x, bias = rng.standard_normal((rows, k)).astype(np.float32), rng.standard_normal(n).astype(np.float32)
    return best_ms(partial(kernels.linear, x, weights, np.float32([0.05]), bias, threads=1), repeats)


def breakdown(geometry: str, engine: Engine, tokens: int, repeats: int, ceiling_macs: float) -> dict:
    g = GEOMETRIES[geometry]
    H, I, L = g["hidden_size"], g["intermediate_size"], g["num_hidden_layers"]
    ids = np.random.default_rng(1).integers(0, VOCAB, (1, tokens))
    forward = best_ms(partial(engine.logits, ids), repeats)
    linears = {}
    for name, k, n in (("QKV", H, 3 * H), ("attention out", H, H), ("FFN in", H, I), ("FFN out", I, H)):
        full = linear_ms(k, n, tokens, repeats)
        cls_only = full if name == "QKV" else linear_ms(k, n, 1, repeats)  # the last layer's, after attention
        ms = (L - 1) * full + cls_only
        macs = ((L - 1) * tokens + (tokens if name == "QKV" else 1)) * k * n
        linears[name] = {"ms": round(ms, 3), "gmacs": round(macs / ms / 1e6, 1),
                         "of_ceiling": round(macs / ms * 1e3 / ceiling_macs, 3)}
    total = sum(v["ms"] for v in linears.values())
    return {"geometry": geometry, "tokens": tokens, "forward_ms": round(forward, 3), "linears": linears,
            "linears_ms": round(total, 3), "other_ms": round(forward - total, 3)}


def markdown(results: dict) -> str:
    lines = ["# Where the engine's time goes: forward vs Linears vs this core's multiply-add ceiling\n",
             f"Made by `{results['command']}` on {results['cpu']}, kernel path {results['path']}, 1 thread, batch 1, "
             f"xtc W1A8, best of {results['repeats']} calls each. Ceiling ({results['ceiling_instructions']}, no memory traffic): "
             f"{results['ceiling_gmacs'][0]:.0f} GMAC/s before, {results['ceiling_gmacs'][1]:.0f} after.\n",
             "| geometry | tokens | forward ms | Linears ms (share) | other ms (share) | QKV GMAC/s (% ceiling) "
             "| attention out | FFN in | FFN out |", "|---|---|---|---|---|---|---|---|---|"]
    for r in results["rows"]:
        f = r["forward_ms"]
        cells = [f"{v['gmacs']:.0f} ({100 * v['of_ceiling']:.0f}%)" for v in r["linears"].values()]
        lines.append(f"| {r['geometry']} | {r['tokens']} | {f:.2f} | {r['linears_ms']:.2f} "
                     f"({100 * r['linears_ms'] / f:.0f}%) | {r['other_ms']:.2f} ({100 * r['other_ms'] / f:.0f}%) | "
                     + " | ".join(cells) + " |")
    lines += ["", "Each Linear's time is the sum over the forward's layers (the last layer's attention out and FFN "
              "at the [CLS] row); its GMAC/s counts M x K x N multiply-adds over that time, so a short input's "
              "rate includes the per-call cost (quantizing the rows, the Python call) that a long one spreads."]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--out", type=Path, default=HERE)
    args = parser.parse_args()
    path = kernels.PATHS[-1]
    if path not in CEILINGS:
        sys.exit(f"no multiply-add ceiling for kernel path {path}")
    source, isa, instructions = CEILINGS[path]
    before = ceiling(source, args.repeats, isa)
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        for geometry in GEOMETRIES:
            engine = Engine.load(w1a8_folder(geometry, Path(scratch) / geometry.replace(" ", "-")), threads=1)
            rows += [breakdown(geometry, engine, t, args.repeats, before) for t in TOKENS]
    after = ceiling(source, args.repeats, isa)  # the clock can move during the run: report both ends
    results = {"command": "python benchmarks/engine/ops.py " + " ".join(sys.argv[1:]), "cpu": cpu_model(),
               "path": path, "repeats": args.repeats, "ceiling_instructions": instructions,
               "ceiling_gmacs": [round(before / 1e9, 1), round(after / 1e9, 1)], "rows": rows}
    save(results, markdown(results), args.out, "ops.json", "ops.md")


if __name__ == "__main__":
    main()
