"""`xtc bench` on a real packed model (the committed golden file the engine runs: 1 layer, 16 positions):
one row per point with consistent numbers, one clear line for bad --tokens, and no torch in a fresh
interpreter. Nothing here asserts a timing: a loaded machine makes any number possible."""

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from xtc import kernels
from xtc.cli import main
from xtc.packed.layout import FORMAT_VERSION, WEIGHTS_FILE

PACKED = Path(__file__).parent / "packed" / "golden" / f"v{FORMAT_VERSION}" / "ternary2-fp16-int8"
FAST = ["--repeats", "5", "--warmup", "1"]


def xtc(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_json_has_one_consistent_row_per_point():
    result = xtc("bench", PACKED, "--tokens", "4,16", "--batch", "1", "--batch", "3", "--threads", "1,2", *FAST,
                 "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    points = [(r["threads"], r["batch"], r["tokens"]) for r in report["rows"]]
    assert points == [(t, b, n) for t in (1, 2) for b in (1, 3) for n in (4, 16)]
    for row in report["rows"]:
        assert 0 < row["p50_ms"] <= row["p90_ms"] <= row["p99_ms"] and row["mean_ms"] > 0, row
        assert math.isclose(row["sequences_per_s"], row["batch"] * 1e3 / row["mean_ms"], rel_tol=1e-3), row
        assert math.isclose(row["tokens_per_s"], row["sequences_per_s"] * row["tokens"], rel_tol=1e-3), row
        assert row["load_ms"] > 0 and row["peak_rss_mb"] > 0
    peaks = [r["peak_rss_mb"] for r in report["rows"]]
    assert peaks == sorted(peaks)  # the process's peak so far never goes down
    assert len({r["load_ms"] for r in report["rows"] if r["threads"] == 1}) == 1  # one load per thread count
    assert report["model"]["file_bytes"] == (PACKED / WEIGHTS_FILE).stat().st_size
    assert report["model"]["max_tokens"] == 16
    assert report["machine"]["kernel_path"] == kernels.PATHS[-1] and report["machine"]["cores"] >= 1
    assert report["machine"]["cpu"]
    assert report["settings"]["repeats"] == 5 and report["settings"]["warmup"] == 1


def test_table_has_a_line_per_point():
    result = xtc("bench", PACKED, "--tokens", "2,8,16", *FAST)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if line.split()[:3] == ["threads", "batch", "tokens"])
    assert lines[0].startswith("model ") and "loaded in" in lines[0] and kernels.PATHS[-1] in lines[1]
    rows = [line.split() for line in lines[header + 1:header + 4]]
    assert [r[:3] for r in rows] == [["1", "1", "2"], ["1", "1", "8"], ["1", "1", "16"]]
    assert lines[header + 4].startswith("peak RSS: the process's peak so far")


@pytest.mark.parametrize("args, pattern", [
    (["--tokens", "4,17"], r"invalid value 17 for --tokens: .* takes 1 to 16 tokens"),
    ([], r"invalid value 32 for --tokens: .* 1 to 16 tokens"),  # the default 16,32,64,128 is too long here
    (["--tokens", "0"], r"for --tokens: 0 is not positive"),
    (["--tokens", "16,x"], r"for --tokens: 'x' is not a whole number"),
    (["--batch", "0"], r"for --batch: 0 is not positive"),
    (["--repeats", "0"], r"for --repeats"),
])
def test_bad_settings_are_one_line(args, pattern):
    result = xtc("bench", PACKED, *args, *FAST[2:])
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("xtc: error: "), result.stderr
    assert pytest.importorskip("re").search(pattern, lines[0]), lines[0]


def test_bench_imports_no_torch():
    code = ("import json, sys\nfrom xtc.cli import main\ntry:\n    main(sys.argv[1:])\nexcept SystemExit as e:\n"
            "    print(json.dumps(['exit', e.code, 'torch' in sys.modules, 'transformers' in sys.modules]))\n")
    result = subprocess.run([sys.executable, "-c", code, "bench", str(PACKED), "--tokens", "8",
                             "--repeats", "2", "--warmup", "0", "--json"], capture_output=True, text=True)
    *report, status = result.stdout.strip().splitlines()
    assert status == '["exit", 0, false, false]', result.stderr
    assert len(json.loads("\n".join(report))["rows"]) == 1
