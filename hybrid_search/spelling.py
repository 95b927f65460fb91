"""Spelling in the text search: US/UK variant folding, synonyms, and "did you mean" corrections.

Three independent pieces, all pure code over strings (numpy at most); the text index wires them in.

* :func:`fold` rewrites a British spelling as the American one (``colour`` -> ``color``,
  ``organisation`` -> ``organization``, ``centred`` -> ``centered``). :class:`VariantFilter` runs
  it inside the Whoosh analyzer, before stemming, so indexing and querying agree. It uses explicit
  tables and suffix rules limited to listed roots: ``four``, ``tour``, ``promise`` or
  ``exercise`` are never touched.
* :func:`load_synonyms` reads the user's synonyms and abbreviations file (``config/synonyms.txt``)
  into :class:`Synonyms`, which the text index applies at query time.
* :class:`Speller` finds, for a query word the collection does not contain, the closest word it
  does contain (edit distance, stemming-aware), and :meth:`Speller.correct` rewrites a whole query.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from whoosh.analysis import STOP_WORDS, Filter, Token

from hybrid_search.exceptions import ConfigError

__all__ = [
    "DEFAULT_SYNONYMS_PATH",
    "FOLDING_VERSION",
    "MAX_WORD_CHARS",
    "VARIANTS",
    "Correction",
    "QueryWord",
    "Speller",
    "Synonyms",
    "VariantFilter",
    "edit_distance",
    "fold",
    "load_synonyms",
    "parse_synonyms",
    "query_words",
]

# Bump whenever fold() changes what it returns: indexes built with another version are rebuilt.
FOLDING_VERSION = 1

DEFAULT_SYNONYMS_PATH = Path(__file__).resolve().parent.parent / "config" / "synonyms.txt"

# -- US/UK variants -------------------------------------------------------------------------------


def _words(text: str) -> list[str]:
    """Split a whitespace-separated list of words."""
    return text.split()


# Whole words, British:American, inflected forms listed. Words the rules below already cover are
# not repeated here.
_WORD_PAIRS = """
aeroplane:airplane aeroplanes:airplanes aerofoil:airfoil aerofoils:airfoils
aluminium:aluminum
analogue:analog analogues:analogs
annexe:annex annexes:annexes
artefact:artifact artefacts:artifacts
axe:ax
caesium:cesium caesarean:cesarean
catalogue:catalog catalogues:catalogs catalogued:cataloged cataloguing:cataloging
cataloguer:cataloger cataloguers:catalogers
centrepiece:centerpiece centrepieces:centerpieces centrefold:centerfold centrefolds:centerfolds
centreline:centerline centrelines:centerlines centreboard:centerboard
cheque:check cheques:checks chequebook:checkbook chequebooks:checkbooks
chequered:checkered chequerboard:checkerboard
chilli:chili chillies:chilies
cosy:cozy cosier:cozier cosiest:coziest cosiness:coziness cosily:cozily
cypher:cipher cyphers:ciphers
defence:defense defences:defenses defenceless:defenseless
doughnut:donut doughnuts:donuts
draught:draft draughts:drafts draughty:drafty draughtsman:draftsman draughtsmen:draftsmen
fibreglass:fiberglass
gaol:jail gaols:jails gaoler:jailer gaolers:jailers
gramme:gram grammes:grams kilogramme:kilogram kilogrammes:kilograms
greyscale:grayscale
grey:gray greys:grays greyer:grayer greyest:grayest greyish:grayish greyed:grayed
greying:graying greyness:grayness
jewellery:jewelry jewelleries:jewelries
judgement:judgment judgements:judgments acknowledgement:acknowledgment
acknowledgements:acknowledgments
kerb:curb kerbs:curbs kerbside:curbside kerbstone:curbstone kerbstones:curbstones
licence:license licences:licenses
liquorice:licorice
manoeuvre:maneuver manoeuvres:maneuvers manoeuvred:maneuvered manoeuvring:maneuvering
manoeuvrable:maneuverable manoeuvrability:maneuverability
marvellous:marvelous marvellously:marvelously
mollusc:mollusk molluscs:mollusks
mould:mold moulds:molds moulded:molded moulding:molding mouldings:moldings mouldy:moldy
moult:molt moults:molts moulted:molted moulting:molting
moustache:mustache moustaches:mustaches moustached:mustached moustachioed:mustachioed
mum:mom mums:moms
offence:offense offences:offenses
omelette:omelet omelettes:omelets
pedlar:peddler pedlars:peddlers
plough:plow ploughs:plows ploughed:plowed ploughing:plowing ploughman:plowman
ploughmen:plowmen ploughshare:plowshare
practise:practice practised:practiced practises:practices practising:practicing
pretence:pretense pretences:pretenses
programme:program programmes:programs
pyjama:pajama pyjamas:pajamas
sceptic:skeptic sceptics:skeptics sceptical:skeptical sceptically:skeptically
scepticism:skepticism
smoulder:smolder smoulders:smolders smouldered:smoldered smouldering:smoldering
speciality:specialty specialities:specialties
storey:story storeys:stories storeyed:storied
sulphur:sulfur sulphuric:sulfuric sulphate:sulfate sulphates:sulfates sulphide:sulfide
sulphurous:sulfurous
theatregoer:theatergoer theatregoers:theatergoers
tyre:tire tyres:tires
waggon:wagon waggons:wagons
whisky:whiskey whiskies:whiskeys
woollen:woolen woollens:woolens
yoghurt:yogurt yoghurts:yogurts yoghourt:yogurt yogurts:yogurts
ageing:aging
fulfil:fulfill fulfils:fulfills fulfilment:fulfillment
enrol:enroll enrols:enrolls enrolment:enrollment enrolments:enrollments
instalment:installment instalments:installments
distil:distill distils:distills instil:instill instils:instills
enthral:enthrall enthrals:enthralls appal:appall appals:appalls
skilful:skillful skilfully:skillfully wilful:willful wilfully:willfully
counsellor:counselor counsellors:counselors
tranquillity:tranquility tranquillise:tranquilize tranquilliser:tranquilizer
tranquillisers:tranquilizers tranquillised:tranquilized
anaemia:anemia anaemic:anemic
anaesthesia:anesthesia anaesthetic:anesthetic anaesthetics:anesthetics
anaesthetist:anesthetist anaesthetists:anesthetists anaesthetise:anesthetize
anaesthetised:anesthetized
archaeology:archeology archaeological:archeological archaeologist:archeologist
archaeologists:archeologists
coeliac:celiac
diarrhoea:diarrhea
encyclopaedia:encyclopedia encyclopaedias:encyclopedias
faeces:feces
foetus:fetus foetuses:fetuses foetal:fetal
haemoglobin:hemoglobin haemorrhage:hemorrhage haematology:hematology
homoeopathy:homeopathy homoeopathic:homeopathic
leukaemia:leukemia
mediaeval:medieval
oesophagus:esophagus oestrogen:estrogen
orthopaedic:orthopedic orthopaedics:orthopedics
paediatric:pediatric paediatrics:pediatrics paediatrician:pediatrician
paediatricians:pediatricians
palaeontology:paleontology palaeontologist:paleontologist palaeolithic:paleolithic
"""

# British -our words (behaviour, colour, ...), matched anywhere in a word so that inflections and
# compounds fold too: colourful, discoloured, watercolours, neighbourhood, unfavourable.
_OUR_WORDS = _words(
    """
