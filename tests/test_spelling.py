"""Tests for spelling: US/UK folding, synonyms, auto-tags and "did you mean" corrections."""

from __future__ import annotations

import pickle
import random
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from whoosh import index as whoosh_index
from whoosh.fields import NUMERIC, TEXT, Schema

from hybrid_search.exceptions import ConfigError, StorageError
from hybrid_search.spelling import (
    DEFAULT_SYNONYMS_PATH,
    FOLDING_VERSION,
    VARIANTS,
    Correction,
    Speller,
    VariantFilter,
    _Lexicon,
    edit_distance,
    fold,
    load_synonyms,
    parse_synonyms,
    query_words,
)
from hybrid_search.text_index import TextDoc, TextIndex, _schema, make_analyzer


def ids_of(results: list[tuple[int, float]]) -> list[int]:
    """Return the ids of search results, in order."""
    return [doc_id for doc_id, _ in results]


def analyze(text: str) -> list[str]:
    """Return the terms the analyzer makes of a text."""
    return [token.text for token in make_analyzer()(text)]


# -- US/UK folding ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("british", "american"),
    [
        ("colour", "color"),
        ("colours", "colors"),
        ("colourful", "colorful"),
        ("watercolours", "watercolors"),
        ("grey", "gray"),
        ("greyish", "grayish"),
        ("centre", "center"),
        ("centred", "centered"),
        ("centring", "centering"),
        ("theatres", "theaters"),
        ("aeroplane", "airplane"),
        ("tyres", "tires"),
        ("organise", "organize"),
        ("organisation", "organization"),
        ("reorganised", "reorganized"),
        ("harbour", "harbor"),
        ("jewellery", "jewelry"),
        ("favourite", "favorite"),
        ("neighbourhood", "neighborhood"),
        ("metre", "meter"),
        ("kilometres", "kilometers"),
        ("catalogue", "catalog"),
        ("programme", "program"),
        ("aluminium", "aluminum"),
        ("moustache", "mustache"),
        ("pyjamas", "pajamas"),
        ("plough", "plow"),
        ("kerb", "curb"),
        ("analyse", "analyze"),
        ("travelled", "traveled"),
        ("vapourise", "vaporize"),
    ],
)
def test_fold_british_to_american(british: str, american: str) -> None:
    assert fold(british) == american
    assert fold(american) == american
    assert analyze(british) == analyze(american)


@pytest.mark.parametrize(
    "word",
    [
        "four",
        "hour",
        "tour",
        "your",
        "pour",
        "flour",
        "contour",
        "detour",
        "promise",
        "wise",
        "exercise",
        "advertise",
        "surprise",
        "enterprise",
        "franchise",
        "premise",
        "noise",
        "acre",
        "genre",
        "ogre",
        "massacre",
        "timbre",
        "greyhound",
        "analyses",
    ],
)
def test_false_friends_are_not_folded(word: str) -> None:
    assert fold(word) == word


def test_every_american_form_is_left_alone() -> None:
    for british, american in VARIANTS.items():
        assert fold(american) == american, (british, american)
        assert fold(fold(british)) == fold(british), british


def test_variant_filter_pickles_with_its_version() -> None:
    clone = pickle.loads(pickle.dumps(make_analyzer()))
    assert [t.text for t in clone("Grey colours")] == ["gray", "color"]
    assert VariantFilter().version == FOLDING_VERSION


@pytest.fixture
def variants(tmp_path: Path) -> Iterator[TextIndex]:
    """Return an index of British and American spellings."""
    ix = TextIndex(tmp_path / "ix")
    ix.upsert(
        [
            TextDoc(1, "Colour study", "grey sky over the harbour"),
            TextDoc(2, "Color study", "gray sky over the harbor"),
            TextDoc(3, "Town centre", tags=("theatre",)),
            TextDoc(4, "Four hours", "a tour"),
        ]
    )
    yield ix
    ix.close()


@pytest.mark.parametrize("query", ["colour", "color", "grey", "gray", "harbour", "harbor"])
def test_both_spellings_find_both_spellings(variants: TextIndex, query: str) -> None:
    assert set(ids_of(variants.search(query, 10))) == {1, 2}


