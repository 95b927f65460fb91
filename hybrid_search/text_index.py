"""The text side of the search (TBIR): a Whoosh BM25F index over the manual photo annotations.

The SQLite database is the source of truth; this index is derived from it and can always be
rebuilt with :meth:`TextIndex.rebuild`.

Query language understood by :meth:`TextIndex.search`:

* plain words are a ranked OR: a photo matching more of the words ranks higher;
* ``"quoted phrases"`` match the words in that order;
* ``AND``, ``OR``, ``NOT`` (upper case) and parentheses combine clauses; ``a NOT b`` means
  "a, excluding b" (not "a or anything without b");
* ``-word`` / ``-"a phrase"`` excludes, ``+word`` requires;
* ``title:word``, ``description:word``, ``tags:word`` (alias ``tag:word``) and ``auto_tags:word``
  (alias ``auto:word``, the machine-made labels) restrict to one field;
* ``word*`` is a prefix search, and a lone ``*`` matches every annotated photo;
* a query made only of exclusions (``-car``, ``NOT car``) returns every photo that does not
  match, all with the same score.

Nothing a user types makes :meth:`TextIndex.search` raise: a query the parser cannot make sense
of is searched again as its bare words (``foo:bar`` searches ``foo bar``), and a query of only
stop words returns no results.

Words are folded to American spelling before stemming, when indexing and when querying alike
(``colour`` finds ``color``; see :mod:`hybrid_search.spelling`). Synonym rules, if given, apply at
query time: a word, or a quoted phrase, with synonyms also searches them, a little down-weighted.
:meth:`TextIndex.correct` proposes a corrected query for words the collection does not contain;
:meth:`TextIndex.search` never corrects on its own.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import logging
import math
import os
import re
import shutil
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from whoosh import index, scoring
from whoosh import query as wq
from whoosh.analysis import (
    Analyzer,
    LowercaseFilter,
    RegexTokenizer,
    StemFilter,
    StopFilter,
)
from whoosh.columns import VarBytesColumn
from whoosh.fields import COLUMN, NUMERIC, TEXT, FieldType, Schema
from whoosh.filedb.filestore import FileStorage
from whoosh.lang import porter2
from whoosh.matching import AndNotMatcher
from whoosh.qparser import MultifieldParser, OrGroup, QueryParser, plugins, syntax
from whoosh.reading import IndexReader
from whoosh.searching import Searcher
from whoosh.util.filelock import LockBase
from whoosh.writing import IndexWriter

from hybrid_search.exceptions import ConfigError, StorageError
from hybrid_search.spelling import MAX_WORD_CHARS, Correction, Speller, Synonyms, VariantFilter

__all__ = [
    "DEFAULT_BOOSTS",
    "SYNONYM_BOOST",
    "TEXT_FIELDS",
    "Correction",
    "TextDoc",
    "TextIndex",
    "make_analyzer",
]

log = logging.getLogger(__name__)

DEFAULT_BOOSTS: dict[str, float] = {
    "title": 3.0,
    "tags": 2.0,
    "description": 1.0,
    "auto_tags": 0.5,
}
TEXT_FIELDS: tuple[str, ...] = ("title", "tags", "description", "auto_tags")
FIELD_ALIASES: dict[str, list[str]] = {"tags": ["tag"], "auto_tags": ["auto"]}
# The distinct words of a document as written (lower-case, not stemmed), for corrections only.
# A column, not an indexed field: searchers load every indexed field's terms and postings when
# they open, and a column is read only when asked for.
SURFACE_FIELD = "surface"
SYNONYM_BOOST = 0.8  # a synonym's match counts a little less than the word typed
TAG_SEPARATOR = ", "
MAX_QUERY_CHARS = 1000
LOCK_TIMEOUT_S = 10.0
OR_SCALE = 0.9
_WRITELOCK_NAME = "MAIN_WRITELOCK"  # what FileIndex.writer() locks

_WORD_RE = re.compile(r"\w+")
_TOKEN_RE = re.compile(r"\w+(?:\.?\w+)*")  # the analyzer's tokenizer
# "+" and "-" only count as operators at the start of a word, so "t-shirt" stays one phrase.
_PLUS_RE = r"(?<![^\s(])\+(?=[^\s)])"
_MINUS_RE = r"(?<![^\s(])-(?=[^\s)])"


@dataclass(frozen=True)
class TextDoc:
    """The searchable text of one photo, keyed by its database id."""

    id: int
    title: str = ""
    description: str = ""
    tags: tuple[str, ...] = ()
    auto_tags: tuple[str, ...] = ()


def make_analyzer() -> Analyzer:
    """Return the analyzer for every text field: tokenise, lower-case, fold US/UK spellings,
    drop stop words, stem."""
    # Whoosh's StemmingAnalyzer with VariantFilter before the stop words and the stemmer, which
    # stems British and American forms apart ("colour" -> "colour", "color" -> "color").
    # Porter2 rather than Whoosh's default Porter, which leaves doubled consonants ("running" ->
    # "runn", not "run"). Only module-level classes and functions, so Whoosh can pickle it.
    return (
        RegexTokenizer()
        | LowercaseFilter()
        | VariantFilter()
        | StopFilter()
        | StemFilter(stemfn=porter2.stem)
    )


def _schema() -> Schema:
    """Return the index schema."""
    return Schema(
        id=NUMERIC(numtype=int, bits=64, stored=True, unique=True, signed=True),
        surface=COLUMN(VarBytesColumn()),
        **{name: TEXT(analyzer=make_analyzer()) for name in TEXT_FIELDS},
    )


def _query_schema() -> Schema:
    """Return the schema the parser sees: the text fields only, so ``id:5`` is plain words."""
    return Schema(**{name: TEXT(analyzer=make_analyzer()) for name in TEXT_FIELDS})


class _FieldBoostPlugin(plugins.Plugin):
    """Give clauses with an explicit ``field:`` prefix the same boost as unprefixed ones."""

    def __init__(self, boosts: Mapping[str, float]) -> None:
        """Remember the per-field boosts."""
        self.boosts = dict(boosts)

    def filters(self, parser: QueryParser) -> list[tuple[object, int]]:
        """Run after FieldsPlugin (100) and before MultifieldPlugin (110)."""
        return [(self.do_boosts, 105)]

    def do_boosts(self, parser: QueryParser, group: syntax.GroupNode) -> syntax.GroupNode:
        """Set the boost of every fielded leaf node."""
        for node in group:
            if isinstance(node, syntax.GroupNode):
                self.do_boosts(parser, node)
            elif node.has_fieldname and node.fieldname is not None:
                node.set_boost(self.boosts.get(node.fieldname, 1.0))
        return group


class _PlusMinusPlugin(plugins.PlusMinusPlugin):
    """PlusMinusPlugin where a query of only ``-word`` clauses becomes ``NOT (...)``."""

    def do_plusminus(self, parser: QueryParser, group: syntax.GroupNode) -> syntax.GroupNode:
        """Sort a flat group into required, optional and banned clauses."""
        result = super().do_plusminus(parser, group)
        if isinstance(result, syntax.AndNotGroup):
            kept, banned = result.nodes
            if all(isinstance(node, syntax.Operator) for node in kept):
                return syntax.NotGroup([banned])
        return result


def _make_parser(boosts: Mapping[str, float]) -> QueryParser:
    """Build the query parser for the user-facing query language."""
    parser = MultifieldParser(
        list(TEXT_FIELDS),
        _query_schema(),
        fieldboosts=dict(boosts),
        group=OrGroup.factory(OR_SCALE),
    )
    # No boosts (^2), ranges ([a TO b]) or *:* in this language.
    for plugin_class in (plugins.BoostPlugin, plugins.RangePlugin, plugins.EveryPlugin):
        parser.remove_plugin_class(plugin_class)
    parser.add_plugin(_PlusMinusPlugin(plusexpr=_PLUS_RE, minusexpr=_MINUS_RE))
    parser.add_plugin(plugins.FieldAliasPlugin(FIELD_ALIASES))
    parser.add_plugin(_FieldBoostPlugin(boosts))
    return parser


class _AndNotMatcher(AndNotMatcher):
    """Whoosh's AndNotMatcher, fixed to check its first match against the excluded matcher.

    Whoosh 2.7.4 only does so when both start on the same document, so ``a -b`` returned the
    first document of ``a`` even when ``b`` matched it, whenever ``b`` matched an earlier one.
    """

    def _find_first(self) -> None:
        """Skip the leading matches of ``a`` that ``b`` excludes."""
        if self.a.is_active() and self.b.is_active() and self.b.id() <= self.a.id():
            self._find_next()


class _AndNot(wq.AndNot):
    """``a ANDNOT b`` with the fixed matcher."""

    def matcher(self, searcher: Searcher, context: object = None) -> AndNotMatcher:
        """Return a matcher for ``a`` without the documents ``b`` matches."""
        scored = self.a.matcher(searcher, context)
        banned = self.b.matcher(searcher, searcher.boolean_context())
        return _AndNotMatcher(scored, banned)


def _rewrite_negations(q: wq.Query) -> wq.Query:
    """Make NOT exclude: ``a OR NOT b`` -> ``a ANDNOT b``; a lone ``NOT b`` -> all but b."""
    if isinstance(q, wq.AndNot) and not isinstance(q, _AndNot):
        return _AndNot(_rewrite_negations(q.a), _rewrite_negations(q.b))
    if isinstance(q, wq.Not):
        return _AndNot(wq.Every(), _rewrite_negations(q.query))
    if isinstance(q, wq.And | wq.Or):
        subs = q.subqueries
        negatives = [_rewrite_negations(sub.query) for sub in subs if isinstance(sub, wq.Not)]
        positives = [_rewrite_negations(sub) for sub in subs if not isinstance(sub, wq.Not)]
        rewritten = copy.copy(q)
        rewritten.subqueries = positives
        if not negatives:
            return rewritten
        base: wq.Query = rewritten if positives else wq.Every()
        banned = negatives[0] if len(negatives) == 1 else wq.Or(negatives)
        return _AndNot(base, banned)
    return q.apply(_rewrite_negations)


def _is_null(q: wq.Query) -> bool:
    """Tell whether a query can match nothing by construction."""
    return q is wq.NullQuery or isinstance(q, type(wq.NullQuery))


class TextIndex:
    """A Whoosh index over photo annotations, searched with BM25F and per-field boosts.

    Writers take Whoosh's single write lock with a timeout and raise StorageError when another
    writer holds it too long. Every search opens a fresh searcher, so it sees every committed
    write. An index on disk that cannot be read, or was built with another schema or another
    version of the spelling tables, does not stop construction: every method except
    :meth:`rebuild` and :meth:`close` then raises StorageError until the index is rebuilt from
    the database.
    """

    def __init__(
        self,
        path: Path,
        boosts: Mapping[str, float] | None = None,
        *,
        lock_timeout: float = LOCK_TIMEOUT_S,
        synonyms: Synonyms | None = None,
    ) -> None:
        """Open the index in directory ``path``, creating the directory and index if missing.

        ``boosts`` maps field names to BM25F query-time boosts; fields left out keep their
        DEFAULT_BOOSTS value. ``synonyms`` are applied to queries. Neither needs reindexing.
        """
        self._path = Path(path)
        self._boosts = _check_boosts(boosts)
        self._lock_timeout = lock_timeout
        self._parser = _make_parser(self._boosts)
        self._analyzer = make_analyzer()
        self._synonyms: dict[tuple[str, ...], list[tuple[str, ...]]] = {}
        self.set_synonyms(synonyms)
        self._speller: tuple[object, Speller] | None = None  # (index state it was built for, it)
        self._cached_term_of = functools.lru_cache(maxsize=1 << 18)(self._term_of)
        self._speller_lock = threading.Lock()
        self._mutex = threading.RLock()
        self._local = threading.local()
        self._searchers: set[Searcher] = set()
        self._closed = False
        self._ix: index.Index | None = None
        self._unusable: str | None = None
        self._recover_interrupted_swap()
        try:
            self._path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageError(f"cannot create text index directory {self._path}: {exc}") from exc
        if not self._path.is_dir():
            raise StorageError(f"text index path {self._path} is not a directory")
        if not os.access(self._path, os.R_OK | os.W_OK | os.X_OK):
            raise StorageError(f"text index directory {self._path} is not readable and writable")
        self._open()

    def set_synonyms(self, synonyms: Synonyms | None) -> None:
        """Replace the synonym rules applied to later queries (None: no synonyms)."""
        self._synonyms = _compile_synonyms(synonyms, self._terms) if synonyms else {}

    def _terms(self, text: str) -> tuple[str, ...]:
        """Return the indexed terms of a text, as a query on any text field would see them."""
        return tuple(token.text for token in self._analyzer(text, mode="query"))

    # -- lifecycle -----------------------------------------------------------------------------

    def _open(self) -> None:
        """Open (or create) the index at the path, or record why it is unusable."""
        self._ix = None
        self._unusable = None
        try:
            if not index.exists_in(str(self._path)):
                self._ix = index.create_in(str(self._path), _schema())
                return
            ix = index.open_dir(str(self._path))
            if not _schema_compatible(ix.schema):
                ix.close()
                self._unusable = "it was built with a different schema"
                return
            self._ix = ix
        except OSError as exc:
            raise StorageError(f"cannot open text index at {self._path}: {exc}") from exc
        except Exception as exc:  # a corrupt index fails in many ways; it is derived data
            self._unusable = f"it cannot be read ({type(exc).__name__}: {exc})"

    def _recover_interrupted_swap(self) -> None:
        """Put the previous index back if a rebuild crashed between its two renames."""
        if self._path.exists():
            return
        backups = (
            sorted(
                self._path.parent.glob(f".{self._path.name}.old-*"),
                key=lambda p: p.stat().st_mtime,
            )
            if self._path.parent.is_dir()
            else []
        )
        if backups:
            log.warning("restoring text index %s from interrupted rebuild", self._path)
            with suppress(OSError):
                os.rename(backups[-1], self._path)

    def _index(self) -> index.Index:
        """Return the open index or raise StorageError."""
        if self._closed:
            raise StorageError(f"text index at {self._path} is closed")
        if self._ix is None:
            raise StorageError(
                f"text index at {self._path} is unusable: {self._unusable}; "
                "rebuild it from the database"
            )
        return self._ix

    def close(self) -> None:
        """Release the index; later calls raise StorageError. Closing twice is harmless."""
        with self._mutex:
            self._close_searchers()
            if self._ix is not None:
                self._ix.close()
            self._ix = None
            self._closed = True

    def _close_searchers(self) -> None:
        """Close every thread's cached searcher (before the index is closed or swapped)."""
        for searcher in list(self._searchers):
            with contextlib.suppress(Exception):  # already closed, or its files are gone
                searcher.close()
        self._searchers.clear()
        self._local = threading.local()

    def __enter__(self) -> TextIndex:
        """Use the index as a context manager that closes it."""
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Close the index."""
        self.close()

    # -- writing -------------------------------------------------------------------------------

    @contextmanager
    def _writer(self) -> Iterator[IndexWriter]:
        """Take the index writer (waiting up to the lock timeout), commit on success."""
        with self._mutex:
            ix = self._index()
        try:
            writer = ix.writer(timeout=self._lock_timeout)
        except index.LockError as exc:
            raise StorageError(
                f"text index at {self._path} is locked by another writer "
                f"(waited {self._lock_timeout:g}s)"
            ) from exc
        except OSError as exc:
            raise StorageError(f"cannot write text index at {self._path}: {exc}") from exc
        try:
            yield writer
        except BaseException:
            writer.cancel()
            raise
        try:
            writer.commit()
        except BaseException as exc:
            # A failed commit (disk full, say) keeps Whoosh's write lock; let it go, or every
            # later write would fail as "locked" until the process ends.
            if not getattr(writer, "is_closed", True):
                with contextlib.suppress(Exception):
                    writer.cancel()
            if isinstance(exc, OSError):
                raise StorageError(f"cannot commit text index at {self._path}: {exc}") from exc
            raise
        finally:
            self._speller = None

    def upsert(self, docs: Iterable[TextDoc]) -> None:
        """Add the documents, replacing any already indexed under the same id, in one commit."""
        batch = _dedupe(docs)
        if not batch:
            return
        with self._writer() as writer:
            for doc in batch:
                writer.update_document(**_fields(doc))

    def delete(self, ids: Iterable[int]) -> None:
        """Remove the documents with these ids; unknown ids are ignored."""
        unique = sorted({int(i) for i in ids})
        if not unique:
            return
        with self._writer() as writer:
            for doc_id in unique:
                writer.delete_by_term("id", doc_id)

    def rebuild(self, docs: Iterable[TextDoc]) -> None:
        """Build a fresh index from ``docs`` beside the old one, then swap it into place.

        The old index stays usable until the swap; a crash between the swap's two renames is
        repaired the next time the index is opened. Works even when the old index is unusable.
        """
        if self._closed:
            raise StorageError(f"text index at {self._path} is closed")
        parent = self._path.parent
        lock = self._take_old_lock()
        try:
            stale = list(parent.glob(f".{self._path.name}.rebuild-*"))
            if self._path.exists():
                stale += parent.glob(f".{self._path.name}.old-*")
            for leftover in stale:
                shutil.rmtree(leftover, ignore_errors=True)
            try:
                tmp = Path(tempfile.mkdtemp(prefix=f".{self._path.name}.rebuild-", dir=parent))
            except OSError as exc:
                raise StorageError(f"cannot create rebuild directory in {parent}: {exc}") from exc
            try:
                fresh = index.create_in(str(tmp), _schema())
                writer = fresh.writer()
                try:
                    for doc in _dedupe(docs):
                        writer.add_document(**_fields(doc))
                except BaseException:
                    writer.cancel()
                    raise
                writer.commit()
                fresh.close()
                self._swap_in(tmp)
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
        finally:
            if lock is not None:
                lock.release()

    def _take_old_lock(self) -> LockBase | None:
        """Hold the old index's write lock so no writer commits into it during a rebuild."""
        if not self._path.is_dir():
            return None
        lock = FileStorage(str(self._path)).lock(_WRITELOCK_NAME)
        try:
            acquired = _try_for(lock.acquire, self._lock_timeout)
        except OSError:
            return None  # an unwritable old index is about to be replaced anyway
        if not acquired:
            raise StorageError(
                f"text index at {self._path} is locked by another writer "
                f"(waited {self._lock_timeout:g}s); cannot rebuild"
            )
        return lock

    def _swap_in(self, fresh_dir: Path) -> None:
        """Replace the index directory with ``fresh_dir`` and reopen it."""
        with self._mutex:
            if self._ix is not None:
                self._ix.close()
                self._ix = None
            old: Path | None = None
            try:
                if self._path.exists():
                    old = Path(
                        tempfile.mkdtemp(prefix=f".{self._path.name}.old-", dir=self._path.parent)
                    )
                    os.replace(self._path, old)
                os.replace(fresh_dir, self._path)
            except OSError as exc:
                if old is not None and not self._path.exists():
                    with suppress(OSError):
                        os.replace(old, self._path)
                self._open()
                raise StorageError(
                    f"cannot swap rebuilt text index into {self._path}: {exc}"
                ) from exc
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)
            self._speller = None
            self._open()

    # -- reading -------------------------------------------------------------------------------

    @contextmanager
    def _searcher(self) -> Iterator[Searcher]:
        """A BM25F searcher that sees every committed write.

        Each thread keeps its searcher and refreshes it (which is free while the index is
        unchanged): opening one costs several milliseconds of segment reads at 100k photos.
        """
        local = self._local
        with self._mutex:
            ix = self._index()
            try:
                cached = getattr(local, "searcher", None)
                if cached is not None and getattr(local, "ix", None) is ix:
                    # refresh() hands the old searcher's segment readers on to the new one
                    # and closes those it drops, so the old searcher must not be closed.
                    searcher = cached.refresh()
                    self._searchers.discard(cached)
                else:
                    searcher = ix.searcher(weighting=scoring.BM25F())
                    if cached is not None:
                        self._searchers.discard(cached)
                        cached.close()
                self._searchers.add(searcher)
                local.searcher, local.ix = searcher, ix
            except Exception as exc:  # a damaged segment fails in many ways
                if getattr(local, "searcher", None) is not None:
                    self._searchers.discard(local.searcher)
                local.searcher = None
                raise StorageError(
                    f"cannot read text index at {self._path} ({type(exc).__name__}: {exc}); "
                    "rebuild it from the database"
                ) from exc
        try:
            yield searcher
        except StorageError:
            raise
        except Exception as exc:  # a damaged segment fails in many ways
            local.searcher = None
            with self._mutex:
                self._searchers.discard(searcher)
            searcher.close()
            raise StorageError(
                f"cannot read text index at {self._path} ({type(exc).__name__}: {exc}); "
                "rebuild it from the database"
            ) from exc

    def search(self, query: str, limit: int) -> list[tuple[int, float]]:
        """Return up to ``limit`` (id, BM25F score) pairs, best first; bad syntax never raises."""
        if limit <= 0 or not query or not query.strip():
            return []
        text = query[:MAX_QUERY_CHARS]
        with self._searcher() as searcher:
            parsed = self._parse(text)
            if parsed is not None:
                try:
                    return _run(searcher, self._expand(parsed), limit)
                except Exception:
                    log.debug("query %r failed, searching its words instead", text, exc_info=True)
            fallback = self._plain_query(text)
            if fallback is None:
                return []
            return _run(searcher, self._expand(fallback), limit)

    def _parse(self, text: str) -> wq.Query | None:
        """Parse with the full query language; None when the parser gives up or finds nothing."""
        try:
            parsed = self._parser.parse(text)
            parsed = _rewrite_negations(parsed).normalize()
        except Exception:
            log.debug("cannot parse query %r", text, exc_info=True)
            return None
        return None if _is_null(parsed) else parsed

    def _plain_query(self, text: str) -> wq.Query | None:
        """Return a ranked OR of the bare words in ``text`` over all fields, or None if none."""
        schema = self._parser.schema
        terms: list[wq.Query] = []
        for word in _WORD_RE.findall(text):
            for field in TEXT_FIELDS:
                boost = self._boosts.get(field, 1.0)
                for token in schema[field].process_text(word, mode="query"):
                    terms.append(wq.Term(field, token, boost=boost))
        if not terms:
            return None
        return wq.Or(terms, scale=OR_SCALE).normalize()

    def _expand(self, q: wq.Query) -> wq.Query:
        """Return the query with every word and phrase that has synonyms ORed with them."""
        if not self._synonyms:
            return q
        words: tuple[str, ...] | None = None
        if isinstance(q, wq.Term) and q.fieldname in TEXT_FIELDS and isinstance(q.text, str):
            words = (q.text,)
        elif isinstance(q, wq.Phrase) and q.fieldname in TEXT_FIELDS:
            words = tuple(q.words)
        if words is None:
            return q.apply(self._expand)
        alternatives = self._synonyms.get(words)
        if not alternatives:
            return q
        boost = q.boost * SYNONYM_BOOST
        return wq.Or([q, *(_words_query(q.fieldname, alt, boost) for alt in alternatives)])

    def correct(self, query: str) -> Correction | None:
        """Return ``query`` with the words the collection does not contain replaced by the
        closest ones it does, or None when every word is known or nothing is close.

        A word is known when its indexed term (folded, stemmed) is in any text field, or it has
        synonyms; stop words, numbers, operators, field names, wildcard and excluded words are
        never changed. Field prefixes stay (``title:cofee`` -> ``title:coffee``). The collection's
        words are cached until the next commit, by any writer; rebuilding the cache reads every
        document's words once (about a second for 100k photos).
        """
        if not query or not query.strip():
            return None
        speller = self._current_speller()
        known = {words[0] for words in self._synonyms if len(words) == 1}
        return speller.correct(query, known=known, scan_chars=MAX_QUERY_CHARS)

    def _current_speller(self) -> Speller:
        """Return the speller of the last commit, building it if the index changed since."""
        state = self._commit_state()
        with self._speller_lock:
            cached = self._speller
            if cached is not None and state is not None and cached[0] == state:
                return cached[1]
            started = time.perf_counter()
            with self._searcher() as searcher:
                counts = _surface_counts(searcher.reader())
            speller = Speller(counts.items(), self._cached_term_of)
            self._speller = None if state is None else (state, speller)
            log.debug(
                "built speller over %d words in %.3fs", len(speller), time.perf_counter() - started
            )
            return speller

    def _commit_state(self) -> tuple[int, int, int] | None:
        """Return what identifies the last commit (its generation, and its table of contents'
        inode and mtime, which differ after a rebuild), or None if it cannot be read."""
        with self._mutex:
            ix = self._index()
        try:
            generation = ix.latest_generation()
            toc = os.stat(self._path / f"_{ix.indexname}_{generation}.toc")
        except OSError:
            return None
        return (generation, toc.st_ino, toc.st_mtime_ns)

    def _term_of(self, word: str) -> str | None:
        """Return the indexed term of one word, or None for a stop word."""
        terms = self._terms(word)
        return terms[0] if len(terms) == 1 else None

    def ids(self, fresh: bool = False) -> set[int]:
        """Return the id of every indexed document; `fresh` re-reads the index from disk
        (as a check must) instead of using this thread's open searcher."""
        if fresh:
            with self._mutex:
                self._close_searchers()
                self._open()
        with self._searcher() as searcher:
            return {int(fields["id"]) for fields in searcher.reader().all_stored_fields()}

    def doc_count(self) -> int:
        """Return the number of indexed documents."""
        with self._searcher() as searcher:
            return int(searcher.doc_count())

    def vocabulary(self) -> set[str]:
        """Return the indexed (stemmed) terms of every text field that live documents still use."""
        vocab: set[str] = set()
        with self._searcher() as searcher:
            reader = searcher.reader()
            has_deletions = reader.has_deletions()
            for field in TEXT_FIELDS:
                for raw in reader.lexicon(field):
                    term = raw.decode("utf-8") if isinstance(raw, bytes) else str(raw)
                    if term in vocab:
                        continue
                    if has_deletions and not reader.postings(field, raw).is_active():
                        continue
                    vocab.add(term)
        return vocab