arbour ardour armour behaviour candour clamour clangour colour demeanour endeavour enamour
favour fervour flavour glamour harbour honour humour labour neighbour odour parlour rancour
rigour rumour saviour savour splendour succour tumour valour vapour vigour
"""
)
_OUR_RE = re.compile("(" + "|".join(sorted(word[:-2] for word in _OUR_WORDS)) + ")ur")

# Roots whose -ise verbs are spelled -ize in American English (organise, organisation, organiser).
# Listed, not guessed: promise, wise, exercise, advertise, surprise, franchise... stay as they are.
_ISE_ROOTS = frozenset(
    _words(
        """
    agon alphabet anesthet antagon apolog atom author bapt bowdler brutal burglar cannibal
    capital caramel carbon categor cauter central character civil colon color commercial
    computer conceptual contextual critic crystall custom decimal democrat deodor digit
    dramat econom emphas energ epitom equal eulog evangel external familiar fantas fertil
    fictional final formal fossil fratern galvan general glamor global harmon homogen hospital
    human hybrid hypnot hypothes ideal idol immobil immortal immun individual industrial
    initial internal international ion italic item jeopard legal legitim liberal lion liquid
    local magnet marginal maxim mechan memor memorial mesmer metabol militar miniatur minim
    mobil modern moistur monet monopol moral motor national natural neutral normal optim
    organ ostrac oxid pasteur patron penal personal philosoph plagiar polar politic popular
    pressur priorit privat public pulver random rational real recogn regular revital
    revolution romantic sanit satir scandal scrutin secular sensational sensit serial sermon
    sexual social special stabil standard steril stigmat subsid summar symbol sympath
    synchron synthes systemat tantal tempor terror theor trivial tyrann urban util vandal
    vapor verbal victim visual vital vocal woman
    """
    )
)
_ISE_SUFFIXES = ("e", "ed", "es", "ing", "ings", "er", "ers", "ation", "ations", "ational", "able")
_ISE_PREFIXES = ("re", "un", "de", "dis", "non", "over", "under", "mis", "pre")

# Roots whose -yse verbs are spelled -yze (analyse); "analyses" is left alone, it is also a noun.
_YSE_ROOTS = frozenset(_words("anal breathal catal dial electrol hydrol paral psychoanal"))
_YSE_SUFFIXES = ("e", "ed", "ing", "er", "ers")

# Roots whose -re nouns are spelled -er (centre, centres, centred, centring).
_RE_ROOTS = frozenset(
    _words(
        """
    amphitheat calib cent centimet centilit decilit decimet epicent fib goit kilolit kilomet
    lacklust lit lust meag met micromet millilit millimet mit nanomet och reconnoit sab
    saltpet scept sepulch somb spect theat
    """
    )
)
_RE_SUFFIXES = {"re": "er", "res": "ers", "red": "ered", "ring": "ering"}

# Verbs whose British -ll- forms lose an l in American English (travelled, travelling, traveller).
_LL_VERBS = _words(
    """
