"""The README's Python example runs as written (in a scratch folder)."""

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_python_example_runs(tmp_path, monkeypatch, capsys):
    text = README.read_text()
    code = re.search(r"<!-- readme:python-example -->\n```python\n(.*?)```", text, re.S).group(1)
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "README.md", "exec"), {})
    printed = capsys.readouterr().out
    assert "'loss':" in printed and " MB" in printed
    assert (tmp_path / "runs" / "example-packed" / "packed.safetensors").is_file()


def test_compress_example_runs(tmp_path, monkeypatch, capsys, glue_dir):
    text = README.read_text()
    code = re.search(r"<!-- readme:compress-example -->\n```python\n(.*?)```", text, re.S).group(1)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("XTC_GLUE_DIR", str(glue_dir))
    scope = {}
    exec(compile(code, "README.md", "exec"), scope)
    printed = capsys.readouterr().out
    assert "quantize 1 W1A8" in printed
    result = scope["result"]
    assert (tmp_path / result.packed_dir / "packed.safetensors").is_file()
    assert type(scope["model"]).__name__ == "BertForSequenceClassification"


def test_compress_names_a_bad_setting(tmp_path):
    import pytest

    import xtc

    with pytest.raises(xtc.XtcError, match="max.train.samples"):
        xtc.compress("bert-tiny", "MRPC", tmp_path / "o", max_train_samples=-1)
