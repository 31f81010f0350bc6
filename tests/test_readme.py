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
