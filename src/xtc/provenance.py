"""Where the running xtc code comes from, for results that say which code made them."""

import importlib.metadata
import subprocess
from pathlib import Path

# the installed distribution's version (pyproject.toml is its one source)
VERSION = importlib.metadata.version("xtc")


def source_commit() -> str | None:
    """The git commit (short) of the xtc source tree in use, or None for an installed copy."""
    package = Path(__file__).resolve().parent
    result = subprocess.run(["git", "-C", str(package), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    return result.stdout.strip() or None
