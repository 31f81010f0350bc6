"""The README: its Python examples run as written (in a scratch folder), its synopses list every flag."""

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
    assert re.search(r"\['-?\d+\.\d{3}', '-?\d+\.\d{3}'\]", printed)  # the engine's 2 logits
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
    assert type(scope["model"]).__name__ == "Engine" and scope["model"].num_labels == 2


def test_compress_names_a_bad_setting(tmp_path):
    import pytest

    import xtc

    with pytest.raises(xtc.XtcError, match="max.train.samples"):
        xtc.compress("bert-tiny", "MRPC", tmp_path / "o", max_train_samples=-1)


def test_every_flag_of_every_command_is_in_its_readme_synopsis():
    """The README's synopses (lines of its code blocks that start with `xtc COMMAND`, and their
    continuation lines) list every flag the command takes."""
    from xtc.cli import main

    blocks = re.findall(r"^```[a-z]*\n(.*?)^```", README.read_text(), flags=re.S | re.M)
    synopsis: dict[str, str] = {}
    for block in blocks:
        command = None
        for line in block.splitlines():
            match = re.match(r"xtc (\w+)\b", line)
            if match:
                command = match.group(1)
            elif not line.startswith(" "):
                command = None
            if command:
                synopsis[command] = synopsis.get(command, "") + " " + line
    for name, command in main.commands.items():
        flags = {max(p.opts, key=len) for p in command.params if p.param_type_name == "option"}
        missing = sorted(f for f in flags if not re.search(re.escape(f) + r"\b", synopsis.get(name, "")))
        assert missing == [], f"README synopsis of xtc {name} lacks {missing}"
