"""Progress where it helps: bars on a terminal (or in a notebook); when stderr is a file or a pipe (a
log), no bars, so no carriage returns or escape codes in it, and long loops write plain lines instead."""

import sys

from tqdm.auto import tqdm


def interactive() -> bool:
    return sys.stderr.isatty() or "ipykernel" in sys.modules


def bar(iterable=None, *, enabled: bool = True, **options) -> tqdm:
    """A tqdm bar when interactive (and ``enabled``); otherwise a disabled one that draws nothing."""
    return tqdm(iterable, disable=not (enabled and interactive()), **options)


def note(message: str, warning: bool = False) -> None:
    """One line above any bar: on stdout, a warning on stderr."""
    tqdm.write(message, file=sys.stderr if warning else sys.stdout)
