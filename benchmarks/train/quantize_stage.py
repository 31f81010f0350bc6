"""The training benchmarks' common run: the GLUE table's 3-layer student quantized to W1A8 by `xtc run`.

Imported by the scripts beside it (run as ``python benchmarks/train/NAME.py`` from the repository
root, which puts this folder on the import path). Needs the teachers and 3-layer students of the
previous GLUE table (benchmarks/glue/v1: runs/<task>-teacher, runs/glue/<task>/l3_fp32), and the
preset of that time (benchmarks/study/recipes/xtc-w1a8-l3-v1.yaml).
"""

import json
import os
import subprocess
from pathlib import Path

GLUE = "../shared/data/glue"


def run_quantize_stage(out: Path, task: str, rows: int, epochs: float, extra: list[str]) -> dict:
    """One thread, MiniLM-L6 teacher -> its 3-layer GLUE student -> W1A8 on ``rows`` training rows;
    returns the quantize stage's metrics.json (``wall_time_s``: its training wall time)."""
    slug = task.lower()
    subprocess.run(
        ["xtc", "run", "--recipe", "benchmarks/study/recipes/xtc-w1a8-l3-v1.yaml", "--model", "minilm-l6", "--task", task,
         "--teacher", f"runs/{slug}-teacher", "--reuse", f"layer_reduction=runs/glue/{slug}/l3_fp32",
         "--max-train-samples", str(rows), "--set", f"quantize.epochs={epochs}",
         "--glue-dir", GLUE, "--out", str(out), *extra],
        check=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return json.loads((out / "quantize" / "metrics.json").read_text())