def test_folding_applies_to_phrases_and_fields(variants: TextIndex) -> None:
    assert set(ids_of(variants.search('"gray sky"', 10))) == {1, 2}
    assert ids_of(variants.search("title:center", 10)) == [3]
    assert ids_of(variants.search("tags:theater", 10)) == [3]


def test_false_friends_stay_apart(variants: TextIndex) -> None:
    assert ids_of(variants.search("four", 10)) == [4]
    assert ids_of(variants.search("tour", 10)) == [4]
    assert variants.search("for", 10) == []
    assert variants.search("tor", 10) == []


def test_index_of_another_folding_version_must_be_rebuilt(tmp_path: Path) -> None:
    path = tmp_path / "ix"
    path.mkdir()
    schema = _schema()
    for name in schema.names():
        for step in getattr(getattr(schema[name], "analyzer", None), "items", []):
            if isinstance(step, VariantFilter):
                step.version = FOLDING_VERSION - 1
    whoosh_index.create_in(str(path), schema)
    ix = TextIndex(path)
    with pytest.raises(StorageError, match="different schema"):
        ix.doc_count()
    ix.rebuild([TextDoc(1, "Colour")])
    assert ids_of(ix.search("color", 10)) == [1]


def test_index_from_before_auto_tags_must_be_rebuilt(tmp_path: Path) -> None:
    path = tmp_path / "ix"
    path.mkdir()
    old = Schema(
        id=NUMERIC(numtype=int, bits=64, stored=True, unique=True, signed=True),
        title=TEXT(),
        description=TEXT(),
        tags=TEXT(),
    )
    whoosh_index.create_in(str(path), old)
    ix = TextIndex(path)
    with pytest.raises(StorageError, match="different schema"):
        ix.search("car", 10)
    ix.rebuild([TextDoc(1, "car", auto_tags=("sports car",))])
    assert ids_of(ix.search("car", 10)) == [1]


# -- synonyms file ---------------------------------------------------------------------------------

SYNONYMS = """
# photo words
tv = television
car, automobile, auto     # an equivalent group
nyc => new york city
black and white = monochrome

Pic ,  Picture
"""


def test_parse_equivalent_groups_one_way_rules_and_comments() -> None:
    syn = parse_synonyms(SYNONYMS)
    assert syn.expansions("tv") == ("television",)
    assert syn.expansions("television") == ("tv",)
    assert syn.expansions("car") == ("automobile", "auto")
    assert syn.expansions("auto") == ("car", "automobile")
    assert syn.expansions("nyc") == ("new york city",)
    assert syn.expansions("new york city") == ()
    assert syn.expansions("Black  and White") == ("monochrome",)
    assert syn.expansions("pic") == ("picture",)
    assert len(syn) == 10


