"""Shared fixtures: the real GLUE files in ../shared/data/glue and the real bert-tiny model."""

import os
from pathlib import Path

import pytest
import torch

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# The tiny test models gain nothing from a second thread, and a second thread
# fighting another job for the two cores makes every step many times slower.
torch.set_num_threads(1)

REPO = Path(__file__).resolve().parents[1]
GLUE_DIR = Path(os.environ.get("XTC_TEST_GLUE_DIR", REPO.parent / "shared" / "data" / "glue"))


@pytest.fixture(scope="session")
def glue_dir() -> Path:
    assert (GLUE_DIR / "RTE" / "train.tsv").is_file(), f"GLUE data not found at {GLUE_DIR}"
    return GLUE_DIR


@pytest.fixture(autouse=True)
def _no_glue_env(monkeypatch):
    """Tests choose their GLUE folder explicitly."""
    monkeypatch.delenv("XTC_GLUE_DIR", raising=False)
