"""Marking the words of a query in titles and tags, with everything else escaped.

A word of the text is marked when its stem (the text index's analyzer) equals the stem of a
query word, so "cats" marks "cat" and "colour" marks "color"; or when it starts with a query
prefix (`rock*`). Words the query excludes (`-word`, `NOT word`), operators and field names
are not marked. The result is Markup built from escaped pieces and `<mark>` tags only, so
user text is never trusted as HTML.
"""

from __future__ import annotations

import functools
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass

from markupsafe import Markup, escape

from ..text_index import make_analyzer

__all__ = ["QueryWord", "Terms", "highlight", "matched_first", "query_terms", "query_words",
           "stem"]

OPERATORS = frozenset({"AND", "OR", "NOT"})
_TOKEN = re.compile(
    r'(?P<neg>-)?(?:(?P<field>[A-Za-z_]+):)?(?:"(?P<phrase>[^"]*)"?|(?P<word>[^\s"()]+))'
)
_WORD = re.compile(r"\w+")
_analyzer = make_analyzer()
_analyzer_lock = threading.Lock()


@functools.lru_cache(maxsize=20_000)
def stem(word: str) -> str:
    """The indexed form of one word ('' for a stop word or a one-letter word)."""
    with _analyzer_lock:
        tokens = [t.text for t in _analyzer(word)]
    return tokens[0] if tokens else ""


@dataclass(frozen=True)
class QueryWord:
    """One word of a query, where it is, and how the query uses it."""

    text: str
    start: int
    end: int
    negated: bool = False
    prefix: bool = False


def query_words(text: str) -> Iterator[QueryWord]:
    """The words of a query in the text index's syntax, operators and field names left out."""
    pending_not = False
    for m in _TOKEN.finditer(text):
        word = m.group("word")
        if word in OPERATORS and not m.group("neg") and not m.group("field"):
            pending_not = word == "NOT"
            continue
        negated = bool(m.group("neg")) or pending_not
        pending_not = False
        group = "phrase" if m.group("phrase") is not None else "word"
        content = m.group(group) or ""
        base = m.start(group)
        parts = list(_WORD.finditer(content))
        for n, w in enumerate(parts):
            yield QueryWord(
                text=w.group(),
                start=base + w.start(),
                end=base + w.end(),
                negated=negated,
                prefix=group == "word" and n == len(parts) - 1 and content.endswith("*"),
            )


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


def matched_first(tags: tuple[str, ...] | list[str], terms: Terms) -> list[str]:
    """Tags with those that answer the query first (so they are not cut off), order kept."""
    if not terms:
        return list(tags)
    return sorted(tags, key=lambda tag: not any(terms.matches(w) for w in _WORD.findall(tag)))