def test_rules_for_one_term_are_merged() -> None:
    syn = parse_synonyms("car, automobile\ncar => vehicle\nauto = car")
    assert syn.expansions("car") == ("automobile", "vehicle", "auto")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("tv = television\ntelevision\n", r"synonyms\.txt:2: expected"),
        ("\n\nnyc => new york => city", r"synonyms\.txt:3: .*one '=>'"),
        ("a, b = c = d", r"synonyms\.txt:1: .*one '='"),
        ("tv = ", r"synonyms\.txt:1: empty term"),
        ("tv, , television", r"synonyms\.txt:1: empty term"),
        ("# ok\nthe = a", r"synonyms\.txt:2: 'the' has no searchable word"),
        ("tv = TV", r"synonyms\.txt:1: .*two different terms"),
        ("us => united states", r"'us' has no searchable word"),
    ],
)
def test_malformed_line_names_file_and_line(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_synonyms(text, "config/synonyms.txt")


def test_load_synonyms_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="missing.txt"):
        load_synonyms(tmp_path / "missing.txt")
    binary = tmp_path / "binary.txt"
    binary.write_bytes(b"tv = t\xe9l\xe9vision")
    with pytest.raises(ConfigError, match="binary.txt.*UTF-8"):
        load_synonyms(binary)
    bad = tmp_path / "bad.txt"
    bad.write_text("tv = television\noops\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"bad\.txt:2"):
        load_synonyms(bad)


def test_shipped_synonyms_file_loads() -> None:
    syn = load_synonyms(DEFAULT_SYNONYMS_PATH)
    assert len(syn) >= 100
    assert "television" in syn.expansions("tv")
    assert "black and white" in syn.expansions("bw")
    assert "new york city" in syn.expansions("nyc")


# -- synonyms at query time ------------------------------------------------------------------------


@pytest.fixture
def synonyms_index(tmp_path: Path) -> Iterator[TextIndex]:
    """Return an index searched with the SYNONYMS rules."""
    ix = TextIndex(tmp_path / "ix", synonyms=parse_synonyms(SYNONYMS))
    ix.upsert(
        [
            TextDoc(1, "tv"),
            TextDoc(2, "television"),
            TextDoc(3, "New York City skyline"),
            TextDoc(4, "nyc"),
            TextDoc(5, "Monochrome street"),
            TextDoc(6, "Automobile", description="a television on the back seat"),
        ]
    )
    yield ix
    ix.close()


def test_word_finds_its_synonyms(synonyms_index: TextIndex) -> None:
    assert set(ids_of(synonyms_index.search("tv", 10))) == {1, 2, 6}
    assert set(ids_of(synonyms_index.search("televisions", 10))) == {1, 2, 6}
    assert set(ids_of(synonyms_index.search("television", 10))) == {1, 2, 6}
    assert set(ids_of(synonyms_index.search("car", 10))) == {6}


def test_synonym_matches_score_below_exact_matches(synonyms_index: TextIndex) -> None:
    assert ids_of(synonyms_index.search("tv", 2)) == [1, 2]
    assert ids_of(synonyms_index.search("television", 2)) == [2, 1]
    nyc = synonyms_index.search("nyc", 10)
    assert ids_of(nyc) == [4, 3]
    assert nyc[0][1] > nyc[1][1]


def test_one_way_rule_does_not_go_backwards(synonyms_index: TextIndex) -> None:
    assert ids_of(synonyms_index.search("new york city", 10)) == [3]
    assert ids_of(synonyms_index.search('"new york city"', 10)) == [3]


def test_quoted_phrase_with_synonyms(synonyms_index: TextIndex) -> None:
    assert ids_of(synonyms_index.search('"black and white"', 10)) == [5]
    assert synonyms_index.search("black", 10) == []


def test_synonyms_keep_field_restrictions_and_exclusions(synonyms_index: TextIndex) -> None:
    assert set(ids_of(synonyms_index.search("title:tv", 10))) == {1, 2}
    assert set(ids_of(synonyms_index.search("description:tv", 10))) == {6}
    assert set(ids_of(synonyms_index.search("car -tv", 10))) == set()
    assert set(ids_of(synonyms_index.search("-tv", 10))) == {3, 4, 5}


def test_synonyms_can_be_replaced_without_reindexing(synonyms_index: TextIndex) -> None:
    synonyms_index.set_synonyms(None)
    assert ids_of(synonyms_index.search("tv", 10)) == [1]
    synonyms_index.set_synonyms(parse_synonyms("tv => television"))
    assert set(ids_of(synonyms_index.search("tv", 10))) == {1, 2, 6}
    assert ids_of(synonyms_index.search("television", 10)) == [2, 6]


# -- auto-tags -------------------------------------------------------------------------------------


@pytest.fixture
def tagged(tmp_path: Path) -> Iterator[TextIndex]:
    """Return an index where one photo has a manual tag and another the same machine tag."""
    ix = TextIndex(tmp_path / "ix")
    ix.upsert(
        [
            TextDoc(1, tags=("cat",)),
            TextDoc(2, auto_tags=("tabby cat", "sofa")),
            TextDoc(3, "Golden retriever", auto_tags=("golden retriever",)),
        ]
    )
    yield ix
    ix.close()


def test_manual_tag_outranks_auto_tag(tagged: TextIndex) -> None:
    results = tagged.search("cat", 10)
    assert ids_of(results) == [1, 2]
    assert results[0][1] > results[1][1]


def test_auto_tags_field_prefixes(tagged: TextIndex) -> None:
    assert ids_of(tagged.search("auto:cat", 10)) == [2]
    assert ids_of(tagged.search("auto_tags:cat", 10)) == [2]
    assert ids_of(tagged.search("tags:cat", 10)) == [1]
    assert ids_of(tagged.search('auto:"tabby cat"', 10)) == [2]
    assert ids_of(tagged.search("sofa", 10)) == [2]
    assert tagged.search("title:sofa", 10) == []


def test_auto_tags_boost_is_configurable(tmp_path: Path) -> None:
    ix = TextIndex(tmp_path / "ix", boosts={"auto_tags": 5.0})
    ix.upsert([TextDoc(1, tags=("cat",)), TextDoc(2, auto_tags=("cat",))])
    assert ids_of(ix.search("cat", 10)) == [2, 1]


# -- query words -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "words"),
    [
        ("red car", ["red", "car"]),
        ("red AND car OR bus", ["red", "car", "bus"]),
        ("car NOT bus", ["car"]),
        ("car -bus +dog", ["car", "dog"]),
        ("car NOT (bus dog) cat", ["car", "cat"]),
        ('car -"red bus" "old dog"', ["car", "old", "dog"]),
        ("title:car tag:dog -auto:cat", ["car", "dog"]),
        ("sun* *set car", ["car"]),
        ("blue t-shirt", ["blue", "t", "shirt"]),
        ('"unclosed phrase', ["unclosed", "phrase"]),
    ],
)
def test_query_words(query: str, words: list[str]) -> None:
    found = query_words(query)
    assert [w.text for w in found] == words
    assert all(query[w.start : w.end] == w.text for w in found)


