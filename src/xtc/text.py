"""Reading the text files users give (recipes, study files, GLUE TSVs, predict inputs): UTF-8, or one
clear error naming the file, the line and the encoding the bytes look like."""

import csv
import io
from pathlib import Path

from xtc.errors import XtcError


def read_text(path: str | Path) -> str:
    path = Path(path)
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")  # -sig: a leading byte-order mark (MRPC's files have one) is dropped
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise XtcError(f"{path}:{line}: not UTF-8 (byte 0x{data[e.start]:02x}; perhaps {_guess(data)}); "
                       "save the file as UTF-8") from None


def _guess(data: bytes) -> str:
    """The likeliest encoding of non-UTF-8 bytes. Without NUL bytes (so not UTF-16/32), text that decodes
    as Windows-1252 is taken for it: charset-normalizer's guesses on a few lines of Western text are poor
    (cp1006, cp1250 for latin-1 'café')."""
    from charset_normalizer import from_bytes

    if b"\x00" not in data:
        try:
            data.decode("cp1252")
            return "cp1252 (Windows-1252) or latin-1"
        except UnicodeDecodeError:
            pass
    best = from_bytes(data).best()
    return best.encoding if best is not None else "no known encoding"


def read_inputs(path: Path) -> list[tuple[str, ...]]:
    """A TSV file: one example per line, one column (text) or two (text, text pair); no header."""
    if not path.is_file():
        raise XtcError(f"input file {str(path)!r} does not exist")
    with io.StringIO(read_text(path), newline="") as f:
        reader = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        rows = []
        for row in reader:
            if len(row) not in (1, 2) or (rows and len(row) != len(rows[0])):
                wanted = "1 or 2" if not rows else f"{len(rows[0])} (as on the first line)"
                raise XtcError(f"{path}:{reader.line_num}: expected {wanted} tab-separated texts, found {len(row)}")
            rows.append(tuple(row))
    if not rows:
        raise XtcError(f"{path}: the file is empty: give one text (or two, tab-separated) per line")
    return rows
