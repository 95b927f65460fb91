""""Did you mean …": correct query words that the collection's own words do not contain.

A query word is known when its stem (the text index's analyzer) is in the index vocabulary
(`TextIndex.vocabulary()`, stemmed terms). An unknown word is replaced by the closest word
(difflib, ratio >= 0.75) among the unstemmed words of the collection's titles, tags and
descriptions; if no such word is close enough, by the closest stemmed term. Pure code over
strings, except `Vocabulary`, which reads and caches the collection's words. Nothing here
imports Flask: it can move to the core as it is.
"""

from __future__ import annotations

import difflib
import functools
import re
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from ..collection import Collection
from ..text_index import make_analyzer

__all__ = ["QueryWord", "Vocabulary", "query_words", "stem", "suggest"]

CUTOFF = 0.75
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
            is_last = n == len(parts) - 1
            yield QueryWord(
                text=w.group(),
                start=base + w.start(),
                end=base + w.end(),
                negated=negated,
                prefix=group == "word" and is_last and content.endswith("*"),
            )


def suggest(text: str, vocabulary: set[str] | frozenset[str], words: Iterable[str]) -> str | None:
    """The query with unknown words replaced by close known ones, or None if none is found."""
    unknown = [
        w for w in query_words(text)
        if not w.prefix and not w.text.isdigit() and stem(w.text) and
        stem(w.text) not in vocabulary
    ]
    if not unknown:
        return None
    surface = list(words)
    stems = sorted(vocabulary)
    replaced = text
    changed = False
    for w in reversed(unknown):  # from the end, so earlier offsets stay valid
        lower = w.text.lower()
        match = (difflib.get_close_matches(lower, surface, n=1, cutoff=CUTOFF)
                 or difflib.get_close_matches(lower, stems, n=1, cutoff=CUTOFF))
        if match and match[0] != lower:
            replaced = replaced[: w.start] + match[0] + replaced[w.end :]
            changed = True
    return replaced if changed else None


class Vocabulary:
    """The collection's indexed terms and unstemmed words, cached for `ttl_s` seconds."""

    def __init__(self, collection: Collection, ttl_s: float = 30.0) -> None:
        self.collection = collection
        self.ttl_s = ttl_s
        self._terms: tuple[float, frozenset[str]] | None = None
        self._words: tuple[float, list[str]] | None = None
        self._lock = threading.Lock()

    def invalidate(self) -> None:
        """Forget the cache (after a write)."""
        with self._lock:
            self._terms = None
            self._words = None

    def terms(self) -> frozenset[str]:
        """Stemmed terms of the text index."""
        with self._lock:
            now = time.monotonic()
            if self._terms is None or now - self._terms[0] > self.ttl_s:
                self._terms = (now, frozenset(self.collection.text.vocabulary()))
            return self._terms[1]

    def words(self) -> list[str]:
        """Lower-cased words of every title, tag and description whose stem is indexed."""
        terms = self.terms()
        with self._lock:
            now = time.monotonic()
            if self._words is None or now - self._words[0] > self.ttl_s:
                found: set[str] = set()
                for record in self.collection.store.iter_records():
                    text = " ".join((record.title, record.description, *record.tags))
                    found.update(w.lower() for w in _WORD.findall(text) if len(w) > 1)
                self._words = (now, sorted(w for w in found if stem(w) in terms))
            return self._words[1]

    def suggest(self, text: str) -> str | None:
        """A corrected query, if some words of `text` are not in the collection."""
        terms = self.terms()
        if not any(stem(w.text) and stem(w.text) not in terms for w in query_words(text)):
            return None
        return suggest(text, terms, self.words())
