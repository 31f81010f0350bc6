"""Fuzz the packed-file loader: mutate a real packed model (header fields, tensor bytes, raw file
bytes, truncation), then load and run each mutant in a child process, on the torch runtime
(xtc.runtime.load) and on the torch-free engine (xtc predict, xtc eval). The only acceptable outcomes
are a clean ``XtcError`` or a valid run (finite logits); anything else (another exception, a crash of
the child, a hang) is a failure, listed with the mutation that caused it.

    python benchmarks/packed/fuzz.py --mutants 5000 --out benchmarks/packed/fuzz.json

The test suite runs a few hundred (tests/packed/test_fuzz.py).
"""

import argparse
import copy
import json
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

HERE = Path(__file__).resolve().parent
TEXTS = (["A man is playing a guitar.", "Cats sleep."], ["Someone plays music.", "Dogs bark."])
TIMEOUT_S = 60


# ---- the child: load and run each mutant it is given ---------------------------------------------

def worker() -> None:
    """Read folder paths from stdin; print one JSON outcome per folder."""
    import numpy as np
    import torch

    from xtc.engine import Engine
    from xtc.errors import XtcError
    from xtc.models import load_tokenizer
    from xtc.runtime import load

    def with_torch(folder):
        model = load(folder)
        batch = load_tokenizer(folder)(*TEXTS, padding=True, return_tensors="pt")
        with torch.no_grad():
            return model(**batch).logits.numpy()

    def with_engine(folder):  # the torch-free engine behind xtc predict and xtc eval
        engine = Engine.load(folder)
        return engine.logits(**engine.encode([list(t) for t in TEXTS], 128))

    for line in sys.stdin:
        folder = line.strip()
        outcomes = []
        for run in (with_torch, with_engine):
            try:
                logits = run(folder)
                ok = bool(np.isfinite(logits).all()) and logits.shape[0] == 2
                outcomes.append({"outcome": "ran" if ok else "bad output",
                                 "detail": "" if ok else f"{run.__name__}: {logits.tolist()}"[:200]})
            except XtcError as e:
                outcomes.append({"outcome": "clean error", "detail": f"{run.__name__}: {e}"[:300]})
            except Exception as e:  # noqa: BLE001 - exactly what the fuzzer looks for
                outcomes.append({"outcome": "exception", "detail": f"{run.__name__}: {type(e).__name__}: {e}"[:300]})
        bad = [o for o in outcomes if o["outcome"] not in ("clean error", "ran")]
        print(json.dumps(bad[0] if bad else outcomes[0]), flush=True)


