#!/usr/bin/env bash
# The long benchmarks, one after the other, each resumable: the GLUE table (benchmarks/glue),
# then the shipped studies and their reports (benchmarks/study). Run from the repository root,
# in the background; run it again after an interruption and it carries on where it stopped:
#
#     nohup bash benchmarks/run_all.sh > runs/run_all.log 2>&1 &
#
# Two jobs at a time, one thread each (2 cores; xtc study sets the threads per cell). The GLUE runner commits each table cell as it
# finishes; the studies keep their results in runs/study*/results.jsonl and their reports are
# committed under benchmarks/study/ at the end.
set -euo pipefail
GLUE=../shared/data/glue

python benchmarks/glue/run_glue.py --jobs 2

for study in study study-stages; do
    xtc study "benchmarks/study/xtc-$study.yaml" --out "runs/$study" --jobs 2 --glue-dir "$GLUE"
    xtc report "runs/$study"
    mkdir -p "benchmarks/study/$study"
    cp -r "runs/$study/report.md" "runs/$study/report.html" "runs/$study/plots" "benchmarks/study/$study/"
    git add "benchmarks/study/$study"
    git commit -q -m "study: $study report" -- "benchmarks/study/$study" || true
done
