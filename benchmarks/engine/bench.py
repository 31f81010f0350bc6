"""The xtc engine against the engines BERT is deployed with (issue 18): latency side by side, and a fresh process.

    python benchmarks/engine/bench.py                        # the full run: writes results.json, RESULTS.md here
    python benchmarks/engine/bench.py --quick --out /tmp/b   # a development run, under a minute

Variants: xtc W1A8 and W2A8 (packed folders run by ``xtc.engine.Engine``), torch FP32, torch dynamic int8,
ONNX Runtime dynamic int8, OpenVINO FP32 and int8 (nncf), CTranslate2 int8; random-weight BERT classifiers of
the 3L MiniLM and 6L BERT-base geometries (latency depends on shapes only). Before timing, every variant is
checked: xtc against its fake-quant torch model, the peers against torch FP32. A point's time is the median of
``--rounds`` rounds; in each round every variant runs ``--repeats`` times after a warm-up, variant after
variant, so that a slow spell of the machine falls on all of them alike. Run the full run on a quiet machine.

The fresh-process part starts a new interpreter that loads the 3L model (xtc W1A8, ONNX Runtime int8,
OpenVINO int8) and scores one sentence: wall time from start to exit, and peak RSS.
"""

import argparse
import copy
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from importlib.metadata import version
from pathlib import Path

import numpy as np
import torch
from threadpoolctl import threadpool_limits
from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification
from transformers.utils import logging as hf_logging

from xtc import kernels
from xtc.compression import export
from xtc.engine import Engine
from xtc.models import resolve_model
from xtc.quant.apply import quantize_
from xtc.quant.runtime_order import runtime_order_

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE.parent / "packed"))
from latency import int8_dynamic, median_ms  # noqa: E402 (the packed-runtime benchmark's: one warm-up run, median)
GEOMETRIES = {  # BertConfig fields; the 3L MiniLM one is that of our 3-layer students
    "3L MiniLM": {"hidden_size": 384, "intermediate_size": 1536, "num_attention_heads": 12, "num_hidden_layers": 3},
    "6L BERT-base": {"hidden_size": 768, "intermediate_size": 3072, "num_attention_heads": 12, "num_hidden_layers": 6},
}
VOCAB = 30522  # bert-base-uncased's, as the MiniLM tokenizer used for the packed folders
XTC = ["xtc W1A8", "xtc W2A8"]
PEERS = ["torch FP32", "torch int8", "ORT int8", "OpenVINO FP32", "OpenVINO int8", "CT2 int8"]
TOKENS, BATCH8_TOKENS = [16, 32, 64, 128], [128]
SENTENCE = "The film is a charming, funny and touching portrait of a family."
PEER_PACKAGES = [
    "torch", "onnxruntime", "onnx", "openvino", "nncf", "ctranslate2", "transformers", "tokenizers", "numpy",
]
NOTES = [
    "Random weights (seed 0), 2-label BertForSequenceClassification heads; inputs are random token ids, "
    "attention mask all ones, token types 0.",
    "CTranslate2's Encoder returns the pooler output: its classifier (384/768 -> 2) is applied in numpy, inside "
    "the timed call.",
    "OpenVINO FP32 is saved without fp16 weight compression and compiled with INFERENCE_PRECISION_HINT f32: on a "
    "CPU with AMX/AVX-512 BF16 OpenVINO would otherwise run bf16. OpenVINO int8 (nncf, 32 random calibration "
    "rows of 128 tokens) keeps the default precision for its non-quantized ops.",
    "Peak RSS of a fresh process is its VmHWM, read by the child at exit (ru_maxrss would count the parent's "
    "pages the child inherits across fork/exec).",
    "Fresh processes run with Python's bytecode cache on (PYTHONDONTWRITEBYTECODE unset) after one untimed run of "
    "each script, as an installed package runs: pip compiles every package's .pyc at install, and without them "
    "only xtc's editable checkout was compiled anew each run. The xtc script scores its sentence with "
    "Engine.predict (label and probability), which imports no numpy; Engine.logits takes and returns numpy arrays "
    "and so pays numpy's import on top.",
]


# ---- models -------------------------------------------------------------------------------------------------

