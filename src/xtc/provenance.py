"""Where the running xtc code comes from, for results that say which code made them."""

import subprocess
from pathlib import Path


def __getattr__(name: str):
    """VERSION: the installed distribution's version (pyproject.toml is its one source), read on first use,
    since importing importlib.metadata is a sizeable part of a fresh process's start (xtc predict)."""
    if name == "VERSION":
        import importlib.metadata

        return importlib.metadata.version("xtc")
    raise AttributeError(f"module 'xtc.provenance' has no attribute {name!r}")


def source_commit() -> str | None:
    """The git commit (short) of the xtc source tree in use, or None for an installed copy."""
    package = Path(__file__).resolve().parent
    result = subprocess.run(["git", "-C", str(package), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    return result.stdout.strip() or None
