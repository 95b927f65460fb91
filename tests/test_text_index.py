"""Tests for the Whoosh text index (TBIR side)."""

from __future__ import annotations

import os
import pickle
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from whoosh import index as whoosh_index
from whoosh.fields import ID, TEXT, Schema

from hybrid_search.exceptions import ConfigError, StorageError
from hybrid_search.text_index import DEFAULT_BOOSTS, TextDoc, TextIndex, make_analyzer

DOCS = [
    TextDoc(1, "Red car", "A red car parked on a quiet street", ("red car", "street")),
    TextDoc(2, "Blue bus", "A blue bus driving in the rain", ("bus", "rain")),
    TextDoc(3, "Running dog", "A dog running on the beach at sunset", ("dog", "beach", "sunset")),
    TextDoc(4, "Sunset", "The sun sets over the sea; a car drives by", ("sea", "sunset")),
    TextDoc(5, "Car red", "Old photo of a car, red paint peeling", ("vintage",)),
    TextDoc(6),
]


@pytest.fixture
def index(tmp_path: Path) -> Iterator[TextIndex]:
    """Return an index over DOCS."""
    ix = TextIndex(tmp_path / "text")
    ix.upsert(DOCS)
    yield ix
    ix.close()


def ids_of(results: list[tuple[int, float]]) -> list[int]:
    """Return the ids of search results, in order."""
    return [doc_id for doc_id, _ in results]


def analyze(text: str) -> list[str]:
    """Return the terms the analyzer makes of a text."""
    return [token.text for token in make_analyzer()(text)]


# -- analyzer --------------------------------------------------------------------------------------


def test_analyzer_drops_stop_words_and_stems() -> None:
    assert set(analyze("running cars")) == {"run", "car"}
    assert analyze("The cars are on the road") == ["car", "road"]


def test_analyzer_is_picklable() -> None:
    clone = pickle.loads(pickle.dumps(make_analyzer()))
    assert [t.text for t in clone("running cars")] == ["run", "car"]


# -- ranking and query language --------------------------------------------------------------------


def test_stop_words_only_query_returns_nothing(index: TextIndex) -> None:
    assert index.search("the", 10) == []
    assert index.search("the and of", 10) == []


@pytest.mark.parametrize("query", ["", "   ", "\t\n"])
def test_empty_query_returns_nothing(index: TextIndex, query: str) -> None:
    assert index.search(query, 10) == []


def test_limit(index: TextIndex) -> None:
    assert len(index.search("car", 1)) == 1
    assert index.search("car", 0) == []


def test_results_are_ids_and_scores_best_first(index: TextIndex) -> None:
    results = index.search("car", 10)
    assert set(ids_of(results)) == {1, 4, 5}
    assert all(isinstance(i, int) and isinstance(s, float) for i, s in results)
    scores = [score for _, score in results]
    assert scores == sorted(scores, reverse=True)
    assert all(score > 0 for score in scores)


def test_ranked_or_prefers_documents_matching_more_words(tmp_path: Path) -> None:
    ix = TextIndex(tmp_path / "ix")
    ix.upsert([TextDoc(1, description="beach"), TextDoc(2, description="beach dog")])
    results = ix.search("beach dog", 10)
    assert ids_of(results) == [2, 1]
    assert results[0][1] > results[1][1]


def test_phrase_respects_word_order(index: TextIndex) -> None:
    assert 1 in ids_of(index.search('"red car"', 10))
    assert 5 not in ids_of(index.search('"red car"', 10))
    assert 5 in ids_of(index.search('"car red"', 10))
    assert 1 not in ids_of(index.search('"car red"', 10))


def test_and_or_not(index: TextIndex) -> None:
    assert set(ids_of(index.search("car AND sunset", 10))) == {4}
    assert set(ids_of(index.search("bus OR dog", 10))) == {2, 3}
    assert set(ids_of(index.search("car NOT sunset", 10))) == {1, 5}
    assert set(ids_of(index.search("(bus OR dog) AND rain", 10))) == {2}


