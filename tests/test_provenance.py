import re
import subprocess

from xtc.provenance import source_commit


def test_commit_of_the_source_tree():
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    commit = source_commit()
    if head:  # the tests run from a git checkout: the commit must be found, and be HEAD
        assert commit == head and re.fullmatch(r"[0-9a-f]{7,}", commit)
    else:
        assert commit is None
