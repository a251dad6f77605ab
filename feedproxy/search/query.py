"""Parse the feed search language (the ``q`` parameter) into an immutable Query.

The language, by example::

    pretraining -survey            every word must match; -word or NOT word excludes
    diffusion OR flow              OR (upper case only) or | between terms or groups
    video (diffusion | flow)       parentheses group
    "language model"               words adjacent and in order
    title:agent author:"g hinton"  restrict a word or a quoted phrase to one field
    ~pretraining ~"tool use"       a concept: papers near that meaning (search.concepts)
    org:google submitter:akhaliq   ...the organisation (name, display name or id) or who submitted it
    has:code has:project           papers with a GitHub repository, with a project page
    stars>=100 comments>0          compare a count: >=, >, <=, < or =

Precedence, tightest first: NOT and -, then OR, then AND (writing terms side by
side, or an upper-case AND between them). As in web search, ``video diffusion OR
flow`` means video AND (diffusion OR flow).

Words are compared by Snowball English stem after ``normalise_text``. A word with
hyphens is one term, its joined stem: ``pre-training`` and ``pretraining`` are the
same query. The index lists each compound in text under its parts, its joined
stem and the joined stem of every run of parts, so "pretraining" finds
"pre-training", "training" finds "pre-training", and "vision-language" finds
"vision-language-action". A phrase finds its words adjacent within one title,
abstract, keyword or author name; punctuation between them does not count, and
a joined word in a phrase also finds its hyphenated spelling.

Decisions the spec leaves open:

- Words with no letters or digits ("-", "---", "!!") are ignored where they stand
  among other terms, so a pasted "Seedance 1.0 - Exploring" works. Where that
  leaves an operator, a field, a phrase, a group or the whole query with nothing
  to search for, it is a QueryError instead, never a silent match-all.
- A word that splits into several tokens without hyphens ("llama3.1", "e.g.")
  is searched as a phrase of them.
- The plural of an acronym is its singular, which Snowball alone would not make
  it: "LLMs", "llms", "LLM's" and "LLM" are one stem, "lms", "LMs" and "LM"
  another, "GPUs", "gpus" and "GPU" a third. In lower case an acronym is told
  from a word by its letters: two or more consonants and s ("lms"), or
  consonants that cannot begin an English word, one vowel and s ("gpus", not
  "thus", "plus" or "gas"); see _clean_word.
- Curly quotes (“ ”) work like straight ones. ``AND`` is accepted and changes
  nothing. A field applies to one word or phrase, not to a parenthesised group.
- ``-a OR b`` is an error: each side of OR must search for something, because
  "everything except a" is almost never what the user meant. Inside an AND an
  exclusion is fine, as is ``NOT NOT a`` (which is ``a``).
- ``normalised`` writes each word normalised and joined, as the user spelled
  it ("Pre-Training  -Survey" gives "pretraining -survey"), not as a stem:
  it parses back to the same query, which stems would not always do, and
  reads well in a feed title. "pretrained" and "pretraining" are then two
  cache keys for one search; their ``root`` trees compare equal.
- Only real HTML formatting tags are removed: "<think>" or "n<m" in an
  abstract are text.
- Bare words search the title, abstract, AI keywords and authors (names and
  Hugging Face user names), not the organisation or the submitter: those only
  through org: and submitter:.
- ``has:`` and the comparisons are filters: they match or not, add nothing to
  a relevance score, and count as one term each. A filter alone is a query
  (``has:code`` lists every paper with code); ``-has:code`` alone only excludes,
  so it is refused like ``-survey``. ``stars`` compares only papers whose
  repository has a known star count: ``stars<10`` leaves out papers without
  code, ``-stars>=10`` keeps them. A comparison is one word: ``stars >= 10``,
  with spaces, is three words.

Error messages give a 1-based column and an excerpt; ``QueryError.position`` is
the same place 0-based. Nothing from the user is compiled into a regex.
"""

from __future__ import annotations

import functools
import html
import itertools
import re
import threading
import unicodedata
import dataclasses
from dataclasses import dataclass
from typing import NamedTuple, Union

import snowballstemmer

from feedproxy.errors import InvalidType, InvalidValue, QueryError
from feedproxy.numbers import parse_whole_number

MAX_QUERY_LENGTH = 500
MAX_TERMS = 30
MAX_NESTING = 32  # parentheses inside parentheses: bounds the recursion in parsing and searching
FIELDS = ("title", "abstract", "author", "keyword", "org", "submitter")
HAS = ("code", "project")  # has:code, has:project
COUNTS = ("stars", "comments")  # stars>=N, comments>=N
OPERATORS = (">=", "<=", ">", "<", "=")
MAX_COUNT = 10**9 - 1


# --- Text normalisation, shared with the index -------------------------------