def test_minus_excludes(index: TextIndex) -> None:
    assert set(ids_of(index.search("car -sunset", 10))) == {1, 5}
    assert set(ids_of(index.search('car -"red car"', 10))) == {4, 5}


@pytest.mark.parametrize("query", ["automobile -tv", "automobile NOT tv", "-tv automobile"])
def test_exclusion_applies_to_the_first_match(tmp_path: Path, query: str) -> None:
    # Whoosh 2.7.4's AndNotMatcher let this through when the excluded word matched earlier.
    ix = TextIndex(tmp_path / "ix")
    ix.upsert(
        [
            TextDoc(1, "tv"),
            TextDoc(2, "Automobile", "a tv on the back seat"),
            TextDoc(3, "automobile"),
        ]
    )
    assert ids_of(ix.search(query, 10)) == [3]


def test_plus_requires(index: TextIndex) -> None:
    assert set(ids_of(index.search("+sunset car", 10))) == {3, 4}
    assert ids_of(index.search("+sunset car", 10))[0] == 4


def test_hyphenated_word_is_not_an_exclusion(tmp_path: Path) -> None:
    ix = TextIndex(tmp_path / "ix")
    ix.upsert([TextDoc(1, "Blue t-shirt"), TextDoc(2, "Shirt")])
    assert set(ids_of(ix.search("blue t-shirt", 10))) == {1, 2}


@pytest.mark.parametrize("query", ["-car", "NOT car", "-car -bus", "-car AND -bus"])
def test_only_negative_terms_return_everything_else(index: TextIndex, query: str) -> None:
    results = index.search(query, 10)
    expected = {2, 3, 6} if "bus" not in query else {3, 6}
    assert set(ids_of(results)) == expected
    assert len({score for _, score in results}) == 1


def test_field_restriction(index: TextIndex) -> None:
    assert set(ids_of(index.search("sunset", 10))) == {3, 4}
    assert set(ids_of(index.search("title:sunset", 10))) == {4}
    assert set(ids_of(index.search("tags:vintage", 10))) == {5}
    assert set(ids_of(index.search("tag:vintage", 10))) == {5}
    assert set(ids_of(index.search("description:peeling", 10))) == {5}
    assert index.search("title:peeling", 10) == []
    assert set(ids_of(index.search('title:"red car"', 10))) == {1}


def test_unknown_field_searches_plain_words(index: TextIndex) -> None:
    assert set(ids_of(index.search("foo:bus", 10))) == {2}
    assert set(ids_of(index.search("id:1 dog", 10))) == {3}


def test_prefix(index: TextIndex) -> None:
    assert set(ids_of(index.search("sun*", 10))) == {3, 4}
    assert set(ids_of(index.search("Vint*", 10))) == {5}


def test_title_boost_outranks_description(tmp_path: Path) -> None:
    ix = TextIndex(tmp_path / "ix")
    ix.upsert([TextDoc(1, description="harbour at dawn"), TextDoc(2, title="harbour at dawn")])
    assert ids_of(ix.search("harbour", 10)) == [2, 1]
    assert ids_of(ix.search("harbour dawn", 10)) == [2, 1]


def test_boosts_apply_at_query_time(tmp_path: Path) -> None:
    path = tmp_path / "ix"
    ix = TextIndex(path)
    ix.upsert([TextDoc(1, description="harbour"), TextDoc(2, title="harbour")])
    ix.close()
    flipped = TextIndex(path, boosts={"title": 1.0, "tags": 1.0, "description": 5.0})
    assert ids_of(flipped.search("harbour", 10)) == [1, 2]


def test_explicit_field_gets_its_boost(tmp_path: Path) -> None:
    ix = TextIndex(tmp_path / "ix")
    ix.upsert([TextDoc(1, "harbour")])
    plain = ix.search("harbour", 10)
    fielded = ix.search("title:harbour", 10)
    assert fielded[0][1] == pytest.approx(plain[0][1])


