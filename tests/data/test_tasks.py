import pytest

from xtc.data.tasks import GLUE_TASKS, get_task
from xtc.errors import XtcError


def test_all_nine_tasks():
    assert list(GLUE_TASKS) == ["CoLA", "SST-2", "MRPC", "STS-B", "QQP", "MNLI", "QNLI", "RTE", "WNLI"]


@pytest.mark.parametrize("alias,name", [("rte", "RTE"), ("sst2", "SST-2"), ("SST-2", "SST-2"), ("sts-b", "STS-B"),
                                        ("stsb", "STS-B"), ("cola", "CoLA"), ("Mnli", "MNLI")])
def test_aliases(alias, name):
    assert get_task(alias).name == name


def test_unknown_task_lists_valid_ones():
    with pytest.raises(XtcError, match=r"unknown task 'foo'; valid tasks: CoLA, SST-2, .*WNLI"):
        get_task("foo")


def test_task_shapes():
    assert get_task("STS-B").is_regression and get_task("STS-B").num_labels == 1
    assert get_task("MNLI").num_labels == 3 and get_task("MNLI").dev_splits == ["dev_matched", "dev_mismatched"]
    assert get_task("CoLA").metrics == ("matthews_correlation",)
    assert get_task("MRPC").metrics == ("f1", "accuracy")
    with pytest.raises(XtcError, match="no split 'test'"):
        get_task("RTE").split_file("test")
