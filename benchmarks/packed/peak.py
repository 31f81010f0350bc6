"""How close the packed Linear and torch's dynamic int8 Linear come to this core's 8-bit multiply-add ceiling.

    python benchmarks/packed/peak.py [--repeats 30]

The ceiling: a loop of independent `vpdpbusd` (AVX-512 VNNI: 64 u8 x s8 multiply-adds each)
with no memory traffic (vnni_peak.c, assembly, built here with gcc). Then, one thread, 128 tokens, the
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


def vnni_ceiling(repeats: int) -> float:
    """Multiply-adds per second of the vpdpbusd loop, one thread."""
    with tempfile.TemporaryDirectory() as tmp:
        lib = Path(tmp) / "vnni_peak.so"
        subprocess.run(["gcc", "-O2", "-mavx512f", "-mavx512vnni", "-shared", "-fPIC", str(HERE / "vnni_peak.c"),
                        "-o", str(lib)], check=True)
        peak = ctypes.CDLL(str(lib))
        peak.vnni_peak.argtypes = peak.macs_per_call.argtypes = [ctypes.c_int64]
        peak.macs_per_call.restype = ctypes.c_int64
        reps = 2_000_000
        return peak.macs_per_call(reps) / median_s(lambda: peak.vnni_peak(reps), repeats)


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
    ceiling = vnni_ceiling(args.repeats)
    measured = rows(args.repeats)
    ceiling_after = vnni_ceiling(args.repeats)  # the clock can move during the run: report both ends
    lines = [f"# 8-bit multiply-add ceiling vs the Linear kernels (one thread, {TOKENS} tokens)\n",
             f"Made by `python benchmarks/packed/peak.py --repeats {args.repeats}`.\n",
             f"vpdpbusd ceiling: {ceiling / 1e9:.0f} GMAC/s before the Linears, {ceiling_after / 1e9:.0f} after.\n",
             "| model | shape (in x out) | torch int8 GMAC/s | % of ceiling | packed W1A8 GMAC/s | % of ceiling |",
             "|---|---|---|---|---|---|"]
    top = max(ceiling, ceiling_after)
    for r in measured:
        lines.append(f"| {r['model']} | {r['shape']} | {r['int8'] / 1e9:.0f} | {100 * r['int8'] / top:.0f}% "
                     f"| {r['w1a8'] / 1e9:.0f} | {100 * r['w1a8'] / top:.0f}% |")
    text = "\n".join(lines) + "\n"
    print(text)
    (HERE / "peak.md").write_text(text)


if __name__ == "__main__":
    main()