barrel bevel cancel channel chisel counsel cudgel dial dishevel duel enamel equal fuel funnel
gravel grovel initial jewel kennel label level libel marshal marvel model panel parcel pedal
pencil quarrel refuel revel rival shovel signal snorkel spiral swivel tassel total towel travel
trowel tunnel unravel yodel
"""
)


def _word_table() -> dict[str, str]:
    """Return the whole-word British -> American table (explicit pairs and -ll- forms)."""
    table = dict(pair.split(":") for pair in _WORD_PAIRS.split())
    for verb in _LL_VERBS:
        for suffix in ("ed", "ing", "ings", "er", "ers"):
            table.setdefault(f"{verb}l{suffix}", f"{verb}{suffix}")
    return table


VARIANTS: Mapping[str, str] = _word_table()


def _known_root(root: str, roots: frozenset[str]) -> bool:
    """Tell whether ``root`` is listed, possibly behind a prefix (re-organise, un-recognised)."""
    if root in roots:
        return True
    return any(root.startswith(p) and root[len(p) :] in roots for p in _ISE_PREFIXES)


@functools.lru_cache(maxsize=1 << 16)
def fold(word: str) -> str:
    """Return the American spelling of a lower-case word, or the word itself."""
    found = VARIANTS.get(word)
    if found is not None:
        return found
    if "our" in word:
        word = _OUR_RE.sub(r"\1r", word)
        found = VARIANTS.get(word)
        if found is not None:
            return found
    if "is" in word:
        for suffix in _ISE_SUFFIXES:
            end = "is" + suffix
            if word.endswith(end) and _known_root(word[: -len(end)], _ISE_ROOTS):
                return f"{word[: -len(end)]}iz{suffix}"
    if "ys" in word:
        for suffix in _YSE_SUFFIXES:
            end = "ys" + suffix
            if word.endswith(end) and _known_root(word[: -len(end)], _YSE_ROOTS):
                return f"{word[: -len(end)]}yz{suffix}"
    if "r" in word:
        for suffix, american in _RE_SUFFIXES.items():
            if word.endswith(suffix) and word[: -len(suffix)] in _RE_ROOTS:
                return word[: -len(suffix)] + american
    return word


class VariantFilter(Filter):
    """A Whoosh filter that folds British spellings to American ones; put it before stemming.

    It holds only its ``version``, so it pickles into the index schema; a schema whose filter
    has another version than FOLDING_VERSION was built with other tables and must be rebuilt.
    """

    def __init__(self, version: int = FOLDING_VERSION) -> None:
        """Remember which version of the tables this filter stands for."""
        self.version = version

    def __call__(self, tokens: Iterable[Token]) -> Iterator[Token]:
        """Yield the tokens with their text folded."""
        for token in tokens:
            if not token.stopped:
                token.text = fold(token.text)
            yield token


# -- synonyms -------------------------------------------------------------------------------------

_TOKEN_RE = re.compile(r"\w+(?:\.?\w+)*")  # Whoosh's default tokenizer pattern


@dataclass(frozen=True)
class Synonyms:
    """Synonym rules: a lower-case term (a word or a phrase) and the terms it also searches."""

    rules: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    source: str = "<synonyms>"

    def __len__(self) -> int:
        """Return the number of terms that have synonyms."""
        return len(self.rules)

    def expansions(self, term: str) -> tuple[str, ...]:
        """Return the synonyms of ``term`` (case and spacing ignored), or ()."""
        return self.rules.get(_normalise(term), ())


def _normalise(term: str) -> str:
    """Lower-case a term and collapse its whitespace."""
    return " ".join(term.lower().split())


def _searchable(term: str) -> bool:
    """Tell whether a term has a word the analyzer keeps (not a stop word, not one letter)."""
    return any(len(w) > 1 and w not in STOP_WORDS for w in _TOKEN_RE.findall(term))


def parse_synonyms(text: str, source: str = "<synonyms>") -> Synonyms:
    """Parse synonym rules; raise ConfigError naming ``source`` and the line of a malformed one.

    One rule a line; ``#`` starts a comment. ``a, b, c`` and ``a = b`` make equivalent terms
    (each searches the others); ``a => b, c`` is one-way (``a`` also searches ``b`` and ``c``,
    not the reverse). A term may be several words (``nyc => new york city``).
    """
    rules: dict[str, list[str]] = {}

    def add(term: str, others: Iterable[str]) -> None:
        targets = rules.setdefault(term, [])
        targets.extend(o for o in others if o != term and o not in targets)

    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        where = f"{source}:{number}"
        if "=>" in line:
            left, _, right = line.partition("=>")
            if "=>" in right or "=" in left or "=" in right:
                raise ConfigError(f"{where}: use one '=>' or one '=' per line: {raw.strip()!r}")
            sources, targets = _terms(left, where), _terms(right, where)
            for term in sources:
                add(term, targets)
            continue
        if "=" in line:
            left, _, right = line.partition("=")
            if "=" in right:
                raise ConfigError(f"{where}: use one '=' per line: {raw.strip()!r}")
            group = _terms(left, where) + _terms(right, where)
        elif "," in line:
            group = _terms(line, where)
        else:
            raise ConfigError(
                f"{where}: expected 'a = b', 'a, b, c' or 'a => b', got {raw.strip()!r}"
            )
        if len(set(group)) < 2:
            raise ConfigError(f"{where}: a rule needs two different terms: {raw.strip()!r}")
        for term in group:
            add(term, group)
    return Synonyms({term: tuple(targets) for term, targets in rules.items() if targets}, source)


def _terms(side: str, where: str) -> list[str]:
    """Split one side of a rule into normalised terms, or raise ConfigError."""
    terms = [_normalise(part) for part in side.split(",")]
    for term in terms:
        if not term:
            raise ConfigError(f"{where}: empty term (check the commas): {side.strip()!r}")
        if not _searchable(term):
            raise ConfigError(
                f"{where}: {term!r} has no searchable word (only stop words or single letters)"
            )
    return terms


def load_synonyms(path: str | Path) -> Synonyms:
    """Read a synonyms file (UTF-8); raise ConfigError if it is unreadable or malformed."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"synonyms file {path} is not UTF-8 text: {exc}") from None
    except OSError as exc:
        raise ConfigError(f"cannot read synonyms file {path}: {exc.strerror or exc}") from None
    return parse_synonyms(text, str(path))


