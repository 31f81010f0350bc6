#!/bin/bash
# A new user's first hour, scaled down (bert-tiny, tiny budgets): the README's commands and careless inputs.
# Prints each command's exit code; any Python traceback is a failure.
GLUE=${GLUE:-$(cd "$(dirname "$0")/../../../shared/data/glue" 2>/dev/null && pwd)}
WORK=$(mktemp -d) && cd "$WORK"
G=$GLUE
T="--set teacher.max_steps=8 --set layer_reduction.max_steps=8 --set quantize_w2a8.max_steps=8 --set quantize.max_steps=8 --max-train-samples 64 --max-eval-samples 32"
run() { echo "\$ $*"; "$@" > out.txt 2>&1; rc=$?; tail -3 out.txt | sed 's/^/    /'; echo "    rc=$rc"; grep -q Traceback out.txt && echo "    TRACEBACK!"; }
run xtc run --recipe xtc-w1a8-l3 --model bert-tiny --task RTE --glue-dir $G --out runs/rte-w1 $T --set layer_reduction.layers=[1]
run xtc eval runs/rte-w1/quantize --task RTE --glue-dir $G --max-eval-samples 32
run xtc export runs/rte-w1/quantize --out runs/rte-w1/packed
run xtc size runs/rte-w1/packed
run xtc eval runs/rte-w1/packed --task RTE --glue-dir $G --max-eval-samples 32
run xtc eval runs/rte-w1/packed --task MRPC --glue-dir $G --max-eval-samples 32
run xtc predict runs/rte-w1/packed --text "A man plays." --text-pair "Someone plays."
run xtc predict runs/rte-w1/packed --text "A man plays."
printf 'caf\xe9\tun\n' > latin1.tsv; run xtc predict runs/rte-w1/packed --input latin1.tsv
: > empty.tsv; run xtc predict runs/rte-w1/packed --input empty.tsv
run xtc predict runs/rte-w1/packed
run xtc run --recipe xtc-w1a8-l3 --model bert-tiny --task RTE --glue-dir $G --out runs/x --set quantize.layers=[1,9] --dry-run
run xtc run --recipe xtc-w1a8-l3 --model bert-tiny --task RTE --glue-dir $G --out runs/x --set 'quantize.quant={rules: [{pattern: ".*query", weight_bits: 1, act_bits: 8, act_mode: static}]}' --set layer_reduction.layers=[1]
run xtc run --recipe nope --task RTE --out runs/x
run xtc run --recipe xtc-w1a8-l3 --task XYZ --out runs/x
run xtc finetune --model bert-tiny --task RTE --out runs/t --lr abc
run xtc export runs/rte-w1/teacher --out runs/p2
run xtc size runs/nowhere
run xtc report runs/rte-w1
run xtc study /etc/hostname --out runs/s
