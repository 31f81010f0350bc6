"""Read GLUE examples from a folder in the official layout, or from the hub.

Official files are tab-separated with quoting off (``csv.QUOTE_NONE``), as the
GLUE processors of transformers and datasets read them: some sentences start
with a bare ``"`` that is part of the text. Every malformed row is reported with
its file and line number.
"""

import csv
import io
import os
from dataclasses import dataclass
from pathlib import Path

from xtc.data.tasks import GlueTask
from xtc.errors import XtcError
from xtc.text import read_text

GLUE_DIR_ENV = "XTC_GLUE_DIR"
HUB_DATASET = "nyu-mll/glue"
_HUB_SPLITS = {
    "train": "train",
    "dev": "validation",
    "dev_matched": "validation_matched",
    "dev_mismatched": "validation_mismatched",
}


@dataclass(frozen=True)
class Example:
    texts: tuple[str, ...]  # one sentence, or a pair
    label: int | float  # class id, or a score for regression


def resolve_glue_dir(glue_dir: str | os.PathLike | None) -> Path | None:
    """The GLUE folder to read: the argument, else $XTC_GLUE_DIR, else None (the hub)."""
    chosen = glue_dir or os.environ.get(GLUE_DIR_ENV) or None
    if chosen is None:
        return None
    path = Path(chosen).expanduser()
    if not path.is_dir():
        raise XtcError(f"GLUE folder {str(path)!r} does not exist (from --glue-dir or ${GLUE_DIR_ENV})")
    return path


def load_examples(
    task: GlueTask,
    split: str,
    glue_dir: str | os.PathLike | None = None,
    max_samples: int | None = None,
) -> list[Example]:
    """Labelled examples of one split ('train', 'dev', or MNLI's 'dev_matched'/'dev_mismatched')."""
    filename = task.split_file(split)
    root = resolve_glue_dir(glue_dir)
    if root is None:
        examples = _read_hub(task, split)
    else:
        examples = read_tsv(task, root / task.name / filename)
    return examples if max_samples is None else examples[:max_samples]


def read_tsv(task: GlueTask, path: Path) -> list[Example]:
    """Parse one official GLUE file; raise XtcError naming the file and line on bad rows."""
    if not path.is_file():
        hint = "" if path.parent.is_dir() else f" (no {task.name}/ folder: is this a GLUE folder in the official layout?)"
        raise XtcError(f"missing GLUE file {path}{hint}")
    with io.StringIO(read_text(path), newline="") as f:
        rows = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        if task.has_header:
            header = next(rows, None)
            if header is None:
                raise XtcError(f"{path}: the file is empty")
            wanted = [*task.text_columns, task.label_column]
            missing = [c for c in wanted if c not in header]
            if missing:
                raise XtcError(f"{path}:1: header lacks column(s) {', '.join(map(repr, missing))}")
            text_idx = [header.index(c) for c in task.text_columns]
            label_idx = header.index(task.label_column)
            width = len(header)
        else:
            text_idx, label_idx, width = list(task.text_columns), task.label_column, task.num_columns
        label_ids = None if task.labels is None else {v: i for i, (v, _) in enumerate(task.labels)}
        examples = []
        for row in rows:
            where = f"{path}:{rows.line_num}"
            if len(row) != width:
                raise XtcError(f"{where}: expected {width} tab-separated columns, found {len(row)}")
            raw = row[label_idx]
            if label_ids is None:
                try:
                    label: int | float = float(raw)
                except ValueError:
                    raise XtcError(f"{where}: score {raw!r} is not a number") from None
            elif raw in label_ids:
                label = label_ids[raw]
            else:
                raise XtcError(f"{where}: label {raw!r} is not one of {', '.join(label_ids)}")
            examples.append(Example(tuple(row[i] for i in text_idx), label))
    if not examples:
        raise XtcError(f"{path}: no examples in the file")
    return examples


def _read_hub(task: GlueTask, split: str) -> list[Example]:
    try:
        import datasets

        data = datasets.load_dataset(HUB_DATASET, task.hub_config, split=_HUB_SPLITS[split])
    except Exception as e:  # network, missing cache, hub errors: all mean "no data here"
        raise XtcError(
            f"could not load GLUE {task.name} from the hub ({type(e).__name__}); "
            f"pass --glue-dir or set ${GLUE_DIR_ENV} to a folder in the official GLUE layout"
        ) from None
    columns = [data[field] for field in task.hub_text_fields]
    labels = data["label"]
    return [Example(tuple(texts), label) for *texts, label in zip(*columns, labels)]