# Only real HTML formatting tags are markup: abstracts also contain
# "<think>", "<EOS>" and "n<m", which are words and maths, not tags.
_INLINE_TAGS = "a|abbr|b|big|cite|code|del|em|font|i|ins|kbd|mark|q|s|samp|small|span|strike|strong|sub|sup|tt|u|var"
_BLOCK_TAGS = "blockquote|br|dd|div|dl|dt|h[1-6]|hr|img|li|ol|p|pre|table|tbody|td|th|thead|tr|ul"
_INLINE_TAG = re.compile(rf"</?(?:{_INLINE_TAGS})(?:\s[^<>]*)?/?>", re.IGNORECASE)
_BLOCK_TAG = re.compile(rf"<!--.*?-->|</?(?:{_BLOCK_TAGS})(?:\s[^<>]*)?/?>", re.IGNORECASE | re.DOTALL)

_PUNCTUATION_FOLD = str.maketrans(
    {
        "\u2010": "-",  # hyphen (NFKC turns the non-breaking hyphen into this)
        "\u2019": "'",
        "\u2018": "'",
        "\u02bc": "'",
        "\u00ad": None,  # soft hyphen: an invisible line-break hint inside a word
        "\u200b": " ",
        "\u200c": None,
        "\u200d": None,
        "\u2060": None,
        "\ufeff": None,
    }
)
# Letters with a stroke or ligatures have no combining accent to remove.
_LETTER_FOLD = str.maketrans(
    {"ø": "o", "ł": "l", "đ": "d", "ħ": "h", "ı": "i", "ŀ": "l", "æ": "ae", "œ": "oe", "þ": "th", "ð": "d"}
)

# A word is letters and digits, possibly with apostrophes inside ("pretrainer's");
# a compound is words joined by hyphens ("pre-training", "vision-language-action").
_WORD = r"[^\W_]+(?:'[^\W_]+)*"
_COMPOUND = re.compile(rf"{_WORD}(?:-{_WORD})*")
# Every run of parts of a compound this long or shorter is indexed joined, so
# "vision-language" finds "vision-language-action"; longer ones only whole.
_MAX_RUN_PARTS = 6

# Snowball removes a final s only from a word with a vowel before the letter
# ahead of the s, and never after a u ("focus"), so it keeps that of "LLMs", "LMs"
# and "GPUs": the plural of an acronym loses its s before stemming, in index and
# query alike. Capitals then a lower-case s mark one ("LLMs", "GPUs", "H100s");
# text is searched in lower case, so _tokens gives these back their capitals.
# Whatever its case, a word of two or more consonants ending in s is one too
# ("lms", "llms", "LMS", "PhDs"; y counts as a vowel): no English word is
# written so, though an acronym that ends in S then also finds the one without it
# ("TTS" finds "TT", "RMS" finds "RM"). (The lookbehind stands where a leading \b
# would, so that a search can skip ahead to capitals: three times faster.)
_ACRONYM_PLURAL = re.compile(r"[A-Z](?<!\w[A-Z])[A-Z0-9]+s\b")
# Not after another s: "llmss" would lose one s each time it is analysed, and the normalised
# query must read back as the same query.
_VOWEL_LESS_PLURAL = re.compile(r"[b-df-hj-np-tv-xz]{2,}(?<!s)s")
# In lower case, two or more consonants, one vowel and s are an acronym's plural ("gpus", "vlas",
# "fpgas", "dpos") when those consonants cannot begin an English word: "this", "thus", "plus" and
# "pros" keep their s, as do "gas", "bus", "us" (fewer consonants) and "focus" (more vowels).
_ONE_VOWEL_PLURAL = re.compile(r"([b-df-hj-np-tv-xz]{2,})[aeiou]s")
_WORD_ONSETS = frozenset({
    "bl", "br", "ch", "cl", "cr", "dr", "dw", "fl", "fr", "gh", "gl", "gn", "gr", "kl", "kn", "kr", "kw", "ph", "pl",
    "pr", "ps", "rh", "sc", "sh", "sk", "sl", "sm", "sn", "sp", "st", "sv", "sw", "th", "tr", "ts", "tw", "wh", "wr",
    "zh", "chr", "phr", "sch", "scr", "shr", "sph", "spl", "spr", "str", "thr",
})  # fmt: skip


@functools.cache
def _combining_marks() -> dict[int, None]:
    # Built on first use: most text is ASCII and never needs it.
    marks = {c: None for c in range(0x300, 0x20000) if unicodedata.combining(chr(c))}
    marks.update({c: None for c in range(0xE0100, 0xE01F0)})
    return marks


