"""A few hundred mutants of a real packed file (benchmarks/packed/fuzz.py runs thousands): each loads
and runs in a child process, and ends in a clean error or a valid run, never anything else."""

import importlib.util
from pathlib import Path

FUZZ = Path(__file__).resolve().parents[2] / "benchmarks" / "packed" / "fuzz.py"


def test_mutated_packed_files_give_clean_errors_or_valid_runs():
    spec = importlib.util.spec_from_file_location("fuzz", FUZZ)
    fuzz = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fuzz)
    report = fuzz.fuzz(mutants=200, seed=2026)
    assert report["failures"] == []
    assert report["outcomes"].get("clean error", 0) > 100  # the mutations reach the checks
