"""Run the XTC pipeline presets end to end on MiniLM-L6, as a user would, and record the results.

Run from the repository root, in the background (resumable: `xtc run` skips finished
stages and resumes an interrupted one; a recorded run is not run again):

    nohup python benchmarks/pipeline/run_pipeline.py > runs/pipeline.log 2>&1 &

For each run: the exact command, its final table, its wall time as a user sees it
(the whole command, model loading and tokenization included), go to results.json
and RESULTS.md, committed as each run finishes (``--no-commit`` to skip).
"""

import argparse
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

from xtc.provenance import source_commit

HERE = Path(__file__).parent
RESULTS = HERE / "results.json"
TABLE = HERE / "RESULTS.md"
RUNS = {
    "rte-w1": ["xtc", "run", "--recipe", "xtc-w1a8-l3", "--model", "minilm-l6", "--task", "RTE",
               "--glue-dir", "../shared/data/glue", "--out", "runs/rte-w1"],
    "mrpc-w2": ["xtc", "run", "--recipe", "xtc-w2a8-l3", "--model", "minilm-l6", "--task", "MRPC",
                "--glue-dir", "../shared/data/glue", "--out", "runs/mrpc-w2"],
}


def markdown(results: dict) -> str:
    parts = ["# XTC pipeline presets on MiniLM-L6 (GLUE dev, this machine: 2 CPU cores)\n"]
    for name, r in results.items():
        resumed = " (resumed after an interruption: the time covers the last invocation only)" if r["resumed"] else ""
        parts.append(f"## {name}\n\n```\n{r['command']}\n```\n\n{r['table']}\n\n"
                     f"Whole command: {r['wall_time_s'] / 60:.1f} min{resumed}; xtc commit {r['xtc_commit']}.\n")
    return "\n".join(parts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", nargs="*", default=list(RUNS))
    parser.add_argument("--no-commit", action="store_true")
    args = parser.parse_args()
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    for name in args.runs:
        if name in results:
            continue
        cmd = RUNS[name]
        out = Path(cmd[-1])
        resumed = out.exists()
        print("$", shlex.join(cmd), flush=True)
        started = time.perf_counter()
        proc = subprocess.run(cmd, check=True, stdout=subprocess.PIPE, text=True)
        wall = time.perf_counter() - started
        print(proc.stdout, flush=True)
        table = "\n".join(line for line in proc.stdout.splitlines() if line.startswith("|"))
        commit = source_commit()
        summary = json.loads((out / "summary.json").read_text())
        results[name] = {"command": shlex.join(cmd), "table": table, "stages": summary["stages"],
                         "wall_time_s": round(wall, 1), "resumed": resumed, "xtc_commit": commit}
        RESULTS.write_text(json.dumps(results, indent=2) + "\n")
        TABLE.write_text(markdown(results))
        if not args.no_commit:
            subprocess.run(["git", "add", str(RESULTS), str(TABLE)], check=True)
            subprocess.run(["git", "commit", "-q", "-m", f"pipeline: {name}", "--", str(RESULTS), str(TABLE)],
                           check=False)
    print(markdown(results), file=sys.stderr)


if __name__ == "__main__":
    main()