def normalise_text(text: str) -> str:
    """Return ``text`` as it is matched: no HTML, NFKC, no accents, case folded."""
    text = _INLINE_TAG.sub("", text)
    text = _BLOCK_TAG.sub(" ", text)
    if "&" in text:
        text = html.unescape(text)
    if text.isascii():
        return text.lower()
    text = unicodedata.normalize("NFKC", text).translate(_PUNCTUATION_FOLD)
    text = unicodedata.normalize("NFKD", text.casefold()).translate(_combining_marks())
    return unicodedata.normalize("NFC", text).translate(_LETTER_FOLD)


def _clean_word(word: str) -> str:
    """Return a word of a token as it is stemmed: in lower case, without a possessive or an acronym's plural s."""
    # Possessive 's goes; other apostrophes join ("don't" -> "dont").
    if word.endswith("'s"):
        word = word[:-2]
    word = word.replace("'", "")
    if _VOWEL_LESS_PLURAL.fullmatch(word):
        return word[:-1]
    one_vowel = _ONE_VOWEL_PLURAL.fullmatch(word)
    if one_vowel and one_vowel.group(1) not in _WORD_ONSETS:
        return word[:-1]
    return word[:-1].lower() if _has_capitals(word) else word


def _joined(words: list[str]) -> str:
    """Return a compound's cleaned words joined, as the one word they make ("x-lms" and "xlms" are "xlm")."""
    # Joined, "b-cs" ends as a plural that "cs" alone is not: cleaning again makes the joined word
    # read back as itself, so a query written joined in its normalised form is the same query.
    return _clean_word("".join(words)) if len(words) > 1 else words[0]


def _has_capitals(word: str) -> bool:
    # Only _tokens leaves capitals in a word, those of an acronym's plural, and
    # always the first letter: a casefolded word starts with no ASCII capital.
    return "A" <= word[:1] <= "Z"


def _tokens(text: str) -> list[str]:
    """Return the words and hyphenated compounds of ``text``, normalised, an acronym's plural in capitals."""
    tokens = _COMPOUND.findall(normalise_text(text))
    if not _ACRONYM_PLURAL.search(text):  # most texts; a search costs a fraction of a findall
        return tokens
    plurals = {word.lower(): word for word in _ACRONYM_PLURAL.findall(text)}
    return [
        plurals.get(token) or ("-".join(plurals.get(w, w) for w in token.split("-")) if "-" in token else token)
        for token in tokens
    ]


_local = threading.local()


def _stem_word(word: str) -> str:
    # Snowball stemmer objects keep state while stemming: one per thread.
    stemmer = getattr(_local, "stemmer", None)
    if stemmer is None:
        stemmer = _local.stemmer = snowballstemmer.stemmer("english")
    return stemmer.stemWord(word)


@functools.lru_cache(maxsize=4096)
def stem(word: str) -> str:
    """Return the Snowball English stem of a normalised word."""
    return _stem_word(word)


class Compound(NamedTuple):
    """A hyphenated word in text: its joined stem and the stems of its parts."""

    joined: str
    parts: tuple[str, ...]


class Analysis(NamedTuple):
    """The stems of a text in order, and the joined forms of its compounds."""

    stems: list[str]
    compounds: list[Compound]


class TextAnalyser:
    """Analyse many texts, working out each distinct word once.

    Building an index sees 2.3 million words but only 85,000 distinct ones,
    and Snowball in pure Python takes ~20 µs a word. The memory goes with the
    analyser, so build an index with one and drop it.
    """

    def __init__(self) -> None:
        # A plain word -> its stem; a hyphenated token -> (part stems, compounds).
        # One dict, and a bare str for the common case, to keep builds small.
        self._known: dict[str, str | tuple[tuple[str, ...], tuple[Compound, ...]]] = {}
        self._stems: dict[str, str] = {}

    def analyse(self, text: str) -> Analysis:
        """Split ``text`` into stems, one per word or compound part, plus compound runs.

        "large-scale pre-training" gives stems [large, scale, pre, train] and the
        compounds largescal=(large, scale) and pretrain=(pre, train).
        """
        stems: list[str] = []
        compounds: list[Compound] = []
        for token in _tokens(text):
            known = self._known.get(token)
            if known is None:
                known = self._known[token] = self._analyse_token(token)
            if isinstance(known, str):
                stems.append(known)
            else:
                stems.extend(known[0])
                compounds.extend(known[1])
        return Analysis(stems, compounds)

    def _stem(self, word: str) -> str:
        found = self._known.get(word)
        if found is None:
            # One string per stem, however many words share it, so an index
            # keyed by stems in several places holds each stem once.
            found = _stem_word(word)
            found = self._known[word] = self._stems.setdefault(found, found)
        assert isinstance(found, str)  # words hold no hyphen, so never a compound's key
        return found

    def _analyse_token(self, token: str) -> str | tuple[tuple[str, ...], tuple[Compound, ...]]:
        if "-" not in token and not _has_capitals(token):
            return self._stem(_clean_word(token))
        spelled = token.split("-")
        words = [_clean_word(w) for w in spelled]
        parts = tuple(self._stem(w) for w in words)
        compounds = self._runs(words, parts)
        if any(map(_has_capitals, spelled)):
            # An acronym's plural is also found as it reads in lower case, where
            # nothing tells it from a word in -us or -as: "gpus" still finds
            # "GPUs", stemmed "gpu", and "gpus-based" finds "GPUs-based".
            lowered = [_clean_word(w.lower()) for w in spelled]
            aliases = [Compound(a, (part,)) for a, part in zip(map(self._stem, lowered), parts) if a != part]
            compounds = tuple(dict.fromkeys((*compounds, *aliases, *self._runs(lowered, parts))))
        return parts[0] if len(parts) == 1 and not compounds else (parts, compounds)

    def _runs(self, words: list[str], parts: tuple[str, ...]) -> tuple[Compound, ...]:
        """Return the joined stems of a compound's runs of parts (none for a single word)."""
        if len(words) > _MAX_RUN_PARTS:
            return (Compound(self._stem(_joined(words)), parts),)
        return tuple(
            Compound(self._stem(_joined(words[start:end])), parts[start:end])
            for start, end in itertools.combinations(range(len(words) + 1), 2)
            if end - start > 1
        )


