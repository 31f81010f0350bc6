#!/usr/bin/env bash
# The long benchmarks, each resumable: the GLUE table (benchmarks/glue), then the float32 1-bit
# ablation and its report (benchmarks/study). (The shipped studies, xtc-study.yaml and
# xtc-study-stages.yaml, quantize the previous table's students, benchmarks/glue/v1: run them from
# xtc commit 00b5320, whose run_all.sh made that table first.) Run from the repository root, in the background; run it
# again after an interruption and it carries on where it stopped:
#
#     nohup bash benchmarks/run_all.sh > runs/run_all.log 2>&1 &
#
# Two workers, one per core, each running one job at a time with one thread: the GLUE tasks,
# then the cells of each study. A task or a cell is claimed by one worker (lock files), so a
# worker with nothing left of the GLUE table (while the other trains the last task) starts on
# the studies instead of leaving its core idle. The GLUE runner commits each table cell as it
# finishes; the study keeps its results in runs/<study>/results.jsonl, and its report is
# committed under benchmarks/study/ once both workers are done.
set -euo pipefail
GLUE=../shared/data/glue
STUDIES=(ablation-fp32)  # its float32 teachers (runs/teachers-fp32): the grid's STS-B and CoLA cells

float32_teacher() {  # TASK LR: the study's teacher, unless there (the table's may be bf16 on this machine)
    [ -f "runs/teachers-fp32/$1/lr$2-ep10/metrics.json" ] || OMP_NUM_THREADS=1 xtc finetune --model minilm-l6 --task "$1" \
        --glue-dir "$GLUE" --lr "$2" --epochs 10 --group-by-length --out "runs/teachers-fp32/$1/lr$2-ep10"
}

worker() {
    python benchmarks/glue/run_glue.py --jobs 1
    (flock 9; float32_teacher STS-B 5e-5; float32_teacher CoLA 1e-4) 9> runs/teachers-fp32.lock  # one worker trains them
    for study in "${STUDIES[@]}"; do
        xtc study "benchmarks/study/xtc-$study.yaml" --out "runs/$study" --jobs 1 --threads 1 --glue-dir "$GLUE"
    done
}

worker & first=$!
sleep 5
worker & second=$!
failed=0
wait "$first" || failed=1
wait "$second" || failed=1
[ "$failed" = 0 ] || { echo "a worker failed; see runs/glue-*.log and runs/ablation-fp32/cells/*.log" >&2; exit 1; }

for study in "${STUDIES[@]}"; do
    xtc report "runs/$study"
    mkdir -p "benchmarks/study/$study"
    cp -r "runs/$study/report.md" "runs/$study/report.html" "runs/$study/plots" "benchmarks/study/$study/"
    git add "benchmarks/study/$study"
    git commit -q -m "study: $study report" -- "benchmarks/study/$study" || true
done