# -- edit distance ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("a", "b", "distance"),
    [
        ("", "", 0),
        ("cat", "cat", 0),
        ("cat", "cart", 1),
        ("cat", "at", 1),
        ("cat", "cut", 1),
        ("cat", "act", 1),
        ("cofee", "coffee", 1),
        ("elefants", "elephants", 2),
        ("ca", "abc", 3),
        ("", "abc", 3),
    ],
)
def test_edit_distance(a: str, b: str, distance: int) -> None:
    assert edit_distance(a, b) == distance
    assert edit_distance(b, a) == distance


@settings(max_examples=60, deadline=None)
@given(
    words=st.lists(st.text("abcdé", min_size=1, max_size=9), min_size=1, max_size=60),
    pattern=st.text("abcdéx", min_size=1, max_size=9),
    limit=st.integers(0, 3),
)
def test_bit_parallel_scan_matches_edit_distance(
    words: list[str], pattern: str, limit: int
) -> None:
    lexicon = _Lexicon(set(words))
    got = sorted(lexicon.within(pattern, limit))
    want = sorted(
        (w, edit_distance(pattern, w)) for w in set(words) if edit_distance(pattern, w) <= limit
    )
    assert got == want


def test_bit_parallel_scan_of_long_words() -> None:
    rng = random.Random(7)
    words = {"".join(rng.choice("abc") for _ in range(rng.randint(50, 63))) for _ in range(200)}
    lexicon = _Lexicon(words)
    pattern = next(iter(words))[:-1] + "z"
    got = dict(lexicon.within(pattern, 2))
    assert got == {w: d for w in words if (d := edit_distance(pattern, w)) <= 2}


# -- corrections -----------------------------------------------------------------------------------

CORPUS = [
    TextDoc(1, "Coffee cup", "A cup of coffee on the table", ("coffee", "table")),
    TextDoc(2, "Elephants", "Two elephants at a waterhole", ("elephants", "safari")),
    TextDoc(3, "Red car", "A red car in the street", ("car",)),
    TextDoc(4, "Car park", "Cars parked in a row", ("car",)),
    TextDoc(5, "Cat", "A cat asleep", ("cat",)),
    TextDoc(6, "Grey sky", "Colour study of the harbour", ("sky",)),
    TextDoc(7, auto_tags=("tabby cat", "television")),
]


@pytest.fixture
def corpus(tmp_path: Path) -> Iterator[TextIndex]:
    """Return an index over CORPUS."""
    ix = TextIndex(tmp_path / "ix")
    ix.upsert(CORPUS)
    yield ix
    ix.close()


def test_correct_a_misspelled_word(corpus: TextIndex) -> None:
    assert corpus.correct("cofee") == Correction("cofee", "coffee", {"cofee": "coffee"})


def test_correction_is_stemming_aware_and_suggests_real_words(corpus: TextIndex) -> None:
    assert "eleph" in corpus.vocabulary()
    assert corpus.correct("elefants") == Correction(
        "elefants", "elephants", {"elefants": "elephants"}
    )
    # Only "elephants" is in the collection: the singular matches it by stem.
    fixed = corpus.correct("elefant")
    assert fixed is not None
    assert fixed.corrected == "elephants"


