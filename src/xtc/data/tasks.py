"""The nine GLUE tasks: where their text and labels are, and how they are scored.

Everything task-specific lives in the ``GLUE_TASKS`` table; readers, metrics and
the training loop only consult it.
"""

from dataclasses import dataclass

from xtc.errors import XtcError


@dataclass(frozen=True)
class GlueTask:
    name: str  # canonical name, also the folder name in the official layout
    hub_config: str  # config name in the `nyu-mll/glue` hub dataset
    # Columns in the official TSV files: header names, or 0-based indices when
    # the file has no header (CoLA).
    text_columns: tuple[str, ...] | tuple[int, ...]
    label_column: str | int
    # (value in the TSV file, label name); index = class id. None for regression.
    labels: tuple[tuple[str, str], ...] | None
    metrics: tuple[str, ...]  # official metrics, the first is the headline
    hub_text_fields: tuple[str, ...]
    # dev split name -> file; MNLI has two dev sets.
    dev_files: tuple[tuple[str, str], ...] = (("dev", "dev.tsv"),)
    has_header: bool = True
    num_columns: int | None = None  # only for header-less files

    @property
    def is_regression(self) -> bool:
        return self.labels is None

    @property
    def num_labels(self) -> int:
        return 1 if self.labels is None else len(self.labels)

    @property
    def label_names(self) -> list[str]:
        return [] if self.labels is None else [name for _, name in self.labels]

    @property
    def is_pair(self) -> bool:
        return len(self.text_columns) == 2

    @property
    def dev_splits(self) -> list[str]:
        return [split for split, _ in self.dev_files]

    def split_file(self, split: str) -> str:
        files = dict((("train", "train.tsv"),) + self.dev_files)
        if split not in files:
            raise XtcError(
                f"{self.name} has no split {split!r}; valid splits: {', '.join(files)} "
                "(test splits carry no labels)"
            )
        return files[split]


_ENTAIL = (("entailment", "entailment"), ("not_entailment", "not_entailment"))

GLUE_TASKS: dict[str, GlueTask] = {
    t.name: t
    for t in [
        GlueTask(
            "CoLA", "cola", (3,), 1, (("0", "unacceptable"), ("1", "acceptable")),
            ("matthews_correlation",), ("sentence",), has_header=False, num_columns=4,
        ),
        GlueTask(
            "SST-2", "sst2", ("sentence",), "label", (("0", "negative"), ("1", "positive")),
            ("accuracy",), ("sentence",),
        ),
        GlueTask(
            "MRPC", "mrpc", ("#1 String", "#2 String"), "Quality",
            (("0", "not_equivalent"), ("1", "equivalent")),
            ("f1", "accuracy"), ("sentence1", "sentence2"),
        ),
        GlueTask(
            "STS-B", "stsb", ("sentence1", "sentence2"), "score", None,
            ("pearson", "spearman"), ("sentence1", "sentence2"),
        ),
        GlueTask(
            "QQP", "qqp", ("question1", "question2"), "is_duplicate",
            (("0", "not_duplicate"), ("1", "duplicate")),
            ("f1", "accuracy"), ("question1", "question2"),
        ),
        GlueTask(
            "MNLI", "mnli", ("sentence1", "sentence2"), "gold_label",
            (("entailment", "entailment"), ("neutral", "neutral"), ("contradiction", "contradiction")),
            ("accuracy",), ("premise", "hypothesis"),
            dev_files=(("dev_matched", "dev_matched.tsv"), ("dev_mismatched", "dev_mismatched.tsv")),
        ),
        GlueTask(
            "QNLI", "qnli", ("question", "sentence"), "label", _ENTAIL,
            ("accuracy",), ("question", "sentence"),
        ),
        GlueTask(
            "RTE", "rte", ("sentence1", "sentence2"), "label", _ENTAIL,
            ("accuracy",), ("sentence1", "sentence2"),
        ),
        GlueTask(
            "WNLI", "wnli", ("sentence1", "sentence2"), "label",
            (("0", "not_entailment"), ("1", "entailment")),
            ("accuracy",), ("sentence1", "sentence2"),
        ),
    ]
}


def _key(name: str) -> str:
    return name.lower().replace("-", "").replace("_", "")


_BY_KEY = {_key(name): task for name, task in GLUE_TASKS.items()}


def get_task(name: str) -> GlueTask:
    """Look a task up by name, ignoring case and dashes (``sst2``, ``SST-2``, ``sts-b``)."""
    task = _BY_KEY.get(_key(name))
    if task is None:
        raise XtcError(f"unknown task {name!r}; valid tasks: {', '.join(GLUE_TASKS)}")
    return task


def recorded_task(finetuning_task) -> "GlueTask | None":
    """The GLUE task a model records (its config's ``finetuning_task``), or None when it records none
    or one that is not a GLUE task."""
    try:
        return get_task(finetuning_task) if isinstance(finetuning_task, str) and finetuning_task else None
    except XtcError:
        return None


def check_recorded_task(model: str, finetuning_task, task: "GlueTask", mismatch_ok: bool = False) -> None:
    """Refuse to score a model that records another task than ``task`` (unless ``mismatch_ok``)."""
    trained_on = recorded_task(finetuning_task)
    if trained_on is not None and trained_on != task and not mismatch_ok:
        raise XtcError(f"{str(model)!r} was trained on {trained_on.name}, not {task.name}: its scores on {task.name} "
                       f"would measure nothing (pass --task-mismatch-ok to evaluate it anyway)")