# -- query words ----------------------------------------------------------------------------------

_SCAN_RE = re.compile(r'(?P<quote>")|(?P<open>\()|(?P<close>\))|(?P<word>\w+(?:\.\w+)*)|\S')
_OPERATORS = frozenset({"AND", "OR"})


@dataclass(frozen=True)
class QueryWord:
    """A word of a query that a correction may replace, and where it is in the query."""

    text: str
    start: int
    end: int


def query_words(query: str) -> list[QueryWord]:
    """Return the words of a query that select photos, in the text index's query language.

    Left out: operators (AND, OR, NOT), field names (``title:``), wildcard words (``sun*``) and
    excluded words (``-car``, ``NOT car``, ``NOT (a b)``, ``-"a b"``): correcting an exclusion can
    only remove results. Words of quoted phrases are included one by one.
    """
    words: list[QueryWord] = []
    in_quote = quote_negated = pending_not = False
    negated_groups = [False]
    for m in _SCAN_RE.finditer(query):
        kind, start, end = m.lastgroup, m.start(), m.end()
        if kind == "quote":
            if in_quote:
                in_quote = quote_negated = False
            else:
                in_quote, quote_negated = True, pending_not or negated_groups[-1]
                pending_not = False
            continue
        if in_quote:
            if kind == "word" and not quote_negated:
                words.append(QueryWord(m.group(), start, end))
            continue
        if kind == "open":
            negated_groups.append(pending_not or negated_groups[-1])
            pending_not = False
        elif kind == "close":
            if len(negated_groups) > 1:
                negated_groups.pop()
            pending_not = False
        elif kind != "word":
            if m.group() == "-" and _starts_term(query, start, end):
                pending_not = True
        elif query.startswith(":", end):
            continue  # a field name; a pending "-" applies to the field's word
        elif m.group() == "NOT":
            pending_not = True
        elif m.group() not in _OPERATORS:
            negated = pending_not or negated_groups[-1]
            pending_not = False
            wildcard = query[end : end + 1] in ("*", "?") or query[start - 1 : start] in ("*", "?")
            if not negated and not wildcard:
                words.append(QueryWord(m.group(), start, end))
    return words