@pytest.mark.parametrize(
    "boosts", [{"body": 2.0}, {"title": -1.0}, {"title": float("nan")}, {"tags": "high"}]
)
def test_bad_boosts_are_rejected(tmp_path: Path, boosts: dict[str, object]) -> None:
    with pytest.raises(ConfigError, match="boost"):
        TextIndex(tmp_path / "ix", boosts=boosts)  # type: ignore[arg-type]


def test_partial_boosts_keep_defaults_for_other_fields(tmp_path: Path) -> None:
    ix = TextIndex(tmp_path / "ix", boosts={"description": 10.0})
    ix.upsert([TextDoc(1, tags=("harbour",)), TextDoc(2, title="harbour")])
    assert ids_of(ix.search("harbour", 10)) == [2, 1]


def test_default_boosts() -> None:
    assert DEFAULT_BOOSTS == {"title": 3.0, "tags": 2.0, "description": 1.0, "auto_tags": 0.5}


MALFORMED = [
    '"unclosed',
    'unclosed"',
    '"',
    '""',
    "AND",
    "OR",
    "NOT",
    "AND OR NOT",
    "car AND",
    "OR car",
    "car NOT",
    "(((",
    ")))",
    ")",
    "(car",
    "car)",
    "()",
    "title:",
    "title:title:",
    ":car",
    ":",
    "tags:(",
    "foo:bar",
    "foo:",
    "id:",
    "id:abc",
    "id:[1 TO 5]",
    "-",
    "--",
    "- car",
    "+",
    "+-car",
    "-+",
    "*",
    "**",
    "*:*",
    "?",
    "title:*",
    "car*?*",
    "car^",
    "car^^2",
    "car~",
    "car~2",
    "[a TO b]",
    "{a TO",
    "[",
    "\\",
    "\\\\",
    "'",
    "'unclosed",
    "\x00",
    "car\x00bus",
    "\x00" * 50,
    "🚗 🚌",
    "été à la plage",
    "东京 夜景",
    "\u200b\u200d",
    "\ufffd",
    "a" * 5000,
    "car " * 2000,
    "(" * 2000,
    '"' * 999,
    "NOT " * 500,
    "-" * 3000,
    "*a" * 500,
    "title:" * 300,
    "car AND (bus OR (dog NOT (sunset",
    "<script>alert(1)</script>",
    "%s %d {} {0}",
    "car\r\nbus\tdog",
]


@pytest.mark.parametrize("query", MALFORMED)
def test_malformed_query_never_raises(index: TextIndex, query: str) -> None:
    results = index.search(query, 10)
    assert isinstance(results, list)
    assert all(isinstance(i, int) and isinstance(s, float) for i, s in results)


def test_malformed_query_falls_back_to_plain_words(index: TextIndex) -> None:
    assert set(ids_of(index.search('"bus', 10))) == {2}
    assert set(ids_of(index.search("(((dog", 10))) == {3}
    assert set(ids_of(index.search("bus\x00", 10))) == {2}


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    query=st.text(max_size=80)
    | st.lists(
        st.sampled_from(
            [
                "car",
                "red",
                "AND",
                "OR",
                "NOT",
                "(",
                ")",
                '"',
                "-",
                "+",
                "*",
                "?",
                ":",
                "title:",
                "tag:",
                "foo:",
                "^2",
                "~",
                "[",
                "]",
                "TO",
                "the",
                " ",
                "\x00",
                "é",
            ]
        ),
        max_size=12,
    ).map("".join)
)
def test_any_query_returns_id_score_pairs(index: TextIndex, query: str) -> None:
    results = index.search(query, 5)
    assert isinstance(results, list)
    assert len(results) <= 5
    for doc_id, score in results:
        assert isinstance(doc_id, int)
        assert isinstance(score, float)


# -- writing ---------------------------------------------------------------------------------------


def test_ids_and_doc_count(index: TextIndex) -> None:
    assert index.ids() == {1, 2, 3, 4, 5, 6}
    assert index.doc_count() == 6