def _words_query(fieldname: str, words: tuple[str, ...], boost: float) -> wq.Query:
    """Return a term query for one word, a phrase query for several."""
    if len(words) == 1:
        return wq.Term(fieldname, words[0], boost=boost)
    # A phrase scores the sum of its words; share the boost so that "nyc => new york city"
    # does not rank a photo of New York City above one annotated "nyc".
    return wq.Phrase(fieldname, list(words), boost=boost / len(words))


def _compile_synonyms(
    synonyms: Synonyms, terms_of: Callable[[str], tuple[str, ...]]
) -> dict[tuple[str, ...], list[tuple[str, ...]]]:
    """Key synonym rules by indexed terms, so "TVs" and "colour" match "tv" and "color" rules."""
    compiled: dict[tuple[str, ...], list[tuple[str, ...]]] = {}
    for term, alternatives in synonyms.rules.items():
        key = terms_of(term)
        if not key:
            continue
        targets = compiled.setdefault(key, [])
        for alternative in alternatives:
            words = terms_of(alternative)
            if words and words != key and words not in targets:
                targets.append(words)
    return {key: targets for key, targets in compiled.items() if targets}


def _surface_counts(reader: IndexReader) -> Counter[str]:
    """Return how many live documents contain each surface word."""
    if not reader.has_column(SURFACE_FIELD):
        return Counter()
    values = reader.column_reader(SURFACE_FIELD)
    if reader.has_deletions():
        values = (v for docnum, v in enumerate(values) if not reader.is_deleted(docnum))
    # Each value holds a document's distinct words, so counting them all counts documents.
    return Counter(b" ".join(values).decode("utf-8").split())