def _starts_term(query: str, start: int, end: int) -> bool:
    """Tell whether the operator character at ``start`` begins a term (``-car``, not t-shirt)."""
    before_ok = start == 0 or query[start - 1].isspace() or query[start - 1] == "("
    after = query[end : end + 1]
    return before_ok and after != "" and not after.isspace() and after != ")"


# -- edit distance --------------------------------------------------------------------------------


def edit_distance(a: str, b: str) -> int:
    """Return the optimal-string-alignment distance: insertions, deletions, substitutions and
    swaps of two adjacent letters each cost one."""
    if a == b:
        return 0
    previous2: list[int] = []
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, start=1):
        current = [i] + [0] * len(b)
        for j, cb in enumerate(b, start=1):
            cost = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb))
            if i > 1 and j > 1 and ca == b[j - 2] and a[i - 2] == cb:
                cost = min(cost, previous2[j - 2] + 1)
            current[j] = cost
        previous2, previous = previous, current
    return previous[-1]


_DOUBLE_RE = re.compile(r"(.)\1+")


def _sound_key(word: str) -> str:
    """Return a crude spelling-insensitive key: ph=f, ck=k, z=s, doubled letters once."""
    return _DOUBLE_RE.sub(r"\1", word.replace("ph", "f").replace("ck", "k").replace("z", "s"))