def build(geometry: str, folder: Path) -> dict:
    """The geometry's FP32 model, its fake-quant W1A8/W2A8 models and every variant's files under ``folder``."""
    torch.manual_seed(0)
    # position_embedding_type: transformers 5 dropped the field, CTranslate2's converter still asserts it
    config = BertConfig(**GEOMETRIES[geometry], vocab_size=VOCAB, num_labels=2, position_embedding_type="absolute")
    model = BertForSequenceClassification(config).eval()
    tokenizer = AutoTokenizer.from_pretrained(resolve_model("minilm-l6"))
    model.save_pretrained(folder / "fp32")
    tokenizer.save_pretrained(folder / "fp32")  # tokenizer.json for the fresh processes, vocabulary for CT2
    fakes = {}
    for name in XTC:
        preset = name.split()[1].lower()
        fakes[name] = quantize_(copy.deepcopy(model), preset).eval()
        export(fakes[name], folder / preset, tokenizer)
    export_onnx(model, folder)
    export_openvino(folder)
    from ctranslate2.converters import TransformersConverter

    # The converter loads the folder as a BertModel (no classifier): the classifier is applied in numpy.
    TransformersConverter(str(folder / "fp32")).convert(str(folder / "ct2-int8"), quantization="int8")
    return {"model": model, "fakes": fakes, "folder": folder}


def export_onnx(model: torch.nn.Module, folder: Path) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    ids = torch.ones(1, 16, dtype=torch.long)
    names = ["input_ids", "attention_mask", "token_type_ids"]
    torch.onnx.export(model, (ids, torch.ones_like(ids), torch.zeros_like(ids)), folder / "fp32.onnx", dynamo=False,
                      input_names=names, output_names=["logits"],
                      dynamic_axes={name: {0: "batch", 1: "tokens"} for name in names})
    quantize_dynamic(folder / "fp32.onnx", folder / "int8.onnx", weight_type=QuantType.QInt8)


def export_openvino(folder: Path) -> None:
    """OpenVINO IR of the ONNX graph, FP32 and int8 (nncf post-training quantization, 32 random calibration rows)."""
    import nncf
    import openvino as ov

    model = ov.convert_model(folder / "fp32.onnx")
    ov.save_model(model, folder / "ov-fp32.xml", compress_to_fp16=False)  # (its default rounds weights to fp16)
    rng = np.random.default_rng(1)
    samples = [random_feed(rng, 1, 128) for _ in range(32)]
    int8 = nncf.quantize(model, nncf.Dataset(samples), model_type=nncf.ModelType.TRANSFORMER, subset_size=len(samples))
    ov.save_model(int8, folder / "ov-int8.xml", compress_to_fp16=False)


def random_feed(rng: np.random.Generator, batch: int, tokens: int) -> dict[str, np.ndarray]:
    ids = rng.integers(1000, VOCAB, size=(batch, tokens), dtype=np.int64)
    return {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}


# ---- runners: feed (numpy, B x T) -> logits (numpy, B x 2) --------------------------------------------------

def runners(built: dict, variants: list[str], threads: int) -> dict:
    folder, model = built["folder"], built["model"]
    makers = {
        "xtc W1A8": lambda: xtc_runner(folder / "w1a8", threads),
        "xtc W2A8": lambda: xtc_runner(folder / "w2a8", threads),
        "torch FP32": lambda: torch_runner(model),
        "torch int8": lambda: torch_runner(int8_dynamic(copy.deepcopy(model))),
        "ORT int8": lambda: ort_runner(folder / "int8.onnx", threads),
        "OpenVINO FP32": lambda: openvino_runner(folder / "ov-fp32.xml", threads, {"INFERENCE_PRECISION_HINT": "f32"}),
        "OpenVINO int8": lambda: openvino_runner(folder / "ov-int8.xml", threads, {}),
        "CT2 int8": lambda: ct2_runner(folder / "ct2-int8", model.classifier, threads),
    }
    return {v: makers[v]() for v in variants}


def xtc_runner(folder: Path, threads: int):
    engine = Engine.load(folder, threads=threads)
    return lambda feed: engine.logits(feed["input_ids"], feed["attention_mask"], feed["token_type_ids"])


def torch_runner(model: torch.nn.Module):
    def run(feed):
        with torch.inference_mode():
            return model(**{k: torch.from_numpy(v) for k, v in feed.items()}).logits.numpy()

    return run


def ort_runner(path: Path, threads: int):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return lambda feed: session.run(None, feed)[0]


