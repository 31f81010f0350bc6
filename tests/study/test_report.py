"""The report's statistics, on a results file in the format the runner writes."""

import json

import pytest

from xtc.errors import XtcError
from xtc.study.report import latest_records, write_report


def record(cell, lr, seed, f1, acc, status="ok"):
    base = {"cell": cell, "task": "MRPC", "settings": {"quantize.lr": lr, "seed": seed}, "recipe": "xtc-w1a8-l3",
            "seed": seed, "status": status}
    if status != "ok":
        return {**base, "error": "xtc: error: boom"}
    return {**base, "dev": {"f1": f1, "accuracy": acc, "score": (f1 + acc) / 2}, "bits": "W1A8", "layers": 3,
            "size_mb": 2.5, "wall_time_s": 120.0, "stage": "quantize"}


@pytest.fixture
def study_dir(tmp_path):
    (tmp_path / "study.json").write_text(json.dumps({"description": "lr", "model": "minilm-l6", "recipe": "xtc-w1a8-l3",
                                                     "tasks": ["MRPC"], "grid": {"quantize.lr": [1e-4, 5e-5],
                                                                                  "seed": [1, 2]}}))
    rows = [record("a", 1e-4, 1, 0.80, 0.70), record("b", 1e-4, 2, 0.84, 0.74),
            record("c", 5e-5, 1, 0.0, 0.0, status="failed"), record("c", 5e-5, 1, 0.90, 0.80),  # retried: ok
            record("d", 5e-5, 2, 0.90, 0.80)]
    (tmp_path / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return tmp_path


def test_mean_and_std_over_seeds(study_dir):
    assert [r["status"] for r in latest_records(study_dir)] == ["ok"] * 4
    text = write_report(study_dir).read_text()
    # lr 1e-4: f1 (80, 84) -> 82.00 ± 2.83; accuracy (70, 74) -> 72.00 ± 2.83; lr 5e-5 first (higher score)
    rows = [line for line in text.splitlines() if line.startswith("| 0.0001") or line.startswith("| 5e-05")]
    assert rows == ["| 5e-05 | 90.00 ± 0.00 | 80.00 ± 0.00 | 2 | W1A8 | 2.50 | 2.0 min |",
                    "| 0.0001 | 82.00 ± 2.83 | 72.00 ± 2.83 | 2 | W1A8 | 2.50 | 2.0 min |"]
    assert "Failed cells" not in text
    assert (study_dir / "plots" / "by_quantize_lr.png").is_file()


def test_not_a_study(tmp_path):
    with pytest.raises(XtcError, match="not a study folder"):
        write_report(tmp_path)
