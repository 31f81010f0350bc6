"""The fake quantizers of one W1A8 training step, via the int8 codes vs direct, side by side.

    python benchmarks/train/fake_quant.py [--tokens 448] [--repeats 30]

A training step of a 3-layer MiniLM student fake-quantizes every Linear weight (1-bit, one
scale per matrix) and every Linear input (8-bit, one scale per token). ``dequantize(*codes)``
is the definition (what export stores); the training path computes the same values without
the int8 codes (``binarize``, ``quantize_activation_per_token``). Both are checked equal bit
for bit, then timed on one thread (best of ``--repeats``: the least disturbed run). Writes
fake_quant.md beside this script.
"""

import argparse
import timeit
from pathlib import Path

import torch

from xtc.quant.primitives import (
    binarize,
    binary_codes,
    dequantize,
    quantize_activation_per_token,
    symmetric_codes,
)

HERE = Path(__file__).parent
HIDDEN, INTERMEDIATE, LAYERS = 384, 1536, 3  # MiniLM-L6 geometry, 3 layers kept


def best_ms(fn, repeats: int) -> float:
    fn()  # warm-up
    return min(timeit.repeat(fn, number=1, repeat=repeats)) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=448, help="tokens per batch (32 x 14: CoLA, length-grouped)")
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--note", default="")
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    # per layer: Q, K, V, attention output (H x H), intermediate (H -> I), output (I -> H)
    weights = [torch.randn(o, i) for _ in range(LAYERS)
               for o, i in [(HIDDEN, HIDDEN)] * 4 + [(INTERMEDIATE, HIDDEN), (HIDDEN, INTERMEDIATE)]]
    inputs = [torch.randn(args.tokens, w.shape[1]) for w in weights]
    for w, x in zip(weights, inputs):
        assert torch.equal(binarize(w), dequantize(*binary_codes(w)))
        assert torch.equal(quantize_activation_per_token(x), dequantize(*symmetric_codes(x, 8, "row"), "row"))

    def where_signs(w):  # binary_codes and its fake quantization up to e6f184a: signs by torch.where over ints
        g = w.reshape(1, 1, -1)
        alpha = g.abs().sum(-1, keepdim=True) / g.shape[-1]
        return dequantize(torch.where(w >= 0, 1, -1).to(torch.int8), alpha)

    rows = []
    for name, via_codes, direct in [
        ("1-bit weights (18 matrices), codes by torch.where (xtc up to e6f184a)",
         lambda: [where_signs(w) for w in weights], lambda: [binarize(w) for w in weights]),
        ("1-bit weights (18 matrices)", lambda: [dequantize(*binary_codes(w)) for w in weights],
         lambda: [binarize(w) for w in weights]),
        (f"8-bit inputs ({args.tokens} tokens x 18)",
         lambda: [dequantize(*symmetric_codes(x, 8, "row"), "row") for x in inputs],
         lambda: [quantize_activation_per_token(x) for x in inputs]),
    ]:
        old, new = best_ms(via_codes, args.repeats), best_ms(direct, args.repeats)
        rows.append(f"| {name} | {old:.2f} | {new:.2f} | {old / new:.2f}x |")
    lines = ["# Fake quantization in one 3L W1A8 training step, 1 thread", "",
             f"Command: `python benchmarks/train/fake_quant.py --tokens {args.tokens} --repeats {args.repeats}`"
             + (f"  \n{args.note}" if args.note else ""), "",
             "| what | via int8 codes (ms) | direct (ms) | speed-up |", "|---|---|---|---|", *rows, "",
             "Both give the same tensors bit for bit (checked before timing)."]
    print("\n".join(lines))
    (HERE / "fake_quant.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
