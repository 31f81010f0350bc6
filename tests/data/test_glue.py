"""GLUE readers on the real files in ../shared/data/glue, and their errors on bad files."""

from collections import Counter

import pytest

from xtc.data.glue import load_examples, read_tsv
from xtc.data.tasks import get_task
from xtc.errors import XtcError
from xtc.recipe_io import load_recipe

# Official GLUE row counts (train, dev) of the tasks present offline.
OFFICIAL_COUNTS = {
    "CoLA": (8551, 1043),
    "SST-2": (67349, 872),
    "MRPC": (3668, 408),
    "STS-B": (5749, 1500),
    "RTE": (2490, 277),
    "WNLI": (635, 71),
}


@pytest.mark.parametrize("name", OFFICIAL_COUNTS)
def test_official_row_counts(glue_dir, name):
    task = get_task(name)
    train, dev = (load_examples(task, split, glue_dir) for split in ("train", "dev"))
    assert (len(train), len(dev)) == OFFICIAL_COUNTS[name]
    assert all(len(e.texts) == (2 if task.is_pair else 1) and all(e.texts) for e in train + dev)


def test_qnli_dev_keeps_bare_quotes(glue_dir):
    # Quoting off: rows starting with '"' must not swallow the following lines.
    dev = load_examples(get_task("QNLI"), "dev", glue_dir)
    assert len(dev) == 5463
    assert any(text.startswith('"') for e in dev for text in e.texts)
    assert Counter(e.label for e in dev) == {0: 2702, 1: 2761}  # entailment, not_entailment


@pytest.mark.parametrize("name,counts", [
    ("SST-2", {1: 444, 0: 428}),
    ("CoLA", {1: 721, 0: 322}),
    ("MRPC", {1: 279, 0: 129}),
    ("RTE", {0: 146, 1: 131}),
])
def test_published_dev_label_counts(glue_dir, name, counts):
    assert Counter(e.label for e in load_examples(get_task(name), "dev", glue_dir)) == counts


def test_stsb_scores_and_mrpc_bom(glue_dir):
    scores = [e.label for e in load_examples(get_task("STS-B"), "dev", glue_dir)]
    assert all(0.0 <= s <= 5.0 for s in scores) and isinstance(scores[0], float)
    first = load_examples(get_task("MRPC"), "dev", glue_dir, max_samples=1)[0]
    assert first.texts[0].startswith("He said the foodservice pie business")


def test_max_samples_takes_the_first_rows(glue_dir):
    rte = get_task("RTE")
    assert load_examples(rte, "train", glue_dir, max_samples=5) == load_examples(rte, "train", glue_dir)[:5]


def test_glue_dir_from_environment(glue_dir, monkeypatch):
    monkeypatch.setenv("XTC_GLUE_DIR", str(glue_dir))
    assert len(load_examples(get_task("WNLI"), "dev")) == 71


def test_mnli_and_qqp_official_layout(tmp_path):
    """MNLI and QQP are not offline; their readers are checked on rows in the official format."""
    mnli = tmp_path / "MNLI"
    mnli.mkdir()
    header = ["index", "promptID", "pairID", "genre", "sentence1_binary_parse", "sentence2_binary_parse",
              "sentence1_parse", "sentence2_parse", "sentence1", "sentence2", "label1", "label2", "label3",
              "label4", "label5", "gold_label"]
    row = ["0", "63735", "63735n", "slate", "( x )", "( y )", "(ROOT x)", "(ROOT y)", "The new rights are nice enough",
           "Everyone really likes the newest benefits", "neutral", "entailment", "neutral", "neutral", "neutral", "neutral"]
    for split in ("dev_matched", "dev_mismatched"):
        (mnli / f"{split}.tsv").write_text("\t".join(header) + "\n" + "\t".join(row) + "\n")
    (ex,) = load_examples(get_task("MNLI"), "dev_mismatched", tmp_path)
    assert ex.texts == ("The new rights are nice enough", "Everyone really likes the newest benefits") and ex.label == 1
    qqp = tmp_path / "QQP"
    qqp.mkdir()
    (qqp / "dev.tsv").write_text("id\tqid1\tqid2\tquestion1\tquestion2\tis_duplicate\n"
                                 "201359\t303345\t303346\tWhy are African-Americans so beautiful?\t"
                                 "Why are hispanics so beautiful?\t0\n")
    (ex,) = load_examples(get_task("QQP"), "dev", tmp_path)
    assert ex.label == 0 and ex.texts[1] == "Why are hispanics so beautiful?"


