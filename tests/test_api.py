"""The public API: light to import, every exported name resolves."""

import subprocess
import sys

import xtc


def test_every_public_name_resolves():
    for name in xtc.__all__:
        assert getattr(xtc, name) is not None, name


def test_import_is_light():
    code = "import sys, xtc; print(any(m in sys.modules for m in ('torch', 'transformers')))"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "False"
