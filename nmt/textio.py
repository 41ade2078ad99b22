"""Reading UTF-8 text files line by line, with one-line errors that name the file and line."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from nmt.errors import DataError


def decode_lines(stream, name: str, *, invalid: list[int] | None = None) -> Iterator[str]:
    """Lines of a binary stream as text (line ends stripped). Invalid UTF-8 is an error naming the
    line; with an `invalid` list, such a line is recorded there (its number) and given as ""."""
    for n, raw in enumerate(stream, start=1):
        try:
            yield raw.decode("utf-8").rstrip("\r\n")
        except UnicodeDecodeError as err:
            if invalid is None:
                raise DataError(f"{name}:{n}: invalid UTF-8 ({err.reason} at byte {err.start})") from None
            invalid.append(n)
            yield ""


def read_text_lines(path: Path) -> list[str]:
    """All lines of a UTF-8 text file; a missing file or invalid UTF-8 is a one-line DataError."""
    if not path.is_file():
        raise DataError(f"file not found: {path}")
    with path.open("rb") as f:
        return list(decode_lines(f, str(path)))


def check_text_file(path: Path, invalid: list[int] | None = None) -> int:
    """Line count of a UTF-8 text file; missing files and invalid UTF-8 name the file and line
    (or, with an `invalid` list, invalid lines are recorded there)."""
    if not path.is_file():
        raise DataError(f"file not found: {path}")
    with path.open("rb") as f:
        return sum(1 for _ in decode_lines(f, str(path), invalid=invalid))
