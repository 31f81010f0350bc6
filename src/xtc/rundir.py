"""Output folders of runs: refuse to mix two runs, reuse a finished identical one.

A run folder holds ``xtc_run.json`` (the settings that define the run) from its
start and ``metrics.json`` once it has finished.
"""

import fcntl
import json
import os
import shutil
from contextlib import contextmanager
from pathlib import Path

from xtc.errors import XtcError

RUN_FILE = "xtc_run.json"
METRICS_FILE = "metrics.json"
LOG_FILE = "train_log.jsonl"


@contextmanager
def claim(lock: Path, wait: bool):
    """Hold ``lock`` (an flock, released by the system if the process dies) for the block; yields False
    instead when another process holds it and not ``wait``. What lets several processes share work."""
    lock.parent.mkdir(parents=True, exist_ok=True)
    with lock.open("w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        yield True  # closing the file releases the lock


def prepare_run_dir(out: Path, settings: dict, overwrite: bool) -> bool:
    """Make ``out`` ready for the run; True if this exact run already finished there.

    The same run, unfinished, is left in place to resume from its checkpoint.
    """
    if out.exists() and not out.is_dir():
        raise XtcError(f"output path {str(out)!r} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()):
        run_file = out / RUN_FILE
        if not run_file.is_file():
            raise XtcError(
                f"output folder {str(out)!r} is not empty and holds no xtc run; choose a new or empty folder"
            )
        try:
            previous = json.loads(run_file.read_text())
        except json.JSONDecodeError:
            raise XtcError(f"{run_file} is corrupted; pass --overwrite to start the run again") from None
        same = _same_settings(previous, settings)
        if same and not overwrite:
            return (out / METRICS_FILE).is_file()
        if not same and not overwrite:
            changed = sorted(k for k in settings.keys() | previous.keys()
                             if not _same_settings(previous.get(k), settings.get(k)))
            raise XtcError(
                f"output folder {str(out)!r} holds a different run (differs in: {', '.join(changed)}); "
                "pass --overwrite to replace it, or choose another --out"
            )
        shutil.rmtree(out)  # --overwrite
    out.mkdir(parents=True, exist_ok=True)
    (out / RUN_FILE).write_text(json.dumps(settings, indent=2) + "\n")
    return False


def _same_settings(a, b) -> bool:
    """Equal settings, where a setting one side lacks counts as equal to an "off" value (None, False,
    empty) on the other: options added to xtc later, left off, do not make an old run different."""
    if isinstance(a, dict) and isinstance(b, dict):
        return all(_same_settings(a.get(k), b.get(k)) for k in a.keys() | b.keys())
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same_settings(x, y) for x, y in zip(a, b))
    off = (None, False, [], {})
    return a == b or (a in off and b in off)


def publish(scratch: Path, out: Path) -> None:
    """Move every file of ``scratch`` into ``out`` by rename (atomic per file), readable by all
    as the umask allows (safetensors writes its files owner-only)."""
    umask = os.umask(0)
    os.umask(umask)
    for f in scratch.iterdir():
        f.chmod(0o666 & ~umask)
        f.replace(out / f.name)


def write_json(path: Path, data: dict) -> None:
    """Write atomically: a reader never sees half a file."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    tmp.replace(path)


class JsonlLog:
    """Append-only JSON-lines log of a run (one object per event)."""

    def __init__(self, path: Path, enabled: bool = True):
        """``enabled=False``: a no-op log (the other processes of a multi-process run)."""
        self._file = path.open("a", buffering=1) if enabled else None

    def write(self, **event) -> None:
        if self._file is not None:
            self._file.write(json.dumps(event) + "\n")

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
