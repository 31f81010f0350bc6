"""Latency of the packed runtime vs torch FP32, torch dynamic int8 and ONNX Runtime dynamic int8.

    python benchmarks/packed/latency.py [--threads 1 2] [--repeats 20]

Run it on a quiet machine: every number is a median over ``--repeats`` runs, and
the ratios compare variants timed side by side in this one run (end to end: in ``--rounds``
interleaved turns, the median of the turns). Before timing,
each packed variant is checked against its fake-quant model (the packed path
must compute the same thing). Writes latency.md / latency.json beside this script.

Part 1: each Linear shape of BERT-base and MiniLM at 128 tokens.
Part 2: a 6-layer BERT-base geometry model end to end, batch 1 x 128 and 8 x 128
tokens, with the peak resident memory of a fresh process running each variant.
"""

import argparse
import copy
import json
import statistics
import subprocess
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer, BertConfig

from xtc import kernels
from xtc.models import resolve_model
from xtc.compression import export
from xtc.quant.apply import quantize_
from xtc.reduce import reduce_layers
from xtc.runtime import load

HERE = Path(__file__).parent
LINEAR_SHAPES = {"BERT-base": [(768, 768), (768, 3072), (3072, 768)], "MiniLM": [(384, 384), (384, 1536), (1536, 384)]}
TOKENS = 128


def median_ms(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def set_threads(n: int) -> None:
    torch.set_num_threads(n)  # the packed runtime follows it
    kernels.set_num_threads(n)  # the bare kernels of the Linear rows


def int8_dynamic(model: torch.nn.Module) -> torch.nn.Module:
    return torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)


def linear_rows(threads: int, repeats: int) -> list[dict]:
    from xtc.runtime import PackedLinear

    rows = []
    for family, shapes in LINEAR_SHAPES.items():
        for k, n in shapes:
            torch.manual_seed(0)
            x = torch.randn(TOKENS, k)
            fp = torch.nn.Sequential(torch.nn.Linear(k, n)).eval()
            int8 = int8_dynamic(copy.deepcopy(fp))
            timings = {}
            with torch.no_grad():
                timings["fp32"] = median_ms(partial(fp, x), repeats)
                timings["int8"] = median_ms(partial(int8, x), repeats)
                for preset in ("w1a8", "w2a8"):
                    fake = quantize_(copy.deepcopy(fp), _linear_rule(preset))
                    layer = PackedLinear.from_quant_linear(fake[0])
                    expected = fake(x)  # validate before timing: the packed layer computes the fake-quant one
                    assert torch.allclose(layer(x), expected, rtol=1e-4, atol=1e-4 * expected.abs().max()), preset
                    timings[preset] = median_ms(partial(layer, x), repeats)
            rows.append({"family": family, "shape": f"{k}x{n}", "threads": threads, "ms": timings})
    return rows


def _linear_rule(preset: str):
    from xtc.quant.config import QuantConfig, QuantRule

    return QuantConfig(rules=[QuantRule(pattern="0", weight_bits=int(preset[1]), act_bits=8)])


# ---- end to end -----------------------------------------------------------------------------------

def build_models(tmp: Path) -> dict[str, Path]:
    """The 6-layer BERT-base geometry models, written once: FP32 folder, ONNX int8, packed W1A8/W2A8."""
    torch.manual_seed(0)
    teacher = AutoModelForSequenceClassification.from_config(BertConfig(num_labels=2)).eval()
    student = reduce_layers(teacher, [1, 3, 5, 7, 9, 11]).eval()
    tokenizer = AutoTokenizer.from_pretrained(resolve_model("minilm-l6"))
    paths = {"fp32": tmp / "fp32"}
    student.save_pretrained(paths["fp32"])
    for preset in ("w1a8", "w2a8"):
        paths[preset] = export(quantize_(copy.deepcopy(student), preset), tmp / preset, tokenizer)
    try:
        from onnxruntime.quantization import QuantType, quantize_dynamic

        ids = torch.ones(1, TOKENS, dtype=torch.long)
        torch.onnx.export(student, (ids, torch.ones_like(ids)), tmp / "fp32.onnx", dynamo=False,
                          input_names=["input_ids", "attention_mask"], output_names=["logits"],
                          dynamic_axes={"input_ids": {0: "b", 1: "t"}, "attention_mask": {0: "b", 1: "t"}})
        quantize_dynamic(tmp / "fp32.onnx", tmp / "int8.onnx", weight_type=QuantType.QInt8)
        paths["ort-int8"] = tmp / "int8.onnx"
    except Exception as e:  # noqa: BLE001 (any failure of the ONNX export: report it, and time the others)
        print(f"ONNX Runtime int8 skipped: {type(e).__name__}: {e}", file=sys.stderr)
    return paths


def worker(variant: str, path: str, threads: int, batch: int, repeats: int) -> dict:
    """Load one variant in this (fresh) process, time it, report its peak memory."""
    set_threads(threads)
    ids = torch.randint(1000, 30000, (batch, TOKENS))
    mask = torch.ones_like(ids)
    if variant == "ort-int8":
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
        session = ort.InferenceSession(path, options)
        feed = {"input_ids": ids.numpy(), "attention_mask": mask.numpy()}
        run = lambda: session.run(None, feed)
    else:
        if variant in ("fp32", "torch-int8"):
            model = AutoModelForSequenceClassification.from_pretrained(path).eval()
            model = int8_dynamic(model) if variant == "torch-int8" else model
        else:
            model = load(path)
        run = lambda: model(input_ids=ids, attention_mask=mask)
    with torch.no_grad():
        ms = median_ms(run, repeats)
    return {"ms": ms, "peak_mb": peak_rss_mb()}