def openvino_runner(path: Path, threads: int, extra: dict):
    import openvino as ov

    compiled = ov.Core().compile_model(path, "CPU", {"INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY",
                                                     **extra})
    request = compiled.create_infer_request()  # one request reused, as a latency-bound server does
    return lambda feed: request.infer(feed)[0]


def ct2_runner(path: Path, classifier: torch.nn.Linear, threads: int):
    import ctranslate2

    encoder = ctranslate2.Encoder(str(path), device="cpu", compute_type="int8", intra_threads=threads, inter_threads=1)
    weight, bias = classifier.weight.detach().numpy().T.copy(), classifier.bias.detach().numpy()

    def run(feed):  # token types are all 0, CT2's default when none are given
        ids = feed["input_ids"].astype(np.int32)
        lengths = feed["attention_mask"].sum(1).astype(np.int32)
        out = encoder.forward_batch(ctranslate2.StorageView.from_array(ids),
                                    ctranslate2.StorageView.from_array(lengths))
        return np.asarray(out.pooler_output) @ weight + bias

    return run


# ---- checks before timing -----------------------------------------------------------------------------------

def check(built: dict, run: dict) -> dict:
    """Each variant computes what it should, on 2 x 64 random tokens; returns each one's largest logit error
    relative to the largest reference logit. Peers: against torch FP32, within 1e-3 (FP32) or a loose 0.25 (int8:
    random weights give small logits). xtc: against its fake-quant model with the engine's float order
    (xtc.quant.runtime_order: the same 8-bit activation codes), within 1e-5 and the same predictions: what is
    left is the float rounding of the pooler's tanh. (In torch's own order, deep 8-bit activations
    flip borderline codes: on 6L BERT-base W2A8 the logits moved by 5.4e-2 of the largest, so this check used to
    allow 5e-2.) A wrong kernel gives errors of order 1."""
    feed = random_feed(np.random.default_rng(2), 2, 64)
    errors = {}
    for variant, fn in run.items():
        fake = built["fakes"].get(variant, built["model"])
        if variant in XTC:
            fake = runtime_order_(copy.deepcopy(fake))
        reference = torch_runner(fake)(feed)
        got = fn(feed)
        scale = np.abs(reference).max()
        errors[variant] = float(np.abs(got - reference).max() / scale)
        tolerance = 1e-5 if variant in XTC else 1e-3 if "FP32" in variant else 0.25
        print(f"  check {variant}: max |logit diff| = {errors[variant]:.2e} of the largest logit "
              f"(bound {tolerance:.1e})", flush=True)
        if errors[variant] > tolerance or (variant in XTC and (got.argmax(1) != reference.argmax(1)).any()):
            raise SystemExit(f"{variant} does not compute its reference model: {got} vs {reference}")
    return errors


# ---- timing -------------------------------------------------------------------------------------------------

def time_points(run: dict, points: list[tuple[int, int]], repeats: int, rounds: int) -> dict:
    """(batch, tokens) -> variant -> each round's median ms; rounds outermost and variants innermost, so that
    a drift of the machine's speed falls on every variant alike."""
    rng = np.random.default_rng(3)
    feeds = {point: random_feed(rng, *point) for point in points}
    times = {point: {v: [] for v in run} for point in points}
    for _ in range(rounds):
        for point, feed in feeds.items():
            for variant, fn in run.items():
                times[point][variant].append(median_ms(lambda: fn(feed), repeats))
    return times


def measure(geometry: str, built: dict, args) -> tuple[list[dict], dict]:
    rows, checks = [], {}
    points = [(1, t) for t in args.tokens] + [(8, t) for t in args.batch8_tokens]
    for threads in args.threads:
        torch.set_num_threads(threads)
        # numpy's BLAS (the engine's attention products today) must not take more cores than the others get
        with threadpool_limits(limits=threads, user_api="blas"):
            run = runners(built, args.variants, threads)
            print(f"{geometry}, {threads} thread(s):", flush=True)
            checks[str(threads)] = check(built, run)
            for (batch, tokens), per_variant in time_points(run, points, args.repeats, args.rounds).items():
                for variant, each in per_variant.items():
                    rows.append({"geometry": geometry, "variant": variant, "batch": batch, "tokens": tokens,
                                 "threads": threads, "ms": round(statistics.median(each), 3),
                                 "rounds_ms": [round(ms, 3) for ms in each]})
    return rows, checks


# ---- fresh process ------------------------------------------------------------------------------------------

