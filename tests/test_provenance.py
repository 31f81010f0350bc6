import re
import subprocess

from xtc.provenance import source_commit


def test_commit_of_the_source_tree():
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    commit = source_commit()
    assert commit is None or (re.fullmatch(r"[0-9a-f]{7,}", commit) and commit == head)