def tokenize(text: str) -> list[str]:
    """Return the normalised words of ``text``: compound parts, then the joined compound."""
    words: list[str] = []
    for token in _tokens(text):
        parts = [_clean_word(w) for w in token.split("-")]
        words.extend(parts)
        if len(parts) > 1:
            words.append(_joined(parts))
    return words


def query_words(text: str) -> tuple[tuple[str, str], ...]:
    """Return the (word, stem) pairs a query word or phrase searches for.

    A compound is one word, joined: "Pre-Training" gives ("pretraining", "pretrain").
    """
    pairs = []
    for token in _tokens(text):
        word = _joined([_clean_word(w) for w in token.split("-")])
        pairs.append((word, stem(word)))
    return tuple(pairs)


# --- The parsed query ---------------------------------------------------------


@dataclass(frozen=True)
class Term:
    """One stem, in one field or (field None) in any; ``word`` is how it is written back."""

    stem: str
    field: str | None = None
    word: str = dataclasses.field(default="", compare=False)


@dataclass(frozen=True)
class Phrase:
    """Stems that must appear adjacent and in order, in one field or any."""

    stems: tuple[str, ...]
    field: str | None = None
    words: tuple[str, ...] = dataclasses.field(default=(), compare=False)


@dataclass(frozen=True)
class Concept:
    """Papers near the meaning of ``text`` (``~word`` or ``~"a phrase"``), found by embeddings, not words."""

    text: str
    # How near a paper must be, in standard deviations above the window's mean; None: the default
    # cut-off (search.concepts). A similar= feed asks for a wider circle, ranked nearest first.
    min_score: float | None = None
    # similar=: the id of the paper whose text this is, so an index holding that paper can use its
    # saved embedding instead of embedding the text again.
    paper: str | None = None


@dataclass(frozen=True)
class And:
    """Every operand matches."""

    operands: tuple[Node, ...]


@dataclass(frozen=True)
class Or:
    """At least one operand matches."""

    operands: tuple[Node, ...]


@dataclass(frozen=True)
class Not:
    """The operand does not match."""

    operand: Node


@dataclass(frozen=True)
class Has:
    """A filter: the paper has a GitHub repository (``what`` "code") or a project page ("project")."""

    what: str


@dataclass(frozen=True)
class Compare:
    """A filter: one of the paper's COUNTS compared with a number, e.g. stars>=100."""

    count: str
    operator: str
    value: int


Node = Union[Term, Phrase, Concept, And, Or, Not, Has, Compare]
FILTERS = (Has, Compare)
MATCHES = ("keyword", "concept", "hybrid")


@dataclass(frozen=True)
class Query:
    """A parsed search: ``root`` None matches every paper."""

    normalised: str
    root: Node | None = None

    @property
    def is_empty(self) -> bool:
        return self.root is None

    def terms(self) -> tuple[str, ...]:
        """Return the stems searched for (not excluded), each once, in query order."""
        return tuple(dict.fromkeys(s for leaf in positive_leaves(self.root) for s in _leaf_stems(leaf)))

    def __str__(self) -> str:
        return self.normalised

    def matching(self, match: str) -> Query:
        """This query with ``match`` applied to all of it.

        keyword: as written. concept: each word or phrase searched for (not excluded) becomes a
        concept. hybrid: papers matching either way. Exclusions stay keyword exclusions.
        """
        if match not in MATCHES:
            raise InvalidValue(f"match must be one of {', '.join(MATCHES)}, not {match!r}")
        if match == "keyword" or self.root is None:
            return self
        concepts = _as_concepts(self.root)
        return Query(self.normalised, concepts if match == "concept" else _any_of([self.root, concepts]))


