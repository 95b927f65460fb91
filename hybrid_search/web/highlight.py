"""Marking the words of a query in titles and tags, with everything else escaped.

A word of the text is marked when its stem equals the stem of a query word (so "cats" marks
"cat"), or when it starts with a query prefix (`rock*`). Words the query excludes
(`-word`, `NOT word`) are not marked. The result is Markup built from escaped pieces and
`<mark>` tags only, so user text is never trusted as HTML.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from markupsafe import Markup, escape

from .suggest import query_words, stem

__all__ = ["Terms", "highlight", "query_terms"]

_WORD = re.compile(r"\w+")


@dataclass(frozen=True)
class Terms:
    """What a query asks for: stems of its words and prefixes."""

    stems: frozenset[str] = frozenset()
    prefixes: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.stems or self.prefixes)

    def matches(self, word: str) -> bool:
        """Whether one word of a text answers the query."""
        lower = word.lower()
        if any(lower.startswith(p) for p in self.prefixes):
            return True
        s = stem(lower)
        return bool(s) and s in self.stems


def query_terms(text: str | None) -> Terms:
    """The stems and prefixes a query's highlighted words are matched against."""
    if not text:
        return Terms()
    stems: set[str] = set()
    prefixes: list[str] = []
    for w in query_words(text):
        if w.negated:
            continue
        if w.prefix:
            prefixes.append(w.text.lower())
        elif stem(w.text.lower()):
            stems.add(stem(w.text.lower()))
    return Terms(frozenset(stems), tuple(prefixes))


def highlight(text: str | None, terms: Terms) -> Markup:
    """`text` escaped, with the words that answer the query inside `<mark>`."""
    text = text or ""
    if not terms:
        return escape(text)
    out: list[Markup] = []
    last = 0
    for m in _WORD.finditer(text):
        if terms.matches(m.group()):
            out.append(escape(text[last : m.start()]))
            out.append(Markup("<mark>%s</mark>") % m.group())
            last = m.end()
    out.append(escape(text[last:]))
    return Markup("").join(out)