_TOKENIZE = """
from tokenizers import Tokenizer
import numpy as np
tokenizer = Tokenizer.from_file({tokenizer!r})
tokenizer.enable_truncation(128)
tokenizer.no_padding()  # the file pads to 128: score the sentence at its own length, as Engine.encode does
e = tokenizer.encode({sentence!r})
feed = {{"input_ids": np.array([e.ids]), "attention_mask": np.array([e.attention_mask]),
         "token_type_ids": np.array([e.type_ids])}}
"""
FRESH = {
    "xtc W1A8": """
from xtc.engine import Engine
engine = Engine.load({folder!r} + "/w1a8", threads=1)
print(engine.predict([{sentence!r}], max_seq_length=128))
""",
    "ORT int8": _TOKENIZE + """
import onnxruntime as ort
options = ort.SessionOptions()
options.intra_op_num_threads, options.inter_op_num_threads = 1, 1
session = ort.InferenceSession({folder!r} + "/int8.onnx", options, providers=["CPUExecutionProvider"])
print(session.run(None, feed)[0])
""",
    "OpenVINO int8": _TOKENIZE + """
import openvino as ov
compiled = ov.Core().compile_model({folder!r} + "/ov-int8.xml", "CPU",
                                   {{"INFERENCE_NUM_THREADS": 1, "PERFORMANCE_HINT": "LATENCY"}})
print(compiled(feed)[0])
""",
}
_PEAK = "\nprint('VmHWM', open('/proc/self/status').read().split('VmHWM:')[1].split()[0])\n"


def fresh_processes(folder: Path, variants: list[str], rounds: int) -> list[dict]:
    """Each variant's one-sentence script in a new interpreter, ``rounds`` times in turn; median wall time."""
    scripts = {v: FRESH[v].format(folder=str(folder), tokenizer=str(folder / "fp32" / "tokenizer.json"),
                                  sentence=SENTENCE) + _PEAK for v in FRESH if v in variants}
    runs = {v: [] for v in scripts}
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    for script in scripts.values():  # writes the .pyc files an install has, and reads the files once
        subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True, env=env)
    for _ in range(rounds):
        for variant, script in scripts.items():
            start = time.perf_counter()
            out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True, env=env)
            wall_ms = (time.perf_counter() - start) * 1e3
            peak_mb = int(out.stdout.split("VmHWM")[-1]) / 1024
            runs[variant].append((wall_ms, peak_mb))
    return [{"variant": v, "wall_ms": round(statistics.median(w for w, _ in r), 1),
             "rounds_wall_ms": [round(w, 1) for w, _ in r], "peak_rss_mb": round(max(p for _, p in r), 1)}
            for v, r in runs.items()]


# ---- report -------------------------------------------------------------------------------------------------

def markdown(results: dict) -> str:
    lines = ["# xtc engine vs deployed BERT engines (issue 18)\n",
             f"Made by `{results['command']}` on {results['cpu']} ({results['cores']} cores), xtc kernel path "
             f"{results['xtc_kernel_path']}. Peers: "
             + ", ".join(f"{k} {v}" for k, v in results["versions"].items()) + ".\n",
             f"Median ms of {results['rounds']} interleaved rounds, each the median of {results['repeats']} runs "
             "after a warm-up. Ratio = fastest peer's ms / xtc W1A8's ms (above 1: W1A8 is faster).\n"]
    lines += [f"- {note}" for note in results["notes"]]
    rows = results["measurements"]
    for geometry in dict.fromkeys(r["geometry"] for r in rows):
        for threads in dict.fromkeys(r["threads"] for r in rows):
            table = [r for r in rows if r["geometry"] == geometry and r["threads"] == threads]
            variants = list(dict.fromkeys(r["variant"] for r in table))
            lines += [f"\n## {geometry}, {threads} thread{'s' if threads > 1 else ''}\n",
                      "| batch x tokens | " + " | ".join(variants) + " | xtc W1A8 vs fastest peer |",
                      "|---" * (len(variants) + 2) + "|"]
            for point in dict.fromkeys((r["batch"], r["tokens"]) for r in table):
                ms = {r["variant"]: r["ms"] for r in table if (r["batch"], r["tokens"]) == point}
                lines.append(f"| {point[0]} x {point[1]} | " + " | ".join(f"{ms[v]:.2f}" for v in variants)
                             + f" | {versus_fastest_peer(ms)} |")
    if results["fresh_process"]:
        lines += ["\n## Fresh process: load the 3L model, score one sentence (1 thread)\n",
                  "| variant | wall ms (median) | each round (ms) | peak RSS MB |", "|---|---|---|---|"]
        lines += [f"| {r['variant']} | {r['wall_ms']:.0f} | {', '.join(f'{w:.0f}' for w in r['rounds_wall_ms'])} | "
                  f"{r['peak_rss_mb']:.0f} |" for r in results["fresh_process"]]
    lines.append("\nBefore timing, max |logit difference| relative to the largest reference logit (xtc: against its "
                 "fake-quant model in the engine's float order, bound 1e-5; peers: against torch FP32):\n")
    for geometry, per_threads in results["checks"].items():
        for threads, errors in per_threads.items():
            lines.append(f"- {geometry}, {threads} thread(s): "
                         + ", ".join(f"{v} {e:.1e}" for v, e in errors.items()))
    return "\n".join(lines) + "\n"