@pytest.mark.parametrize(
    "query",
    ["the", "coffee", "COFFEE cup", "elephant", "xqzvw", "", "  ", "2019", "cars", "color"],
)
def test_nothing_to_correct(corpus: TextIndex, query: str) -> None:
    assert corpus.correct(query) is None


def test_correction_keeps_field_prefixes_case_and_syntax(corpus: TextIndex) -> None:
    assert corpus.correct("title:cofee").corrected == "title:coffee"  # type: ignore[union-attr]
    assert corpus.correct("Cofee cup").corrected == "Coffee cup"  # type: ignore[union-attr]
    fixed = corpus.correct('"cofee cup" AND elefants -cat')
    assert fixed is not None
    assert fixed.corrected == '"coffee cup" AND elephants -cat'
    assert fixed.replacements == {"cofee": "coffee", "elefants": "elephants"}
    assert corpus.correct("xqzvw cofee").corrected == "xqzvw coffee"  # type: ignore[union-attr]


def test_excluded_and_wildcard_words_are_not_corrected(corpus: TextIndex) -> None:
    assert corpus.correct("car -cofee") is None
    assert corpus.correct("car NOT cofee") is None
    assert corpus.correct("cofe*") is None


def test_short_words_need_closer_matches(tmp_path: Path) -> None:
    ix = TextIndex(tmp_path / "ix")
    ix.upsert([TextDoc(1, "Written notes")])
    assert ix.correct("kitten") is None  # two edits from "written", six letters
    assert ix.correct("writen").corrected == "written"  # type: ignore[union-attr]
    assert ix.correct("writtne notse").corrected == "written notes"  # type: ignore[union-attr]


def test_more_frequent_word_wins_a_tie(corpus: TextIndex) -> None:
    # "cax" is one edit from "cat" (1 photo) and "car" (3 photos).
    assert corpus.correct("cax").corrected == "car"  # type: ignore[union-attr]


def test_auto_tags_are_part_of_the_vocabulary(corpus: TextIndex) -> None:
    assert corpus.correct("tabbby").corrected == "tabby"  # type: ignore[union-attr]
    assert corpus.correct("televison").corrected == "television"  # type: ignore[union-attr]


def test_words_with_synonyms_are_known(tmp_path: Path) -> None:
    ix = TextIndex(tmp_path / "ix", synonyms=parse_synonyms("telly = television"))
    ix.upsert([TextDoc(1, "television"), TextDoc(2, "tells")])
    assert ix.correct("telly") is None
    ix.set_synonyms(None)
    assert ix.correct("telly").corrected == "tells"  # type: ignore[union-attr]


def test_corrections_follow_writes(corpus: TextIndex, tmp_path: Path) -> None:
    corpus.delete([1])
    assert corpus.correct("cofee") is None
    other = TextIndex(tmp_path / "ix")  # another writer on the same index
    other.upsert([TextDoc(9, "Coffee beans")])
    assert corpus.correct("cofee").corrected == "coffee"  # type: ignore[union-attr]
    corpus.rebuild([TextDoc(10, "Toffee")])
    assert corpus.correct("cofee") is None
    assert corpus.correct("tofee").corrected == "toffee"  # type: ignore[union-attr]
    other.close()


def test_correct_on_an_empty_or_unusable_index(tmp_path: Path) -> None:
    ix = TextIndex(tmp_path / "ix")
    assert ix.correct("cofee") is None
    ix.close()
    with pytest.raises(StorageError, match="closed"):
        ix.correct("cofee")


def test_speller_without_an_index() -> None:
    speller = Speller([("elephants", 3), ("elegant", 9), ("the", 100)], lambda w: w[:5] or None)
    assert len(speller) == 3
    assert speller.suggest("elefants") == "elephants"
    assert speller.suggest("xy") is None


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    query=st.text(max_size=60)
    | st.lists(
        st.sampled_from(
            ["cofee", "car", "AND", "NOT", "(", ")", '"', "-", "+", "*", ":", "title:", " ", "é"]
        ),
        max_size=12,
    ).map("".join)
)
def test_correct_never_raises(corpus: TextIndex, query: str) -> None:
    fixed = corpus.correct(query)
    assert fixed is None or (fixed.original == query and fixed.corrected != query)
