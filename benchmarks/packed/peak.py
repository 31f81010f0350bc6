"""How close the packed Linear and torch's dynamic int8 Linear come to this core's 8-bit multiply-add ceiling.

    python benchmarks/packed/peak.py [--repeats 30]

The ceiling: a loop of independent `vpdpbusd` (AVX-512 VNNI: 64 u8 x s8 multiply-adds each)
with no memory traffic (vnni_peak.c, assembly, built here with gcc). Beside it, the ceiling of
a T-MAC-style lookup kernel for 1-bit weights (lut_peak.c): `vpermw` lookups of 5-weight
partial sums plus the `vpaddw` that accumulates them, all in registers. Then, one thread, 128 tokens, the
BERT-base and MiniLM Linear shapes: multiply-adds per second (M x K x N / time) of torch's
dynamic int8 Linear (fbgemm) and of the packed W1A8 Linear, as a share of that ceiling. A
kernel near the ceiling can only get faster by doing fewer multiply-adds (lookup tables):
this is the measurement behind the README's discussion of the latency targets.
Results: peak.md beside this script.
"""

import argparse
import ctypes
import statistics
import subprocess
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

import numpy as np
import torch

from xtc import kernels

HERE = Path(__file__).parent
TOKENS = 128
SHAPES = [("BERT-base", 768, 768), ("BERT-base", 768, 3072), ("BERT-base", 3072, 768),
          ("MiniLM", 384, 384), ("MiniLM", 384, 1536), ("MiniLM", 1536, 384)]


def median_s(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def ceiling(source: str, repeats: int, isa: tuple[str, ...] = ("-mavx512f", "-mavx512bw", "-mavx512vnni")) -> float:
    """Multiply-adds (or the binary-weight multiply-adds that lookups replace) per second of one of
    the assembly loops beside this script (built with the ``isa`` flags), one thread."""
    with tempfile.TemporaryDirectory() as tmp:
        lib = Path(tmp) / "peak.so"
        subprocess.run(["gcc", "-O2", *isa, "-shared", "-fPIC", str(HERE / source), "-o", str(lib)], check=True)
        loop = ctypes.CDLL(str(lib))
        run = getattr(loop, source.removesuffix(".c"))
        run.argtypes = loop.macs_per_call.argtypes = [ctypes.c_int64]
        loop.macs_per_call.restype = ctypes.c_int64
        reps = 1_000_000
        return loop.macs_per_call(reps) / median_s(partial(run, reps), repeats)


def rows(repeats: int) -> list[dict]:
    torch.set_num_threads(1)
    kernels.set_num_threads(1)
    rng = np.random.default_rng(0)
    out = []
    for model, k, n in SHAPES:
        x = rng.standard_normal((TOKENS, k)).astype(np.float32)
        codes = rng.choice([-1, 1], (n, k)).astype(np.int8)
        weights, alpha = kernels.prepare(codes, 1), np.float32([0.1])
        int8 = torch.ao.quantization.quantize_dynamic(torch.nn.Sequential(torch.nn.Linear(k, n)),
                                                      dtype=torch.qint8)
        xt = torch.from_numpy(x)
        with torch.no_grad():
            t_int8 = median_s(partial(int8, xt), repeats)
        t_packed = median_s(partial(kernels.linear, x, weights, alpha), repeats)
        macs = TOKENS * k * n
        out.append({"model": model, "shape": f"{k}x{n}", "int8": macs / t_int8, "w1a8": macs / t_packed})
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args()
    if kernels.PATHS[-1] != "avx512-vnni":
        sys.exit(f"this benchmark measures the AVX-512 VNNI ceiling; this CPU's best kernel path is {kernels.PATHS[-1]}")
    vnni = ceiling("vnni_peak.c", args.repeats)
    lookups = ceiling("lut_peak.c", args.repeats)
    measured = rows(args.repeats)
    vnni_after = ceiling("vnni_peak.c", args.repeats)  # the clock can move during the run: report both ends
    lines = [f"# 8-bit multiply-add ceiling vs the Linear kernels (one thread, {TOKENS} tokens)\n",
             f"Made by `python benchmarks/packed/peak.py --repeats {args.repeats}`.\n",
             f"vpdpbusd ceiling: {vnni / 1e9:.0f} GMAC/s before the Linears, {vnni_after / 1e9:.0f} after.\n",
             (f"Lookup ceiling (`vpermw` + `vpaddw` over 5 binary weights, lut_peak.c): {lookups / 1e9:.0f} G "
              f"multiply-adds replaced per second, {lookups / max(vnni, vnni_after):.2f}x the vpdpbusd ceiling.\n"),
             "| model | shape (in x out) | torch int8 GMAC/s | % of ceiling | packed W1A8 GMAC/s | % of ceiling |",
             "|---|---|---|---|---|---|"]
    top = max(vnni, vnni_after)
    for r in measured:
        lines.append(f"| {r['model']} | {r['shape']} | {r['int8'] / 1e9:.0f} | {100 * r['int8'] / top:.0f}% "
                     f"| {r['w1a8'] / 1e9:.0f} | {100 * r['w1a8'] / top:.0f}% |")
    text = "\n".join(lines) + "\n"
    print(text)
    (HERE / "peak.md").write_text(text)


if __name__ == "__main__":
    main()