_MAX_PATTERN = 63  # bits of a uint64 mask, one per pattern letter
_U1 = np.uint64(1)


class _Lexicon:
    """Words to search by edit distance, scanned all at once with numpy.

    Hyyrö's bit-parallel algorithm (Myers' bit vectors with adjacent swaps) runs once per
    letter position over every word of a similar length, so a scan of 100k words costs a few
    dozen numpy operations rather than 100k Python loops.
    """

    def __init__(self, words: Iterable[str]) -> None:
        """Encode the words (each at most 63 letters) as a column-per-position code matrix."""
        self.words = sorted(words, key=lambda w: (-len(w), w))
        n = len(self.words)
        lengths = np.fromiter(map(len, self.words), dtype=np.int64, count=n)
        self._neg_lengths = -lengths  # ascending, for searchsorted
        flat = np.frombuffer("".join(self.words).encode("utf-32-le"), dtype=np.uint32)
        letters, inverse = np.unique(flat, return_inverse=True)
        self._alphabet = {chr(c): i for i, c in enumerate(letters.tolist())}
        self._pad = len(letters)
        width = int(lengths[0]) if n else 0
        dtype = np.uint8 if self._pad < 255 else np.uint32
        codes = np.full((width, n), self._pad, dtype=dtype)
        if n:
            starts = np.cumsum(lengths) - lengths
            positions = np.arange(flat.size) - np.repeat(starts, lengths)
            codes[positions, np.repeat(np.arange(n), lengths)] = inverse.reshape(-1)
        self._codes = codes  # row j: the j-th letter of every word

    def within(self, pattern: str, max_edits: int) -> list[tuple[str, int]]:
        """Return (word, distance) for every word within ``max_edits`` of ``pattern``."""
        m = len(pattern)
        if not 0 < m <= _MAX_PATTERN or not self.words:
            return []
        lo = int(np.searchsorted(self._neg_lengths, -(m + max_edits), "left"))
        hi = int(np.searchsorted(self._neg_lengths, -(m - max_edits), "right"))
        if lo >= hi:
            return []
        table = np.zeros(self._pad + 1, dtype=np.uint64)
        for i, letter in enumerate(pattern):
            code = self._alphabet.get(letter)
            if code is not None:
                table[code] |= np.uint64(1 << i)
        score = self._scores(table, m, lo, hi)
        hits = np.flatnonzero(score <= max_edits)
        return [(self.words[lo + i], int(score[i])) for i in hits.tolist()]

    def _scores(self, table: np.ndarray, m: int, lo: int, hi: int) -> np.ndarray:
        """Return the edit distance from the pattern to each word in rows ``lo:hi``."""
        n = hi - lo
        mask, top = np.uint64((1 << m) - 1), np.uint64(m - 1)
        vp = np.full(n, mask, dtype=np.uint64)
        vn, d0, prev_eq = (np.zeros(n, dtype=np.uint64) for _ in range(3))
        tr, hp, hn, bit = (np.empty(n, dtype=np.uint64) for _ in range(4))
        score = np.full(n, m, dtype=np.uint64)
        neg_lengths = self._neg_lengths[lo:hi]
        for j in range(-int(neg_lengths[0])):
            k = int(np.searchsorted(neg_lengths, -j, "left"))  # words longer than j
            eq = table[self._codes[j, lo : lo + k]]
            VP, VN, D0, PE = vp[:k], vn[:k], d0[:k], prev_eq[:k]  # noqa: N806
            TR, HP, HN, B = tr[:k], hp[:k], hn[:k], bit[:k]  # noqa: N806
            np.invert(D0, out=TR)  # transpositions: ((~D0 & Eq) << 1) & previous Eq
            TR &= eq
            TR <<= _U1
            TR &= PE
            np.bitwise_and(eq, VP, out=D0)  # D0 = (((Eq & VP) + VP) ^ VP) | Eq | VN | TR
            D0 += VP
            D0 ^= VP
            D0 |= eq
            D0 |= VN
            D0 |= TR
            D0 &= mask
            np.bitwise_or(D0, VP, out=HP)  # HP = VN | ~(D0 | VP)
            np.invert(HP, out=HP)
            HP |= VN
            HP &= mask
            np.bitwise_and(D0, VP, out=HN)  # HN = D0 & VP
            np.right_shift(HP, top, out=B)
            score[:k] += B
            np.right_shift(HN, top, out=B)
            score[:k] -= B
            HP <<= _U1
            HP |= _U1
            HP &= mask
            HN <<= _U1
            HN &= mask
            np.bitwise_or(D0, HP, out=VP)  # VP = HN | ~(D0 | HP)
            np.invert(VP, out=VP)
            VP |= HN
            VP &= mask
            np.bitwise_and(HP, D0, out=VN)  # VN = HP & D0
            PE[...] = eq
        return score


