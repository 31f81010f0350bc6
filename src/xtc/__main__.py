"""`python -m xtc` (and `accelerate launch -m xtc`) runs the CLI."""

from xtc.cli import main

main()