def _words_of(leaf: Term | Phrase) -> str:
    return leaf.word or leaf.stem if isinstance(leaf, Term) else " ".join(leaf.words or leaf.stems)


def _as_concepts(node: Node) -> Node:
    """Words searched for side by side become one concept ("video diffusion" is ~"video diffusion");
    alternatives stay alternatives; exclusions, words in a field (author:, org:...) and filters stay
    as they are."""
    if isinstance(node, (Term, Phrase)):
        return node if node.field else Concept(_words_of(node))
    if isinstance(node, (Concept, Not, *FILTERS)):
        return node
    if isinstance(node, Or):
        return Or(tuple(_as_concepts(op) for op in node.operands))
    loose = [op for op in node.operands if isinstance(op, (Term, Phrase)) and not op.field]
    others = [_as_concepts(op) for op in node.operands if op not in loose]
    return _all_of(([Concept(" ".join(_words_of(op) for op in loose))] if loose else []) + others)


def concept_leaves(node: Node | None) -> list[Concept]:
    """Return the concepts a match is ranked by: those not under a NOT."""
    if node is None or isinstance(node, Not):
        return []
    if isinstance(node, Concept):
        return [node]
    if isinstance(node, (Term, Phrase, *FILTERS)):
        return []
    return list(dict.fromkeys(leaf for op in node.operands for leaf in concept_leaves(op)))


def keyword_part(node: Node | None) -> Node | None:
    """What ``node`` asks of the words alone, its concepts left out; None when that is nothing.

    Hybrid ranking ranks by BM25 only the papers this part matches (reciprocal rank fusion ranks each
    list's own results): in ``a b OR ~"a b"`` that is ``a b``, not every paper with an ``a``. A concept
    in an AND is left out (the rest must still hold), one in an OR is an alternative dropped; an AND
    or OR left without a word or phrase to score has no keyword part.
    """
    if node is None or isinstance(node, Concept):
        return None
    if isinstance(node, (Term, Phrase, Not, *FILTERS)):
        return node
    kept = tuple(part for op in node.operands if (part := keyword_part(op)) is not None)
    if not positive_leaves(Or(kept)):
        return None
    return kept[0] if len(kept) == 1 else type(node)(kept)


def _leaf_stems(leaf: Term | Phrase) -> tuple[str, ...]:
    return (leaf.stem,) if isinstance(leaf, Term) else leaf.stems


def positive_leaves(node: Node | None) -> list[Term | Phrase]:
    """Return the terms and phrases a match is scored on: those not under a NOT (filters are not scored)."""
    if node is None or isinstance(node, (Not, Concept, *FILTERS)):
        return []
    if isinstance(node, (Term, Phrase)):
        return [node]
    return list(dict.fromkeys(leaf for op in node.operands for leaf in positive_leaves(op)))


EMPTY_QUERY = Query("")

_HIGHLIGHTED_WORD = re.compile(r"\w[\w'’-]*")


def highlight(text: str, query: Query) -> list[tuple[str, bool]]:
    """Split ``text`` into (part, is_a_searched_word) pieces: where the query's words appear in it.

    A word counts when its stem (or a hyphenated compound's joined stem) is one the query searches
    for, so "Pre-Training" is marked for the query "pretraining".
    """
    wanted = set(query.terms())
    if not wanted:
        return [(text, False)] if text else []
    pieces: list[tuple[str, bool]] = []
    end = 0
    for found in _HIGHLIGHTED_WORD.finditer(text):
        if any(stem in wanted for _, stem in query_words(found.group())):
            if found.start() > end:
                pieces.append((text[end : found.start()], False))
            pieces.append((found.group(), True))
            end = found.end()
    if end < len(text):
        pieces.append((text[end:], False))
    return pieces


def parse_query(text: str | None) -> Query:
    """Parse the ``q`` parameter; None or blank gives the query matching everything."""
    if text is None:
        return EMPTY_QUERY
    if not isinstance(text, str):
        raise InvalidType(f"query must be str or None, not {type(text).__name__}")
    if len(text) > MAX_QUERY_LENGTH:
        raise QueryError(
            f"the query is {len(text)} characters long; the limit is {MAX_QUERY_LENGTH}",
            MAX_QUERY_LENGTH,
        )
    if not text.strip():
        return EMPTY_QUERY
    root = _Parser(text).parse()
    return Query(_render(root), root)


# --- Lexer ----------------------------------------------------------------------

