"""How the engine scales from 1 to 2 threads when nothing else is loaded (issue 18's 2-thread target).

    python benchmarks/engine/threads.py [--rounds 3] [--calls 40]

bench.py times every engine in one process, beside torch's, ONNX Runtime's, OpenVINO's and CTranslate2's
thread pools. Here the W1A8 folders of bench.py's geometries (random weights) are built first, then timed in
a fresh interpreter that imports xtc only (its own thread pool, no OpenMP runtime): Engine.logits on random
ids, 1 and 2 threads interleaved, rounds outermost, `--calls` calls per round (a fifth of them at batch 8).
Results: threads.md and threads.json beside this script (or --out).
"""

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).parent
POINTS = [("3L MiniLM", 1, 16), ("3L MiniLM", 1, 128), ("3L MiniLM", 8, 128), ("6L BERT-base", 1, 128),
          ("6L BERT-base", 8, 128)]

# Run in the fresh interpreter: argv = folder per geometry (JSON), points (JSON), rounds, calls.
TIMER = """
import json, statistics, sys, time
import numpy as np
from xtc.engine import Engine
from xtc import kernels
folders, points, rounds, calls = json.loads(sys.argv[1]), json.loads(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
rows = []
for geometry, batch, tokens in points:
    engines = {t: Engine.load(folders[geometry], threads=t) for t in (1, 2)}
    ids = np.random.default_rng(1).integers(1000, 30522, (batch, tokens))
    n = calls if batch == 1 else max(1, calls // 5)
    ms = {1: [], 2: []}
    for _ in range(rounds):
        for t, engine in engines.items():
            engine.logits(ids)
            for _ in range(n):
                start = time.perf_counter()
                engine.logits(ids)
                ms[t].append((time.perf_counter() - start) * 1e3)
    rows.append({"geometry": geometry, "batch": batch, "tokens": tokens,
                 "median_ms": {t: round(statistics.median(v), 3) for t, v in ms.items()},
                 "best_ms": {t: round(min(v), 3) for t, v in ms.items()}})
print(json.dumps({"threading": kernels.threading(), "torch_loaded": "torch" in sys.modules, "rows": rows}))
"""


def markdown(results: dict) -> str:
    lines = ["# The engine alone: 1 vs 2 threads\n",
             f"Made by `{results['command']}` on {results['cpu']}: xtc W1A8, random weights, a fresh interpreter "
             f"that imports xtc only (thread pool: {results['threading']}, torch loaded: {results['torch_loaded']}), "
             f"{results['rounds']} interleaved rounds; median ms (best in brackets).\n",
             "| geometry | batch x tokens | 1 thread | 2 threads | 2 vs 1: medians (bests) |", "|---|---|---|---|---|"]
    for r in results["rows"]:
        (one, two), (best1, best2) = r["median_ms"].values(), r["best_ms"].values()
        lines.append(f"| {r['geometry']} | {r['batch']} x {r['tokens']} | {one:.2f} ({best1:.2f}) | "
                     f"{two:.2f} ({best2:.2f}) | {one / two:.2f}x ({best1 / best2:.2f}x) |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--calls", type=int, default=40)
    parser.add_argument("--out", type=Path, default=HERE)
    args = parser.parse_args()
    sys.path.insert(0, str(HERE))
    from bench import cpu_model, save
    from ops import w1a8_folder

    with tempfile.TemporaryDirectory() as scratch:
        geometries = dict.fromkeys(g for g, _, _ in POINTS)
        folders = {g: str(w1a8_folder(g, Path(scratch) / g.replace(" ", "-"))) for g in geometries}
        done = subprocess.run([sys.executable, "-c", TIMER, json.dumps(folders), json.dumps(POINTS), str(args.rounds),
                               str(args.calls)], capture_output=True, text=True, check=True)
    results = {"command": "python benchmarks/engine/threads.py " + " ".join(sys.argv[1:]), "cpu": cpu_model(),
               "rounds": args.rounds, "calls": args.calls, **json.loads(done.stdout)}
    save(results, markdown(results), args.out, "threads.json", "threads.md")


if __name__ == "__main__":
    main()