def peak_rss_mb() -> float:
    """This process's peak resident memory (VmHWM: unlike ru_maxrss, not inherited across exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def end_to_end_rows(paths: dict[str, Path], threads: int, repeats: int, rounds: int) -> list[dict]:
    """Each variant in a fresh process, ``rounds`` times in turn (variant after variant, then again), so
    that a slow spell of this shared machine falls on every variant rather than on one; a variant's
    time is the median of its rounds' medians."""
    rows = []
    variants = [v for v in ("fp32", "torch-int8", "ort-int8", "w1a8", "w2a8")
                if paths.get("fp32" if v == "torch-int8" else v) is not None]
    for batch in (1, 8):
        runs = {v: [] for v in variants}
        for _ in range(rounds):
            for variant in variants:
                path = paths["fp32" if variant == "torch-int8" else variant]
                out = subprocess.run([sys.executable, __file__, "--worker", variant, str(path), str(threads),
                                      str(batch), str(repeats)], capture_output=True, text=True, check=True)
                runs[variant].append(json.loads(out.stdout.strip().splitlines()[-1]))
        result = {v: {"ms": statistics.median(r["ms"] for r in rs), "ms_rounds": [round(r["ms"], 2) for r in rs],
                      "peak_mb": max(r["peak_mb"] for r in rs)} for v, rs in runs.items()}
        rows.append({"batch": batch, "threads": threads, "results": result})
    return rows


def check_packed_end_to_end(paths: dict[str, Path]) -> None:
    """Before timing: the packed model computes what its fake-quant model computes."""
    student = AutoModelForSequenceClassification.from_pretrained(paths["fp32"]).eval()
    ids = torch.randint(1000, 30000, (2, 32))
    for preset in ("w1a8", "w2a8"):
        fake = quantize_(copy.deepcopy(student), preset).eval()
        with torch.no_grad():
            expected, got = fake(input_ids=ids).logits, load(paths[preset])(input_ids=ids).logits
        assert torch.allclose(got, expected, rtol=0.05, atol=0.05 * expected.abs().max()), (preset, got, expected)


def markdown(linear: list[dict], e2e: list[dict]) -> str:
    lines = ["## Linear layers, 128 tokens (median ms; ratio = int8 time / packed time)\n",
             ("| model | shape (in x out) | threads | FP32 | torch int8 | W1A8 | W2A8 | W1A8 vs int8 | W1A8 vs FP32 | "
              "W2A8 vs int8 |"), "|---|---|---|---|---|---|---|---|---|---|"]
    for r in linear:
        t = r["ms"]
        lines.append(f"| {r['family']} | {r['shape']} | {r['threads']} | {t['fp32']:.2f} | {t['int8']:.2f} | "
                     f"{t['w1a8']:.2f} | {t['w2a8']:.2f} | {t['int8'] / t['w1a8']:.2f}x | {t['fp32'] / t['w1a8']:.2f}x | "
                     f"{t['int8'] / t['w2a8']:.2f}x |")
    lines += ["\n## 6-layer BERT-base geometry, end to end, 128 tokens (median ms, peak RSS MB)\n",
              "| batch | threads | variant | ms | each round (ms) | peak MB | vs torch int8 |",
              "|---|---|---|---|---|---|---|"]
    for r in e2e:
        base = r["results"]["torch-int8"]["ms"]
        for variant, v in r["results"].items():
            each = ", ".join(f"{ms:.1f}" for ms in v["ms_rounds"])
            lines.append(f"| {r['batch']} | {r['threads']} | {variant} | {v['ms']:.1f} | {each} | {v['peak_mb']:.0f} | "
                         f"{base / v['ms']:.2f}x |")
    return "\n".join(lines)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        variant, path, threads, batch, repeats = sys.argv[2:7]
        print(json.dumps(worker(variant, path, int(threads), int(batch), int(repeats))))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", nargs="*", type=int, default=[1, 2])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3, help="end to end: each variant's turns, interleaved")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        tmp = Path(scratch)
        paths = build_models(tmp)
        check_packed_end_to_end(paths)
        linear, e2e = [], []
        for threads in args.threads:
            set_threads(threads)
            linear += linear_rows(threads, args.repeats)
            e2e += end_to_end_rows(paths, threads, args.repeats, args.rounds)
    text = markdown(linear, e2e)
    print(text)
    (HERE / "latency.md").write_text(f"# Packed runtime latency\n\nMade by `python benchmarks/packed/latency.py "
                                     f"--threads {' '.join(map(str, args.threads))} --repeats {args.repeats} --rounds {args.rounds}` on "
                                     f"{kernels_info()}.\n\n{text}\n")
    (HERE / "latency.json").write_text(json.dumps({"linear": linear, "end_to_end": e2e}, indent=2) + "\n")


def kernels_info() -> str:
    cpuinfo = Path("/proc/cpuinfo").read_text().splitlines()
    cpu = next((line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")), "?")
    return f"{cpu}, kernel path {kernels.PATHS[-1]}, kernel threads: {kernels.threading()}"


if __name__ == "__main__":
    main()