_QUOTES = '"\u201c\u201d\u201e'
_DELIMITERS = "()|" + _QUOTES
_FIELD_PREFIX = re.compile(r"[A-Za-z]+:")
_FIELD_LIST = ", ".join(f"{name}:" for name in FIELDS) + ", has:"
_COMPARISON = re.compile(rf"({'|'.join(COUNTS)})({'|'.join(map(re.escape, OPERATORS))})", re.IGNORECASE)


class _Token(NamedTuple):
    kind: str  # "(", ")", "OR", "AND", "NOT", "WORD", "PHRASE", "CONCEPT", "FILTER", "END"
    pos: int
    text: str = ""
    field: str | None = None
    node: Has | Compare | None = None  # a FILTER's node


def _excerpt(text: str, pos: int) -> str:
    start, end = max(pos - 12, 0), min(pos + 13, len(text))
    return ("…" if start else "") + _printable(text[start:end]) + ("…" if end < len(text) else "")


def _printable(text: str) -> str:
    # Control characters and lone surrogates would garble or break the response.
    return "".join(c if c.isprintable() else "\ufffd" for c in text)


def _error(text: str, pos: int, problem: str, hint: str = "") -> QueryError:
    hint = f"; {hint}" if hint else ""
    return QueryError(f"{problem} at column {pos + 1}{hint} (near `{_excerpt(text, pos)}`)", pos)


def _lex(text: str) -> list[_Token]:
    tokens: list[_Token] = []
    i, n = 0, len(text)
    while i < n:
        char = text[i]
        if char.isspace():
            i += 1
        elif char in "()":
            tokens.append(_Token(char, i))
            i += 1
        elif char == "|":
            tokens.append(_Token("OR", i, "|"))
            i += 1
        elif char in _QUOTES:
            i = _lex_phrase(text, i, i, None, tokens)
        elif char == "~":
            i = _lex_concept(text, i, tokens)
        elif char == "-" and i + 1 < n and not text[i + 1].isspace() and text[i + 1] not in "-)|":
            tokens.append(_Token("NOT", i, "-"))
            i += 1
        elif comparison := _COMPARISON.match(text, i):
            i = _lex_comparison(text, i, comparison, tokens)
        elif field := _FIELD_PREFIX.match(text, i):
            i = _lex_field(text, i, field.end(), tokens)
        else:
            end = _word_end(text, i)
            word = text[i:end]
            kind = word if word in ("OR", "AND", "NOT") else "WORD"
            tokens.append(_Token(kind, i, word))
            i = end
    tokens.append(_Token("END", n))
    return tokens


def _word_end(text: str, i: int) -> int:
    while i < len(text) and not text[i].isspace() and text[i] not in _DELIMITERS:
        i += 1
    return i


def _lex_phrase(text: str, start: int, quote: int, field: str | None, tokens: list[_Token]) -> int:
    close = next((j for j in range(quote + 1, len(text)) if text[j] in _QUOTES), -1)
    if close < 0:
        raise _error(text, quote, "this quote is never closed", 'close it with another "')
    tokens.append(_Token("PHRASE", start, text[quote + 1 : close], field))
    return close + 1


def _lex_concept(text: str, start: int, tokens: list[_Token]) -> int:
    after = start + 1
    if after == len(text) or text[after].isspace() or text[after] in "()|~":
        raise _error(text, start, '"~" needs a word or a quoted phrase right after it', 'e.g. ~pretraining or ~"tool use"')
    if text[after] in _QUOTES:
        phrase: list[_Token] = []
        end = _lex_phrase(text, start, after, None, phrase)
        tokens.append(phrase[0]._replace(kind="CONCEPT"))
        return end
    end = _word_end(text, after)
    tokens.append(_Token("CONCEPT", start, text[after:end]))
    return end


def _lex_field(text: str, start: int, value: int, tokens: list[_Token]) -> int:
    name = text[start : value - 1].lower()
    if name not in FIELDS and name != "has":
        problem = f'unknown field "{text[start:value - 1]}:"'
        if name in COUNTS:
            raise _error(text, start, problem, f"compare {name} with >=, >, <=, < or =, e.g. {name}>=10")
        raise _error(text, start, problem, f"the fields are {_FIELD_LIST} (put text with a colon in quotes)")
    if name == "has":
        return _lex_has(text, start, value, tokens)
    if value == len(text) or text[value].isspace() or text[value] in ")|":
        raise _error(text, start, f'"{name}:" needs a word or a quoted phrase right after the colon')
    if text[value] == "(":
        raise _error(
            text, start, f'"{name}:" applies to one word or a quoted phrase, not a group', f"write {name}:a OR {name}:b"
        )
    if text[value] == "~":
        concept = _printable(_concept_written(text, value))[:60]
        words = concept[1:] or "word"
        raise _error(text, start, f'"{name}:" applies to words, not to a concept (a concept is near a paper\'s whole text)',
                     f"write {name}:{words} ~{words}, or just ~{words}")
    if text[value] in _QUOTES:
        return _lex_phrase(text, start, value, name, tokens)
    end = _word_end(text, value)
    tokens.append(_Token("WORD", start, text[value:end], name))
    return end