def versus_fastest_peer(ms: dict) -> str:
    peers = {v: t for v, t in ms.items() if v in PEERS}
    if "xtc W1A8" not in ms or not peers:
        return "-"
    fastest = min(peers, key=peers.get)
    return f"{peers[fastest] / ms['xtc W1A8']:.2f}x ({fastest})"


def cpu_model() -> str:
    lines = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout.splitlines()
    return next((line.split(":", 1)[1].strip() for line in lines if line.startswith("Model name")), "?")


def save(results: dict, text: str, out: Path, json_name: str, md_name: str) -> None:
    """Print a script's Markdown table and write it and its JSON under ``out`` (the scripts of this folder)."""
    print(text)
    out.mkdir(parents=True, exist_ok=True)
    (out / json_name).write_text(json.dumps(results, indent=2) + "\n")
    (out / md_name).write_text(text)


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--geometry", nargs="+", choices=list(GEOMETRIES), default=list(GEOMETRIES))
    parser.add_argument("--tokens", nargs="*", type=int, default=TOKENS, help="batch 1 lengths")
    parser.add_argument("--batch8-tokens", nargs="*", type=int, default=BATCH8_TOKENS, help="batch 8 lengths")
    parser.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--variants", nargs="+", choices=XTC + PEERS, default=XTC + PEERS)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quick", action="store_true",
                        help="development run: 3L MiniLM, 1 thread, 1 x 16 and 8 x 128, 5 repeats, 1 round")
    parser.add_argument("--out", type=Path, help="folder for results.json and RESULTS.md (needed by a partial run)")
    args = parser.parse_args()
    full = not args.quick and all(getattr(args, k) == parser.get_default(k) for k in
                                  ("geometry", "tokens", "batch8_tokens", "threads", "variants", "repeats", "rounds"))
    if args.quick:
        args.geometry, args.threads, args.tokens, args.batch8_tokens = ["3L MiniLM"], [1], [16], [128]
        args.repeats, args.rounds = 5, 1
    if args.out is None and not full:
        parser.error("a partial or --quick run writes only to --out DIR (benchmarks/engine/ keeps the full run's)")
    args.variants = [v for v in XTC + PEERS if v in args.variants]  # the tables' column order
    return args


def main() -> None:
    args = parse_args()
    hf_logging.set_verbosity_error()  # CT2's converter reloads the classifier as a BertModel: a report per build
    results = {"command": "python benchmarks/engine/bench.py " + " ".join(sys.argv[1:]), "cpu": cpu_model(),
               "cores": len(os.sched_getaffinity(0)), "xtc_kernel_path": kernels.PATHS[-1],
               "versions": {p: version(p) for p in PEER_PACKAGES}, "repeats": args.repeats, "rounds": args.rounds,
               "notes": NOTES, "measurements": [], "checks": {}, "fresh_process": []}
    with tempfile.TemporaryDirectory() as scratch:
        for geometry in args.geometry:
            folder = Path(scratch) / geometry.replace(" ", "-")
            folder.mkdir()
            print(f"building {geometry} ...", flush=True)
            built = build(geometry, folder)
            rows, results["checks"][geometry] = measure(geometry, built, args)
            results["measurements"] += rows
            if geometry == "3L MiniLM":
                results["fresh_process"] = fresh_processes(folder, args.variants, args.rounds)
    save(results, markdown(results), args.out or HERE, "results.json", "RESULTS.md")


if __name__ == "__main__":
    main()
