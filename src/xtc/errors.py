"""User-facing errors.

An ``XtcError`` carries one line meant for the user of the CLI or the API: what
is wrong and how to fix it. The CLI prints it without a traceback and exits
non-zero. Internal invariants use ``assert`` instead.
"""


class XtcError(Exception):
    """A problem with the user's input (model, data, config, output folder)."""