def _concept_written(text: str, tilde: int) -> str:
    """The concept as written from ``tilde`` on: ~word or ~"a phrase" (with its quotes)."""
    after = tilde + 1
    if after < len(text) and text[after] in _QUOTES:
        close = next((j for j in range(after + 1, len(text)) if text[j] in _QUOTES), None)
        return text[tilde : close + 1] if close is not None else "~"
    return text[tilde : _word_end(text, after)]


def _lex_has(text: str, start: int, value: int, tokens: list[_Token]) -> int:
    end = _word_end(text, value)
    what = text[value:end].lower()
    if what not in HAS:
        given = f', not "{_printable(text[value:end][:20])}"' if what else " right after the colon"
        raise _error(text, start, f'"has:" takes {" or ".join(HAS)}{given}', "e.g. has:code")
    tokens.append(_Token("FILTER", start, text[start:end], node=Has(what)))
    return end


def _lex_comparison(text: str, start: int, match: re.Match, tokens: list[_Token]) -> int:
    count, operator = match.group(1).lower(), match.group(2)
    end = _word_end(text, match.end())
    try:
        value = parse_whole_number(text[match.end() : end], 0, MAX_COUNT)
    except ValueError:
        raise _error(text, start, f'"{count}{operator}" needs a whole number from 0 to {MAX_COUNT} right after it',
                     f"e.g. {count}>=10") from None
    tokens.append(_Token("FILTER", start, text[start:end], node=Compare(count, operator, value)))
    return end


# --- Parser ---------------------------------------------------------------------

_OPERAND_END = ("END", ")", "OR", "AND")


