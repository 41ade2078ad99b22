"""Glossaries: source term -> target term. A term applies to a sentence when its source side occurs
in it; its target side then becomes a constraint of that sentence (nmt/decoding/constraints.py).

    Glossary.read("terms.tsv")  # one "source term<TAB>target term" per line; '#' starts a comment

Matching is on the text as the tokenizer normalises it (e.g. Traditional -> Simplified Chinese),
ignoring case; in languages written with spaces a term matches whole words only ("cat" does not
apply to "category"; a term in a script without spaces, such as Chinese, matches anywhere).
Where terms overlap in a sentence, the longest applies (as a translator reading the sentence
would choose "machine translation" over "translation").
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from nmt.documents import uses_spaces
from nmt.errors import DataError
from nmt.textio import decode_lines


@dataclass(frozen=True)
class Glossary:
    entries: tuple[tuple[str, str], ...]  # (source term, target term)

    @classmethod
    def read(cls, path: str | Path) -> Glossary:
        """A TSV file: "source term<TAB>target term" per line; blank lines and '#' comments skipped."""
        try:
            stream = open(path, "rb")
        except OSError as err:
            raise DataError(f"cannot read glossary {path}: {err.strerror}") from None
        entries = []
        with stream:
            for n, line in enumerate(decode_lines(stream, str(path)), start=1):
                if not line.strip() or line.lstrip().startswith("#"):
                    continue
                parts = line.split("\t")
                if len(parts) != 2 or not parts[0].strip() or not parts[1].strip():
                    raise DataError(f"{path}:{n}: expected 'source term<TAB>target term', got {line!r}")
                entries.append((parts[0].strip(), parts[1].strip()))
        return cls(tuple(entries))

    @classmethod
    def of(cls, terms: Glossary | Mapping[str, str] | Iterable[tuple[str, str]] | str | Path) -> Glossary:
        """A Glossary from itself, a dict or pairs of source -> target terms, or a TSV file's path."""
        if isinstance(terms, Glossary):
            return terms
        if isinstance(terms, (str, Path)):
            return cls.read(terms)
        pairs = list(terms.items() if isinstance(terms, Mapping) else terms)
        for pair in pairs:
            if len(pair) != 2 or not all(isinstance(t, str) and t.strip() for t in pair):
                raise DataError(f"glossary: each entry is a non-empty source term and target term, got {pair!r}")
        return cls(tuple((s.strip(), t.strip()) for s, t in pairs))

    def terms_for(self, sentence: str, src_lang: str, normalize: Callable[[str], str] = str) -> list[str]:
        """The target terms whose source terms occur in `sentence`, in order of occurrence; the
        longest of overlapping ones; each target term once."""
        text = normalize(sentence).casefold()
        spans = []  # (start, end, target)
        for source, target in self.entries:
            plain = normalize(source).casefold()
            term = re.escape(plain)
            if uses_spaces(src_lang):  # whole words: at an edge that is a letter of a script written with spaces
                term = (r"(?<!\w)" if _spaced(plain[0]) else "") + term + (r"(?!\w)" if _spaced(plain[-1]) else "")
            spans += [(m.start(), m.end(), target) for m in re.finditer(term, text)]
        taken: list[tuple[int, int, str]] = []
        for start, end, target in sorted(spans, key=lambda s: (s[0] - s[1], s[0])):  # longest first
            if all(end <= a or start >= b for a, b, _ in taken):
                taken.append((start, end, target))
        return list(dict.fromkeys(target for _, _, target in sorted(taken)))


def _spaced(char: str) -> bool:
    """A letter or digit of a script written with spaces (before the CJK blocks of Unicode)."""
    return char.isalnum() and ord(char) < 0x2E80