def test_upsert_replaces(index: TextIndex) -> None:
    index.upsert([TextDoc(2, "Green tram", "A tram in the snow", ("tram",))])
    assert index.doc_count() == 6
    assert index.ids() == {1, 2, 3, 4, 5, 6}
    assert index.search("bus", 10) == []
    assert ids_of(index.search("tram", 10)) == [2]
    assert "bus" not in index.vocabulary()


def test_upsert_same_id_twice_in_one_batch_keeps_last(tmp_path: Path) -> None:
    ix = TextIndex(tmp_path / "ix")
    ix.upsert([TextDoc(1, "first"), TextDoc(1, "second")])
    assert ix.doc_count() == 1
    assert ix.search("first", 10) == []
    assert ids_of(ix.search("second", 10)) == [1]


def test_upsert_nothing_is_a_no_op(index: TextIndex) -> None:
    index.upsert([])
    index.delete([])
    assert index.doc_count() == 6


def test_large_ids(tmp_path: Path) -> None:
    ix = TextIndex(tmp_path / "ix")
    big = 2**40 + 7
    ix.upsert([TextDoc(big, "lighthouse")])
    assert ix.search("lighthouse", 10)[0][0] == big
    ix.delete([big])
    assert ix.ids() == set()


def test_delete(index: TextIndex) -> None:
    index.delete([2, 3, 999])
    assert index.ids() == {1, 4, 5, 6}
    assert index.doc_count() == 4
    assert index.search("bus", 10) == []
    assert index.search("dog", 10) == []


def test_vocabulary_holds_stemmed_terms(index: TextIndex) -> None:
    vocab = index.vocabulary()
    assert {"run", "car", "dog", "sunset", "vintag"} <= vocab
    assert "running" not in vocab
    assert "the" not in vocab


def test_reopen_sees_data(tmp_path: Path) -> None:
    path = tmp_path / "ix"
    ix = TextIndex(path)
    ix.upsert(DOCS)
    expected = ix.search("red car", 10)
    ix.close()
    again = TextIndex(path)
    assert again.ids() == {doc.id for doc in DOCS}
    assert again.search("red car", 10) == expected


def test_second_instance_sees_committed_writes(tmp_path: Path) -> None:
    path = tmp_path / "ix"
    reader = TextIndex(path)
    writer = TextIndex(path)
    assert reader.search("kayak", 10) == []
    writer.upsert([TextDoc(9, "Kayak")])
    assert ids_of(reader.search("kayak", 10)) == [9]


def test_locked_writer_raises_storage_error(tmp_path: Path) -> None:
    path = tmp_path / "ix"
    holder = TextIndex(path)
    other = TextIndex(path, lock_timeout=0.2)
    held = holder._index().writer()
    try:
        with pytest.raises(StorageError, match="locked"):
            other.upsert([TextDoc(1, "x")])
        with pytest.raises(StorageError, match="locked"):
            other.rebuild([TextDoc(1, "x")])
    finally:
        held.cancel()
    other.upsert([TextDoc(1, "kayak")])
    assert other.ids() == {1}


def test_closed_index_raises(tmp_path: Path) -> None:
    ix = TextIndex(tmp_path / "ix")
    ix.close()
    ix.close()
    with pytest.raises(StorageError, match="closed"):
        ix.search("car", 10)


def test_path_that_is_a_file_raises(tmp_path: Path) -> None:
    path = tmp_path / "file"
    path.write_text("not a directory")
    with pytest.raises(StorageError):
        TextIndex(path)


# -- rebuild ---------------------------------------------------------------------------------------

QUERIES = ["car", "red car", '"red car"', "sunset -car", "sun*", "title:car", "dog OR bus", "-car"]


