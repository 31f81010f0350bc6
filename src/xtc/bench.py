"""``xtc bench``: latency, throughput and memory of a packed model on the torch-free engine, one row per
(threads, batch, tokens) point, as OpenVINO's benchmark_app and llama-bench report them.

The inputs are random token ids (seeded) within the vocabulary, every token attended, token type 0:
the engine's time depends on the shapes only, so no text or tokenizer is needed. Nothing here imports
torch or transformers.
"""

import os
import platform
import resource
import sys
import time
from pathlib import Path

import numpy as np

from xtc import kernels
from xtc.engine import Engine
from xtc.errors import XtcError
from xtc.packed.layout import WEIGHTS_FILE
from xtc.progress import bar, interactive, note
from xtc.provenance import VERSION
from xtc.recipe import BenchConfig

SEED = 0
PERCENTILES = (50, 90, 99)


def bench(config: BenchConfig) -> dict:
    """``{"model", "machine", "settings", "rows"}``; rows in the order threads, batch, tokens."""
    points = [(t, b, n) for t in config.threads for b in config.batch for n in config.tokens]
    engine, loaded_threads, load_ms, rows = None, None, None, []
    progress = bar(points, desc="bench", unit="point", leave=False, enabled=len(points) > 1)
    for i, (threads, batch, tokens) in enumerate(progress):
        if threads != loaded_threads:  # one engine per thread count: its threads are set at load
            engine = None  # freed before the next one loads, so the peak memory holds one model
            start = time.perf_counter()
            engine = Engine.load(config.model, threads=threads)
            load_ms, loaded_threads = (time.perf_counter() - start) * 1e3, threads
            _check_tokens(config, engine)
        row = {"threads": threads, "batch": batch, "tokens": tokens, "load_ms": round(load_ms, 3),
               **_time_point(engine, batch, tokens, config.repeats, config.warmup)}
        rows.append(row)
        if not interactive() and len(points) > 1:  # a log gets a line per point instead of a bar
            note(f"bench {i + 1}/{len(points)}: threads {threads}, batch {batch}, tokens {tokens}: "
                 f"p50 {row['p50_ms']:.3f} ms", warning=True)  # on stderr: stdout is the table or JSON
    return {"model": _model_facts(config.model, engine), "machine": machine_facts(),
            "settings": {"threads": list(config.threads), "batch": list(config.batch), "tokens": list(config.tokens),
                         "repeats": config.repeats, "warmup": config.warmup, "seed": SEED,
                         "inputs": "random token ids within the vocabulary, attention mask all ones, token type 0",
                         "peak_rss": "the process's peak resident memory so far (ru_maxrss), after the point"},
            "rows": rows}


def _check_tokens(config: BenchConfig, engine: Engine) -> None:
    too_long = [n for n in config.tokens if n > engine.max_tokens]
    if too_long:
        raise XtcError(f"invalid value {too_long[0]} for --tokens: {config.model} takes 1 to {engine.max_tokens} "
                       "tokens (its position embeddings)")


def _time_point(engine: Engine, batch: int, tokens: int, repeats: int, warmup: int) -> dict:
    rng = np.random.default_rng(SEED)  # the same ids for a point whatever the grid around it
    ids = rng.integers(0, engine.config["vocab_size"], size=(batch, tokens), dtype=np.int64)
    mask, types = np.ones_like(ids), np.zeros_like(ids)
    for _ in range(warmup):
        engine.logits(ids, mask, types)
    seconds = np.empty(repeats)
    for r in range(repeats):
        start = time.perf_counter()
        engine.logits(ids, mask, types)
        seconds[r] = time.perf_counter() - start
    ms = seconds * 1e3
    p50, p90, p99 = np.percentile(ms, PERCENTILES)
    per_second = batch / seconds.mean()  # sequences timed / time spent on them
    return {"p50_ms": _digits(p50), "p90_ms": _digits(p90), "p99_ms": _digits(p99),
            "mean_ms": _digits(ms.mean()), "sequences_per_s": _digits(per_second),
            "tokens_per_s": _digits(per_second * tokens), "peak_rss_mb": round(peak_rss_bytes() / 1e6, 1)}


def _digits(x: float) -> float:
    """x to 5 significant digits: a sub-millisecond time keeps its precision, unlike a fixed number of decimals."""
    return float(f"{x:.5g}")


def peak_rss_bytes() -> int:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # bytes on macOS, KiB on Linux


def _model_facts(folder: str, engine: Engine) -> dict:
    return {"folder": str(folder), "file_bytes": (Path(folder) / WEIGHTS_FILE).stat().st_size,
            "model_type": engine.config["model_type"], "layers": engine.sizes["L"], "hidden_size": engine.sizes["H"],
            "max_tokens": engine.max_tokens}


def machine_facts() -> dict:
    return {"cpu": _cpu_model(), "cores": os.cpu_count(), "kernel_path": kernels.PATHS[-1],
            "platform": platform.platform(), "python": platform.python_version(), "numpy": np.__version__,
            "xtc": VERSION}


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:  # not Linux
        pass
    return platform.processor() or "unknown"


COLUMNS = [("threads", "threads", "d"), ("batch", "batch", "d"), ("tokens", "tokens", "d"),
           ("p50_ms", "p50 ms", ".3f"), ("p90_ms", "p90 ms", ".3f"), ("p99_ms", "p99 ms", ".3f"),
           ("mean_ms", "mean ms", ".3f"), ("sequences_per_s", "seq/s", ".1f"), ("tokens_per_s", "tok/s", ".0f"),
           ("peak_rss_mb", "peak RSS MB", ".1f")]


def format_table(result: dict) -> str:
    """The rows as right-aligned columns under two lines of model and machine facts."""
    model, machine, settings = result["model"], result["machine"], result["settings"]
    loads = {row["threads"]: row["load_ms"] for row in result["rows"]}
    loaded = ", ".join(f"{ms:.1f} ms ({t} thread{'s' * (t > 1)})" for t, ms in loads.items())
    lines = [f"model    {model['folder']}: {model['file_bytes'] / 1e6:.2f} MB, {model['model_type']} "
             f"{model['layers']} layer{'s' * (model['layers'] != 1)} of {model['hidden_size']}, loaded in {loaded}",
             f"machine  {machine['cpu']}, {machine['cores']} cores, kernels {machine['kernel_path']}; "
             f"{settings['repeats']} timed calls per point after {settings['warmup']} warm-up"]
    cells = [[header for _, header, _ in COLUMNS]]
    cells += [[format(row[key], spec) for key, _, spec in COLUMNS] for row in result["rows"]]
    widths = [max(len(r[c]) for r in cells) for c in range(len(COLUMNS))]
    lines += ["  ".join(cell.rjust(w) for cell, w in zip(r, widths)) for r in cells]
    lines.append("peak RSS: the process's peak so far, after each point")
    return "\n".join(lines)