def _surface_words(doc: TextDoc) -> str:
    """Return the distinct words of a document that corrections may suggest, space-separated."""
    text = "\n".join([doc.title or "", doc.description or "", *doc.tags, *doc.auto_tags])
    words = {word for word in _TOKEN_RE.findall(text.lower()) if word.isalpha()}
    return " ".join(sorted(w for w in words if 1 < len(w) <= MAX_WORD_CHARS))


def _run(searcher: Searcher, q: wq.Query, limit: int) -> list[tuple[int, float]]:
    """Run a query and return (id, score) pairs, best first, ties broken by id."""
    hits = searcher.search(q, limit=limit)
    results = [(int(hit["id"]), float(hit.score or 0.0)) for hit in hits]
    results.sort(key=lambda pair: (-pair[1], pair[0]))
    return results


def _fields(doc: TextDoc) -> dict[str, object]:
    """Return the Whoosh field values of a document."""
    return {
        "id": int(doc.id),
        "title": doc.title or "",
        "description": doc.description or "",
        "tags": TAG_SEPARATOR.join(tag for tag in doc.tags if tag),
        "auto_tags": TAG_SEPARATOR.join(tag for tag in doc.auto_tags if tag),
        SURFACE_FIELD: _surface_words(doc).encode("utf-8"),
    }