class Child:
    """A worker process, restarted when a mutant kills it or hangs it."""

    def __init__(self):
        self.proc = None

    def run(self, folder: Path) -> dict:
        if self.proc is None or self.proc.poll() is not None:
            self.proc = subprocess.Popen([sys.executable, __file__, "--worker"], stdin=subprocess.PIPE,
                                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, bufsize=1)
        self.proc.stdin.write(f"{folder}\n")
        self.proc.stdin.flush()
        import selectors

        selector = selectors.DefaultSelector()
        selector.register(self.proc.stdout, selectors.EVENT_READ)
        if not selector.select(TIMEOUT_S):
            self.proc.kill()
            self.proc = None
            return {"outcome": "hang", "detail": f"no answer in {TIMEOUT_S} s"}
        line = self.proc.stdout.readline()
        if not line:
            code = self.proc.wait()
            self.proc = None
            return {"outcome": "crash", "detail": f"the child died (exit code {code})"}
        return json.loads(line)

    def close(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.stdin.close()
            self.proc.wait(timeout=30)


# ---- mutations ----------------------------------------------------------------------------------

def seed_folder(where: Path) -> Path:
    """A real packed model: bert-tiny with an MRPC head, W1A8 (the default preset)."""
    import xtc
    from xtc.data.tasks import get_task
    from xtc.models import load_model, load_tokenizer

    model, _ = load_model("bert-tiny", get_task("MRPC"))
    return xtc.export(xtc.quantize_(model, "w1a8"), where / "seed", load_tokenizer("bert-tiny"))


ODD_VALUES = [None, True, -1, 0, 1, 3, 7, 2**31, 10**12, -10**12, 1e308, float("nan"), "", "x", "binary", "fp16",
              "group", "static", [], [0], [1, 1, 1, 1, 1], [10**9, 10**9], {}, {"a": 1}, "1", 1.5]


def _paths(value, prefix=()):
    """Every path into a JSON value (dict keys and list indices)."""
    yield prefix
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _paths(v, (*prefix, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _paths(v, (*prefix, i))


def _set(root, path, value):
    target = root
    for key in path[:-1]:
        target = target[key]
    if isinstance(target, list) and isinstance(path[-1], int):
        target[path[-1]] = value
    else:
        target[path[-1]] = value


def _write(folder: Path, metadata: dict, tensors: dict, header: dict, fix_digests: bool) -> None:
    from xtc.packed.read import tensor_digests
    from safetensors.numpy import save_file

    if fix_digests and isinstance(header, dict):
        header["tensor_sha256"] = tensor_digests(tensors)
    metadata = {**metadata, "xtc_header": json.dumps(header, allow_nan=True)}
    save_file(tensors, folder / "packed.safetensors", metadata=metadata)


def mutate(seed: Path, out: Path, rng: random.Random) -> str:
    """Write one mutant of ``seed`` into ``out``; returns a description of the mutation."""
    import numpy as np
    from safetensors import safe_open
    from safetensors.numpy import save_file

    shutil.copytree(seed, out)
    weights = out / "packed.safetensors"
    with safe_open(seed / "packed.safetensors", "np") as f:
        metadata = f.metadata()
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    header = json.loads(metadata["xtc_header"])
    kind = rng.choice(["header field", "header field", "header field", "drop key", "tensor bytes",
                       "tensor bytes, checksum fixed", "file bytes", "truncate", "metadata", "tensor shape"])
    if kind in ("header field", "drop key"):
        section = rng.choice(["tensors", "tensors", "architecture", "quantization", "tokenizer_sha256"])
        paths = [p for p in _paths(header[section], (section,)) if len(p) > 1]
        path = rng.choice(paths)
        fixed = rng.random() < 0.8  # mostly with valid checksums, to reach the checks behind them
        if kind == "drop key":
            target = header
            for key in path[:-1]:
                target = target[key]
            del target[path[-1]]
            desc = f"drop {'.'.join(map(str, path))}"
        else:
            value = copy.deepcopy(rng.choice(ODD_VALUES))
            _set(header, path, value)
            desc = f"{'.'.join(map(str, path))} = {json.dumps(value)}"
        _write(out, metadata, tensors, header, fixed)
        return f"{kind}: {desc}{' (checksums fixed)' if fixed else ''}"
    if kind.startswith("tensor bytes"):
        name = rng.choice(sorted(tensors))
        array = tensors[name].copy()
        raw = array.view(np.uint8).reshape(-1)
        for _ in range(rng.choice([1, 1, 4, 64])):
            raw[rng.randrange(raw.size)] = rng.randrange(256)
        tensors[name] = array
        _write(out, metadata, tensors, header, kind.endswith("fixed"))
        return f"{kind}: {name}"
    if kind == "tensor shape":
        name = rng.choice(sorted(tensors))
        array = tensors[name]
        tensors[name] = array.reshape(-1)[: max(1, array.size - rng.randrange(1, 3))].copy()
        _write(out, metadata, tensors, header, True)
        return f"{kind}: {name} {list(array.shape)} -> {list(tensors[name].shape)}"
    if kind == "metadata":
        key = rng.choice(["xtc_format", "xtc_format_version", "xtc_header"])
        metadata = {**metadata, key: rng.choice(["", "2", "1", "3", "{}", "[]", "null", "xtc-packed", "\x00"])}
        save_file(tensors, weights, metadata=metadata)
        return f"{kind}: {key} = {metadata[key]!r}"
    data = bytearray(weights.read_bytes())
    if kind == "truncate":
        cut = rng.randrange(len(data))
        weights.write_bytes(bytes(data[:cut]))
        return f"truncate at {cut} of {len(data)}"
    spots = [rng.randrange(min(len(data), 4096)) if rng.random() < 0.5 else rng.randrange(len(data))
             for _ in range(rng.choice([1, 2, 8]))]
    for spot in spots:  # the safetensors header (first bytes) half of the time
        data[spot] = rng.randrange(256)
    weights.write_bytes(bytes(data))
    return f"file bytes at {spots}"


def fuzz(mutants: int, seed: int = 0, progress: bool = False) -> dict:
    rng = random.Random(seed)
    child = Child()
    results, failures = Counter(), []
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        origin = seed_folder(tmp)
        baseline = child.run(origin)
        assert baseline["outcome"] == "ran", baseline
        for i in range(mutants):
            folder = tmp / f"m{i}"
            desc = mutate(origin, folder, rng)
            outcome = child.run(folder)
            results[outcome["outcome"]] += 1
            if outcome["outcome"] not in ("clean error", "ran"):
                failures.append({"mutation": desc, **outcome})
            shutil.rmtree(folder)
            if progress and (i + 1) % 250 == 0:
                print(f"{i + 1}/{mutants}: {dict(results)}", file=sys.stderr, flush=True)
    child.close()
    return {"mutants": mutants, "seed": seed, "outcomes": dict(results), "failures": failures,
            "wall_time_s": round(time.perf_counter() - started, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mutants", type=int, default=5000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=HERE / "fuzz.json")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker()
    report = fuzz(args.mutants, args.seed, progress=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({k: v for k, v in report.items() if k != "failures"}), f"{len(report['failures'])} failures")
    for failure in report["failures"][:20]:
        print(failure)
    sys.exit(1 if report["failures"] else 0)


if __name__ == "__main__":
    main()