# -- corrections ----------------------------------------------------------------------------------

MAX_WORD_CHARS = 40  # longer collection words are never suggested
MAX_UNKNOWN_WORDS = 16  # a query with more unknown words gets only the first ones corrected
STEM_ROUTE_PENALTY = 1  # a match found only through stems is less certain than a surface match
SOUND_WEIGHT = 2  # cost per edit between sound keys (elefants ~ elephants, cofee ~ coffee)


@dataclass(frozen=True)
class Correction:
    """A query rewritten with unknown words replaced by close words of the collection."""

    original: str
    corrected: str
    replacements: dict[str, str]


def _max_edits(word: str) -> int:
    """Return the largest edit distance tolerated for a word of this length."""
    # Two edits turn too many short words into other words ("kitten" -> "written").
    if len(word) <= 2:
        return 0
    return 1 if len(word) <= 6 else 2


class Speller:
    """The collection's own words, ready to correct query words it does not contain.

    Built from the collection's surface words (as written, lower-case) with their document
    frequencies, and ``term_of``, the text index's analysis of one word (folded and stemmed; None
    for a stop word). A query word is known when its term is; an unknown word is compared both as
    written with the surface words and as a term with the terms, within one edit for words of
    up to six letters and two for longer ones, and the closest match wins (fewest edits,
    weighing edits of the sound key double, then the most documents). The suggestion is always
    a surface word: "elefant" finds the term of "elephants" and suggests "elephants", never the
    stem "eleph".
    """

    def __init__(
        self, words: Iterable[tuple[str, int]], term_of: Callable[[str], str | None]
    ) -> None:
        """Index the surface words and the terms they stem to."""
        self._term_of = term_of
        self._surface_term: dict[str, str] = {}
        self._surface_df: dict[str, int] = {}
        term_df: dict[str, int] = {}
        best_surface: dict[str, tuple[int, str]] = {}
        for word, df in words:
            if not word.isalpha() or len(word) > MAX_WORD_CHARS:
                continue
            term = term_of(word)
            if term is None:
                continue
            self._surface_term[word] = term
            self._surface_df[word] = self._surface_df.get(word, 0) + df
            term_df[term] = term_df.get(term, 0) + df
            best = best_surface.get(term)
            if best is None or (-df, word) < (-best[0], best[1]):
                best_surface[term] = (df, word)
        self._term_df = term_df
        self._term_surface = {term: word for term, (_, word) in best_surface.items()}
        self._surface = _Lexicon(self._surface_term)
        self._terms = _Lexicon(t for t in term_df if 0 < len(t) <= _MAX_PATTERN)

    def __len__(self) -> int:
        """Return the number of distinct surface words."""
        return len(self._surface_term)

    def is_known(self, term: str) -> bool:
        """Tell whether an analysed term is in the collection's vocabulary."""
        return term in self._term_df

    def suggest(self, word: str) -> str | None:
        """Return the collection word closest to ``word``, or None if none is close enough."""
        lower = word.lower()
        term = self._term_of(lower)
        limit = _max_edits(lower)
        if term is None or limit == 0 or len(lower) > _MAX_PATTERN:
            return None
        # term -> (cost, -surface df, surface word)
        best: dict[str, tuple[int, int, str]] = {}
        key = _sound_key(lower)
        for surface, edits in self._surface.within(lower, limit):
            cost = edits + SOUND_WEIGHT * edit_distance(key, _sound_key(surface))
            found = self._surface_term[surface]
            entry = (cost, -self._surface_df[surface], surface)
            if found not in best or entry < best[found]:
                best[found] = entry
        term_key = _sound_key(term)
        for found, edits in self._terms.within(term, limit):
            cost = (
                edits
                + SOUND_WEIGHT * edit_distance(term_key, _sound_key(found))
                + STEM_ROUTE_PENALTY
            )
            surface = self._term_surface[found]
            entry = (cost, -self._surface_df[surface], surface)
            if found not in best or entry < best[found]:
                best[found] = entry
        ranked = sorted(best.items(), key=lambda kv: (kv[1][0], -self._term_df[kv[0]], kv[1][2]))
        for found, (_, _, surface) in ranked:
            if found != term:
                return surface
        return None

    def correct(
        self,
        query: str,
        *,
        known: Iterable[str] = (),
        scan_chars: int | None = None,
    ) -> Correction | None:
        """Return ``query`` with its unknown words replaced, or None if nothing was replaced.

        Stop words, numbers and words whose term is in ``known`` (for instance words with
        synonyms) are never unknown. Only the first ``scan_chars`` characters are looked at.
        """
        known_terms = set(known)
        edits: list[tuple[int, int, str]] = []
        replacements: dict[str, str] = {}
        unknown = 0
        for word in query_words(query[:scan_chars]):
            lower = word.text.lower()
            if not lower.isalpha():
                continue
            term = self._term_of(lower)
            if term is None or term in known_terms:
                continue
            if self.is_known(term):
                continue
            unknown += 1
            if unknown > MAX_UNKNOWN_WORDS:
                break
            suggestion = self.suggest(lower)
            if suggestion is None or suggestion == lower:
                continue
            shaped = _match_case(word.text, suggestion)
            replacements[word.text] = shaped
            edits.append((word.start, word.end, shaped))
        if not edits:
            return None
        corrected = query
        for start, end, text in reversed(edits):
            corrected = corrected[:start] + text + corrected[end:]
        return Correction(query, corrected, replacements)


def _match_case(typed: str, suggestion: str) -> str:
    """Give the suggestion the capitalisation of what was typed (Cofee -> Coffee, TV -> TV)."""
    if len(typed) > 1 and typed.isupper():
        return suggestion.upper()
    if typed[:1].isupper():
        return suggestion[:1].upper() + suggestion[1:]
    return suggestion