def _dedupe(docs: Iterable[TextDoc]) -> list[TextDoc]:
    """Keep the last document given for each id, in id order."""
    by_id = {int(doc.id): doc for doc in docs}
    return [by_id[i] for i in sorted(by_id)]


def _check_boosts(boosts: Mapping[str, float] | None) -> dict[str, float]:
    """Merge ``boosts`` over DEFAULT_BOOSTS, or raise ConfigError for a bad field or value."""
    merged = dict(DEFAULT_BOOSTS)
    for field, value in (boosts or {}).items():
        if field not in TEXT_FIELDS:
            raise ConfigError(f"text boost for unknown field {field!r}; use {list(TEXT_FIELDS)}")
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"text boost for {field!r} is not a number: {value!r}") from None
        if not math.isfinite(number) or number < 0:
            raise ConfigError(f"text boost for {field!r} must be a finite number >= 0: {value!r}")
        merged[field] = number
    return merged


def _schema_compatible(found: Schema) -> bool:
    """Tell whether an on-disk schema has the fields, field types and analysis this module
    writes (the analyzer's filters, and the version of the spelling tables)."""
    expected = _schema()
    if set(found.names()) != set(expected.names()):
        return False
    return all(
        type(found[name]) is type(expected[name])
        and _analysis(found[name]) == _analysis(expected[name])
        for name in expected.names()
    )


def _analysis(field: FieldType) -> tuple[tuple[str, str, object], ...]:
    """Return the kind and version of each step of a field's analyzer, and its column type."""
    analyzer = getattr(field, "analyzer", None)
    steps = [] if analyzer is None else getattr(analyzer, "items", [analyzer])
    column = getattr(field, "column_type", None)
    return tuple(
        (type(step).__module__, type(step).__qualname__, getattr(step, "version", None))
        for step in [*steps, *([column] if column is not None else [])]
    )


def _try_for(acquire: Callable[..., bool], timeout: float, delay: float = 0.1) -> bool:
    """Call ``acquire(blocking=False)`` until it returns True or ``timeout`` seconds pass."""
    deadline = time.monotonic() + timeout
    while True:
        if acquire(blocking=False):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(delay)
