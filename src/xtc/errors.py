"""User-facing errors.

An ``XtcError`` carries one line meant for the user of the CLI or the API: what
is wrong and how to fix it. The CLI prints it without a traceback and exits
non-zero. Internal invariants use ``assert`` instead.
"""


class XtcError(Exception):
    """A problem with the user's input (model, data, config, output folder)."""


def format_validation_error(error, flags: bool = True) -> str:
    """A pydantic ValidationError as one line: the field (a CLI flag or a dotted path), the value, and why."""
    lines = []
    for item in error.errors():
        field = ".".join(str(p) for p in item["loc"])
        name = f"--{field.replace('_', '-')}" if flags else field
        message = item["msg"].removeprefix("Value error, ")
        if not item["loc"]:  # a check across fields: its message says it all
            lines.append(message)
        elif item["type"] == "extra_forbidden":
            lines.append(f"unknown setting {name!r}")
        elif item["type"] == "missing":
            lines.append(f"missing required setting {name}")
        elif isinstance(item.get("input"), dict):  # a check across a section's fields
            lines.append(f"{name}: {message}")
        else:
            lines.append(f"invalid value {item.get('input')!r} for {name}: {message}")
    return "; ".join(lines)