class _Parser:
    """Recursive descent: conjunction := disjunction+, disjunction := negation (OR negation)*."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = _lex(text)
        self.index = 0
        self.term_count = 0
        self.nesting = 0
        self.first_negation: int | None = None

    def parse(self) -> Node:
        root = self._conjunction()
        token = self._peek()
        if token.kind == ")":
            raise self._error(token.pos, '")" has no matching "("')
        if root is None:
            first = len(self.text) - len(self.text.lstrip())
            raise self._error(first, "the query has no letters or digits to search for")
        if not _is_positive(root):
            raise self._error(
                self.first_negation or 0,
                "the query only excludes papers",
                'add something to search for, e.g. "diffusion -survey"',
            )
        return root

    def _peek(self) -> _Token:
        return self.tokens[self.index]

    def _next(self) -> _Token:
        token = self.tokens[self.index]
        self.index += 1
        return token

    def _error(self, pos: int, problem: str, hint: str = "") -> QueryError:
        return _error(self.text, pos, problem, hint)

    def _conjunction(self) -> Node | None:
        operands: list[Node] = []
        pending_and: _Token | None = None
        has_left = False  # whether an AND here would have something before it
        while True:
            token = self._peek()
            if token.kind in ("END", ")"):
                if pending_and:
                    raise self._error(pending_and.pos, '"AND" needs a term after it')
                break
            if token.kind == "AND":
                if not has_left:
                    raise self._error(token.pos, '"AND" needs a term before it')
                pending_and, has_left = self._next(), False
                continue
            if token.kind == "OR":
                raise self._error(token.pos, f'"{token.text}" needs a term before it')
            node = self._disjunction()
            if node is None and pending_and:
                raise self._error(pending_and.pos, '"AND" needs a term with letters or digits after it')
            pending_and, has_left = None, node is not None
            if node is not None:
                operands.append(node)
        return _all_of(operands) if operands else None

    def _disjunction(self) -> Node | None:
        starts = [self._peek().pos]
        operands = [self._negation()]
        while self._peek().kind == "OR":
            op = self._next()
            if operands[-1] is None:
                raise self._error(op.pos, f'"{op.text}" needs a term with letters or digits before it')
            if self._peek().kind in _OPERAND_END:
                raise self._error(op.pos, f'"{op.text}" needs a term after it')
            starts.append(self._peek().pos)
            operand = self._negation()
            if operand is None:
                raise self._error(op.pos, f'"{op.text}" needs a term with letters or digits after it')
            operands.append(operand)
        if len(operands) == 1:
            return operands[0]
        for start, operand in zip(starts, operands):
            if not _is_positive(operand):
                raise self._error(
                    start, "each side of OR must search for something, not only exclude", "write a -b OR c as (a -b) OR c"
                )
        return _any_of(operands)

    def _negation(self) -> Node | None:
        token = self._peek()
        if token.kind != "NOT":
            return self._primary()
        self._next()
        if self.first_negation is None:
            self.first_negation = token.pos
        if self._peek().kind in _OPERAND_END:
            raise self._error(token.pos, f'"{token.text}" needs a term after it')
        operand = self._negation()
        if operand is None:
            raise self._error(token.pos, f'"{token.text}" needs a term with letters or digits after it')
        return operand.operand if isinstance(operand, Not) else Not(operand)

    def _primary(self) -> Node | None:
        token = self._next()
        if token.kind == "(":
            if self._peek().kind == ")":
                raise self._error(token.pos, "empty parentheses")
            self.nesting += 1
            if self.nesting > MAX_NESTING:
                raise self._error(token.pos, f"parentheses nested more than {MAX_NESTING} deep")
            inner = self._conjunction()
            self.nesting -= 1
            if self._peek().kind != ")":
                raise self._error(token.pos, "this parenthesis is never closed", 'close it with ")"')
            self._next()
            if inner is None:
                raise self._error(token.pos, "nothing with letters or digits inside these parentheses")
            return inner
        if token.kind == "CONCEPT":
            words = query_words(token.text)
            if not words:
                raise self._error(token.pos, 'this "~" concept has no letters or digits', 'e.g. ~pretraining')
            self.term_count += 1
            if self.term_count > MAX_TERMS:
                raise self._error(token.pos, f"the query has more than {MAX_TERMS} terms", "remove some words")
            return Concept(" ".join(word for word, _ in words))
        if token.kind == "PHRASE":
            if not token.text.strip():
                raise self._error(token.pos, "empty phrase", "put words between the quotes")
            words = query_words(token.text)
            if not words:
                raise self._error(token.pos, "this phrase has no letters or digits")
            return self._leaf(token, words)
        if token.kind == "FILTER":
            self._count_terms(token, 1)
            return token.node
        assert token.kind == "WORD", token  # the callers stop at every other kind
        words = query_words(token.text)
        if not words:
            if token.field:
                raise self._error(token.pos, f'"{token.field}:" needs a word with letters or digits')
            return None
        return self._leaf(token, words)

    def _count_terms(self, token: _Token, count: int) -> None:
        self.term_count += count
        if self.term_count > MAX_TERMS:
            raise self._error(token.pos, f"the query has more than {MAX_TERMS} terms", "remove some words")

    def _leaf(self, token: _Token, words: tuple[tuple[str, str], ...]) -> Term | Phrase:
        self._count_terms(token, len(words))
        if len(words) == 1:
            return Term(words[0][1], token.field, words[0][0])
        return Phrase(tuple(s for _, s in words), token.field, tuple(w for w, _ in words))


def _is_positive(node: Node) -> bool:
    """Tell whether ``node`` searches for something rather than only excluding."""
    if isinstance(node, Not):
        return False
    if isinstance(node, And):
        return any(_is_positive(op) for op in node.operands)
    if isinstance(node, Or):
        return all(_is_positive(op) for op in node.operands)
    return True


def _all_of(operands: list[Node]) -> Node:
    flat = [child for op in operands for child in (op.operands if isinstance(op, And) else (op,))]
    unique = tuple(dict.fromkeys(flat))
    return unique[0] if len(unique) == 1 else And(unique)


def _any_of(operands: list[Node]) -> Node:
    flat = [child for op in operands for child in (op.operands if isinstance(op, Or) else (op,))]
    unique = tuple(dict.fromkeys(flat))
    return unique[0] if len(unique) == 1 else Or(unique)


def _render(node: Node, parent: type | None = None) -> str:
    """Write ``node`` in canonical query syntax, grouping made explicit.

    Words are written normalised and joined ("Pre-Training" as "pretraining"),
    not as stems: Snowball is not idempotent ("acceler" is not the stem of
    "acceler"), and the canonical form must parse back to the same query.
    """
    if isinstance(node, Term):
        word = node.word or node.stem
        return f"{node.field}:{word}" if node.field else word
    if isinstance(node, Phrase):
        quoted = '"' + " ".join(node.words or node.stems) + '"'
        return f"{node.field}:{quoted}" if node.field else quoted
    if isinstance(node, Concept):
        return "~" + (node.text if " " not in node.text else f'"{node.text}"')
    if isinstance(node, Has):
        return f"has:{node.what}"
    if isinstance(node, Compare):
        return f"{node.count}{node.operator}{node.value}"
    if isinstance(node, Not):
        return "-" + _render(node.operand, Not)
    if isinstance(node, And):
        text = " ".join(_render(op, And) for op in node.operands)
    else:
        text = " OR ".join(_render(op, Or) for op in node.operands)
    return f"({text})" if parent is not None else text