def test_rebuild_matches_incremental_upserts(tmp_path: Path) -> None:
    incremental = TextIndex(tmp_path / "a")
    for doc in DOCS:
        incremental.upsert([doc])
    rebuilt = TextIndex(tmp_path / "b")
    rebuilt.upsert([TextDoc(99, "stale document about cars")])
    rebuilt.rebuild(reversed(DOCS))
    assert rebuilt.ids() == incremental.ids()
    for query in QUERIES:
        got = rebuilt.search(query, 10)
        want = incremental.search(query, 10)
        assert ids_of(got) == ids_of(want), query
        assert [s for _, s in got] == pytest.approx([s for _, s in want]), query


def test_rebuild_replaces_contents_in_place(index: TextIndex, tmp_path: Path) -> None:
    index.rebuild([TextDoc(10, "Lighthouse")])
    assert index.ids() == {10}
    assert index.search("car", 10) == []
    assert TextIndex(tmp_path / "text").ids() == {10}
    leftovers = [p.name for p in tmp_path.iterdir() if p.name != "text"]
    assert leftovers == []


def test_rebuild_into_missing_directory(tmp_path: Path) -> None:
    ix = TextIndex(tmp_path / "ix")
    ix.rebuild(DOCS)
    assert ix.doc_count() == len(DOCS)


def test_crash_mid_rebuild_leaves_old_index_usable(index: TextIndex, tmp_path: Path) -> None:
    def exploding() -> Iterator[TextDoc]:
        yield TextDoc(10, "Lighthouse")
        raise RuntimeError("database went away")

    before = index.search("red car", 10)
    with pytest.raises(RuntimeError):
        index.rebuild(exploding())
    assert index.search("red car", 10) == before
    assert index.ids() == {doc.id for doc in DOCS}
    assert [p.name for p in tmp_path.iterdir()] == ["text"]
    index.upsert([TextDoc(11, "Kayak")])
    assert ids_of(index.search("kayak", 10)) == [11]


def test_interrupted_swap_is_repaired_on_open(tmp_path: Path) -> None:
    path = tmp_path / "ix"
    ix = TextIndex(path)
    ix.upsert(DOCS)
    ix.close()
    os.rename(path, tmp_path / ".ix.old-abc123")
    again = TextIndex(path)
    assert again.ids() == {doc.id for doc in DOCS}


# Whoosh 2.7.4 leaves the corrupt TOC file open when it fails to read it.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_corrupt_index_raises_until_rebuilt(tmp_path: Path) -> None:
    path = tmp_path / "ix"
    ix = TextIndex(path)
    ix.upsert(DOCS)
    ix.close()
    for toc in path.glob("*.toc"):
        toc.write_bytes(b"garbage")
    broken = TextIndex(path)
    with pytest.raises(StorageError, match="rebuild"):
        broken.search("car", 10)
    with pytest.raises(StorageError, match="rebuild"):
        broken.upsert([TextDoc(1, "x")])
    broken.rebuild(DOCS)
    assert broken.ids() == {doc.id for doc in DOCS}
    assert set(ids_of(broken.search("car", 10))) == {1, 4, 5}


# Whoosh 2.7.4 leaves the damaged segment file open when it fails to read it.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_damaged_segment_raises_storage_error_until_rebuilt(tmp_path: Path) -> None:
    path = tmp_path / "ix"
    ix = TextIndex(path)
    ix.upsert(DOCS)
    for segment in path.glob("*.seg"):
        segment.write_bytes(segment.read_bytes()[:100])
    with pytest.raises(StorageError, match="rebuild"):
        ix.search("car", 10)
    with pytest.raises(StorageError, match="rebuild"):
        ix.ids()
    ix.rebuild(DOCS)
    assert set(ids_of(ix.search("car", 10))) == {1, 4, 5}


def test_index_with_other_schema_must_be_rebuilt(tmp_path: Path) -> None:
    path = tmp_path / "ix"
    path.mkdir()
    whoosh_index.create_in(str(path), Schema(id=ID(stored=True, unique=True), body=TEXT()))
    ix = TextIndex(path)
    with pytest.raises(StorageError, match="different schema"):
        ix.doc_count()
    ix.rebuild(DOCS)
    assert ix.doc_count() == len(DOCS)
