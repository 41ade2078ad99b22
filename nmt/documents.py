"""Documents instead of lines: split text into sentences, fit each to the model, join the output.

A model trained on sentences drops or garbles what follows the first sentence of a paragraph
(docs/documents.md measures it). In document mode (`DecodingOptions.document`) the Translator
splits each input into sentences, translates them all in batches and joins the translations in
the input's layout:

    text --split_document--> Document(parts: gap, sentence, gap, ..., gap) --fit--> pieces
         --Translator.translate (the sentence path)--> translations --Document.join--> text

- Splitting never crosses a line break, and the gaps between sentences (whitespace, line breaks)
  are kept: "".join(document.parts) == text, so line and paragraph counts and empty lines survive.
- Rules: Chinese and Japanese end a sentence at 。！？；… and their ASCII forms ! ? (no space
  needed), with closing quotes and brackets kept on the sentence (any other source language at
  the full-width 。！？, which only CJK text uses); other scripts at . ! ? … that
  are followed by a space and an upper-case letter, digit, opening quote or a CJK character, not
  after a known abbreviation (Mr., e.g.) or an initial (J. K.). Decimals (3.5) have no space.
- A sentence longer than the model takes is cut at clause marks (，、；： , ; :) into pieces that
  fit, or failing that at the longest prefix that fits (at a space where there is one); never cut
  silently: the Translation counts the sentences split.
- Joining: a gap with a line break is kept as it is; between two sentences (or pieces of one) on
  a line, a target written with spaces gets one space and one written without (zh, ja, th, ...)
  gets none.

Torch-free (the CTranslate2 engine runs without torch).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["Document", "split_document", "split_sentences", "fit_sentence", "uses_spaces", "SPLITTERS"]

CLOSERS = "\"'”’」』）)】》〉]}»›"
OPENERS = "\"'“‘「『（(【《〈[{«‹¿¡"
# Chinese/Japanese: a run of terminal marks (an ellipsis is 1+ of …, or 3+ dots), then closers.
# ASCII ! and ? count when CJK text (or the line's end) follows them, not a space or a Latin letter.
# ASCII quotes are closers only after an odd number of them (_rule_ends).
_CJK_CLOSERS = re.escape(CLOSERS.replace('"', "").replace("'", ""))
_CJK_END = re.compile(rf"(?:[。！？；]+|…+|\.{{3,}}|⋯+)[{_CJK_CLOSERS}]*+|[!?]+[{_CJK_CLOSERS}]*+(?![\sA-Za-z\"'])")
# Any other language: the full-width marks, which only CJK text uses, end a sentence too.
_FULL_WIDTH_END = re.compile(rf"[。！？]+[{_CJK_CLOSERS}]*+")
# Spaced scripts: terminal marks and closers, then spaces, before what can start a sentence.
_END = re.compile(rf"[.!?…]+[{re.escape(CLOSERS)}]*(?=\s+[{re.escape(OPENERS)}]*"
                  r"[A-Z0-9\u00c0-\u00de\u0391-\u03a9\u0410-\u042f\u3040-\u30ff\u3400-\u9fff\uac00-\ud7af])")
_WORD_BEFORE = re.compile(r"([\w.]+)$")
# Words after which "." does not end a sentence when the next word is capitalised (lower case).
ABBREVIATIONS = frozenset("""
mr mrs ms dr prof sr jr st mt ft rev gen col capt lt sgt gov sen rep pres hon messrs mme mlle
vs v no nos vol vols fig figs pp p ch sec art ed eds op cit al approx ca cf esp incl
jan feb mar apr jun jul aug sep sept oct nov dec mon tue wed thu fri sat sun
inc ltd co corp bros dept univ assn e.g i.e a.m p.m u.s u.k u.n d.c
""".split())
_CJK_LANGS = frozenset({"zh", "zho", "chi", "cmn", "yue", "wuu", "lzh", "ja", "jpn"})
_UNSPACED = _CJK_LANGS | {"th", "tha", "lo", "lao", "km", "khm", "my", "mya", "bo", "bod"}
_CLAUSE = re.compile(r"[，、；：]|[,;:](?=\s)")
_LINE = re.compile(r"(\r\n|\r|\n)")


def _base(lang: str) -> str:
    return lang.replace("_", "-").split("-")[0].lower()


def uses_spaces(lang: str) -> bool:
    """Whether `lang` separates sentences (and words) with spaces."""
    return _base(lang) not in _UNSPACED


_PAIRS = {"“": "”", "「": "」", "『": "』", "（": "）", "(": ")", "《": "》", "【": "】"}


def _quoted(line: str) -> list[tuple[int, int]]:
    """(start, end) of the quotes and brackets of `line` that close on it (unclosed ones ignored)."""
    spans, stack = [], []
    for i, ch in enumerate(line):
        if ch in _PAIRS:
            stack.append((ch, i))
        elif stack and ch == _PAIRS[stack[-1][0]]:
            spans.append((stack.pop()[1], i))
    return spans


def _rule_ends(line: str, lang: str) -> list[int]:
    """Offsets in `line` where a sentence ends (after its closing marks), by the rules above."""
    ends: set[int] = set()
    cjk = _CJK_END if _base(lang) in _CJK_LANGS else _FULL_WIDTH_END
    spans = _quoted(line)  # not inside a quotation: “你好。我很好。”他说。 is one sentence
    for m in cjk.finditer(line):
        end = m.end()
        while line[end:end + 1] in ('"', "'") and line[end:end + 1] and line.count(line[end], 0, end) % 2 == 1:
            end += 1  # "你好。" closes its quote; 好。"你 opens the next one
        if not any(a < end - 1 and end <= b for a, b in spans):
            ends.add(end)
    for m in _END.finditer(line):
        if line[m.start()] == ".":
            before = _WORD_BEFORE.search(line, 0, m.start())
            word = before.group(1).lower() if before else ""
            if word in ABBREVIATIONS or (len(word) == 1 and word.isalpha() and m.end() - m.start() == 1):
                continue  # "Mr. Smith", "J. K. Rowling"
        ends.add(m.end())
    return sorted(e for e in ends if 0 < e < len(line.rstrip()))


def _library_ends(name: str) -> Callable[[str, str], list[int]]:
    """Sentence ends by a maintained splitter (for docs/documents.md's comparison)."""
    def ends(line: str, lang: str) -> list[int]:
        if name == "pysbd":
            import pysbd

            segments = pysbd.Segmenter(language=_base(lang), clean=False).segment(line)
        else:
            import sentencex

            segments = list(sentencex.segment(_base(lang), line))
        out, at = [], 0
        for seg in segments:
            at = line.find(seg.strip(), at) + len(seg.strip()) if seg.strip() else at
            out.append(at)
        return [e for e in out if 0 < e < len(line.rstrip())]
    return ends


SPLITTERS: dict[str, Callable[[str, str], list[int]]] = {
    "rules": _rule_ends, "pysbd": _library_ends("pysbd"), "sentencex": _library_ends("sentencex")}


@dataclass
class Document:
    """`parts` alternate gap, sentence, gap, ..., gap ("" gaps included): "".join(parts) is the text."""

    parts: list[str]

    @property
    def sentences(self) -> list[str]:
        return self.parts[1::2]

    @property
    def gaps(self) -> list[str]:
        return self.parts[0::2]

    def join(self, translations: list[str], tgt_lang: str) -> str:
        """The translated document: each sentence replaced by its translation, gaps as the module says."""
        if len(translations) != len(self.sentences):
            raise ValueError(f"{len(translations)} translations for {len(self.sentences)} sentences")
        gaps, out = self.gaps, []
        for i, gap in enumerate(gaps):
            between = 0 < i < len(gaps) - 1
            if between and "\n" not in gap and "\r" not in gap:
                gap = " " if uses_spaces(tgt_lang) else ""
            out.append(gap)
            if i < len(translations):
                out.append(translations[i])
        return "".join(out)


def split_document(text: str, lang: str, splitter: str = "rules") -> Document:
    """Sentences of `text` (a line, a paragraph or many) with the whitespace between them kept."""
    ends_of = SPLITTERS[splitter]
    parts, gap = [], ""
    for line in _LINE.split(text):
        if _LINE.fullmatch(line):
            gap += line
            continue
        start = 0
        for end in [*ends_of(line, lang), len(line)]:
            chunk = line[start:end]
            stripped = chunk.strip()
            if stripped:
                lead = len(chunk) - len(chunk.lstrip())
                parts += [gap + chunk[:lead], stripped]
                gap = chunk[lead + len(stripped):]
            else:
                gap += chunk
            start = end
    parts.append(gap)
    return Document(parts)


def split_sentences(text: str, lang: str, splitter: str = "rules") -> list[str]:
    return split_document(text, lang, splitter).sentences


def fit_sentence(sentence: str, n_tokens: Callable[[str], int], limit: int) -> list[str]:
    """`sentence` as pieces of at most `limit` tokens: itself if it fits, else cut after clause
    marks (clauses packed greedily), and a clause that alone is too long at the longest prefix
    that fits (ending at a space where there is one in its second half)."""
    if n_tokens(sentence) <= limit:
        return [sentence]
    cuts = [m.end() for m in _CLAUSE.finditer(sentence)]
    clauses = [sentence[a:b] for a, b in zip([0, *cuts], [*cuts, len(sentence)]) if sentence[a:b].strip()]
    pieces: list[str] = []
    current = ""
    for clause in clauses:
        if current and n_tokens(current + clause) <= limit:
            current += clause
            continue
        if current:
            pieces.append(current)
        if n_tokens(clause) <= limit:
            current = clause
        else:
            *whole, current = _cut(clause, n_tokens, limit)
            pieces += whole
    pieces.append(current)
    return [p.strip() for p in pieces if p.strip()]


def _cut(text: str, n_tokens: Callable[[str], int], limit: int) -> list[str]:
    """`text` in consecutive prefixes of at most `limit` tokens (binary search on characters)."""
    pieces = []
    while n_tokens(text) > limit:
        lo, hi = 1, len(text)  # n_tokens(text[:lo]) <= limit < n_tokens(text[:hi]) (1 char fits: limit >= 1)
        while hi - lo > 1:
            mid = (lo + hi) // 2
            lo, hi = (mid, hi) if n_tokens(text[:mid]) <= limit else (lo, mid)
        space = text.rfind(" ", 0, lo + 1)
        end = space + 1 if space > lo // 2 else lo
        pieces.append(text[:end])
        text = text[end:]
    return [*pieces, text]