# ---- bad input: one clear message naming the file and line -------------------------------------

def _copy_head(glue_dir, tmp_path, task, lines, extra=""):
    folder = tmp_path / task
    folder.mkdir()
    text = "".join((glue_dir / task / "train.tsv").read_text(encoding="utf-8").splitlines(True)[:lines]) + extra
    (folder / "train.tsv").write_text(text, encoding="utf-8")
    return folder / "train.tsv"


def test_wrong_column_count_names_file_and_line(glue_dir, tmp_path):
    path = _copy_head(glue_dir, tmp_path, "RTE", 3, "5\tonly one sentence\tentailment\n")
    with pytest.raises(XtcError, match=rf"{path}:4: expected 4 tab-separated columns, found 3"):
        load_examples(get_task("RTE"), "train", tmp_path)


def test_bad_label_names_file_and_line(glue_dir, tmp_path):
    path = _copy_head(glue_dir, tmp_path, "CoLA", 2, "gj04\t7\t\tA bad label.\n")
    with pytest.raises(XtcError, match=rf"{path}:3: label '7' is not one of 0, 1"):
        load_examples(get_task("CoLA"), "train", tmp_path)


def test_bad_score_and_missing_header_column(glue_dir, tmp_path):
    path = _copy_head(glue_dir, tmp_path, "STS-B", 2)
    lines = path.read_text().splitlines()
    cells = lines[1].split("\t")
    cells[-1] = "high"
    path.write_text(lines[0] + "\n" + "\t".join(cells) + "\n")
    with pytest.raises(XtcError, match=rf"{path}:2: score 'high' is not a number"):
        load_examples(get_task("STS-B"), "train", tmp_path)
    path.write_text(lines[0].replace("sentence2", "s2") + "\n")
    with pytest.raises(XtcError, match=rf"{path}:1: header lacks column\(s\) 'sentence2'"):
        read_tsv(get_task("STS-B"), path)


def test_missing_folder_and_files(glue_dir, tmp_path):
    with pytest.raises(XtcError, match="GLUE folder '.*nowhere' does not exist"):
        load_examples(get_task("RTE"), "train", tmp_path / "nowhere")
    with pytest.raises(XtcError, match=r"missing GLUE file .*RTE/train.tsv \(no RTE/ folder"):
        load_examples(get_task("RTE"), "train", tmp_path)
    with pytest.raises(XtcError, match=r"missing GLUE file .*QNLI/train.tsv"):
        load_examples(get_task("QNLI"), "train", glue_dir)  # QNLI train is not offline


def test_hub_unreachable_is_one_clear_error():
    with pytest.raises(XtcError, match="could not load GLUE RTE from the hub.*--glue-dir"):
        load_examples(get_task("RTE"), "dev")


def test_a_file_that_is_not_utf8_names_its_line_and_encoding(glue_dir, tmp_path):
    lines = (glue_dir / "RTE" / "dev.tsv").read_text().splitlines(keepends=True)[:6]
    lines[4] = lines[4].replace("a", "\u00e9", 1)  # a latin-1 byte on the 5th line
    (tmp_path / "RTE").mkdir()
    (tmp_path / "RTE" / "dev.tsv").write_bytes("".join(lines).encode("latin-1", errors="replace"))
    with pytest.raises(XtcError, match=r"RTE/dev.tsv:5: not UTF-8 \(byte 0xe9; perhaps cp1252"):
        load_examples(get_task("RTE"), "dev", tmp_path)
    recipe = tmp_path / "recipe.yaml"
    recipe.write_bytes("description: caf\u00e9\nstages: []\n".encode("cp1252"))
    with pytest.raises(XtcError, match=r"recipe.yaml:1: not UTF-8 \(byte 0xe9"):
        load_recipe(recipe)
