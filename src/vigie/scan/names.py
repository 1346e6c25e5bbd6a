"""Person names in kept text: a first-name lexicon of many locales, from Faker.

The lexicon is every first name of every locale Faker ships (about 31,000 names in 86
locales, Latin, Cyrillic, Greek, Arabic, Indic, CJK and more scripts), lower-cased: a
maintained, independent list, not one typed here. Surnames are not used: too many are
ordinary words (``Room``, ``Link``, ``Stone``).

A value *bears a name* when one of its words (3+ letters of any script, with their
combining marks) is a
first name; names written in scripts without spaces between words (Chinese, Japanese,
Thai...) are looked for inside the text instead. A column *holds names* when its distinct
values bear several different names, in more than a small share of them: categories that
happen to share one word with a name (a provider ``alexa``, a model ``Cam``) do not.
"""

from __future__ import annotations

import importlib
import pkgutil
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import polars as pl

# A column holds names when at least MIN_NAMES different first names appear in at least
# MIN_SHARE of its distinct values.
MIN_NAMES = 3
MIN_SHARE = 0.05
_UNSPACED = re.compile(r"[\u0E00-\u0EFF\u1000-\u109F\u1780-\u17FF\u3040-\u30FF\u3400-\u9FFF]")


@dataclass(frozen=True)
class Lexicon:
    words: pl.Series  # first names written with spaces around them, lower case
    unspaced: tuple[str, ...]  # names in scripts without spaces, matched inside text
    locales: int
    word_set: frozenset[str]  # ``words`` again, for a few values at a time
    word_list: pl.Series  # ``words`` imploded once, for ``is_in`` over many values


NAMES_FILE = Path(__file__).with_name("first_names.txt")


@cache
def lexicon() -> Lexicon:
    """The first names of ``first_names.txt`` (read once per process, about 10 ms)."""
    lines = NAMES_FILE.read_text(encoding="utf-8").removesuffix("\n").split("\n")
    locales = int(lines[0].removeprefix(_HEADER))
    names = lines[1:]
    unspaced = tuple(sorted(n for n in names if _UNSPACED.search(n) and len(n) >= 2))
    words = sorted(n for n in names if not _UNSPACED.search(n) and len(n) >= 3 and " " not in n)
    series = pl.Series("name", words, dtype=pl.String)
    return Lexicon(series, unspaced, locales, frozenset(words), series.implode())


_HEADER = "# first names of Faker's locales (python -m vigie.scan.names writes it): "


def faker_names() -> tuple[int, list[str]]:
    """Faker's first names of every locale, lower case, sorted, and how many locales have
    some: what ``first_names.txt`` holds. Reading them takes about 0.3 s (86 modules), too
    long for every cold ``vigie sync``: the file keeps them, and a test checks it against
    the Faker installed."""
    import faker.providers.person as person

    names: set[str] = set()
    locales = 0
    for module in pkgutil.iter_modules(person.__path__):
        provider = getattr(
            importlib.import_module(f"{person.__name__}.{module.name}"), "Provider", None
        )
        if provider is None:
            continue
        locales += 1
        for attr in ("first_names", "first_names_male", "first_names_female"):
            value = vars(provider).get(attr)
            if isinstance(value, tuple | list | set | frozenset | dict):
                names.update(n.strip().lower() for n in value if isinstance(n, str))
    return locales, sorted(n for n in names if n and "\n" not in n)


def write_names_file(path: Path = NAMES_FILE) -> None:
    """Write Faker's first names into ``path`` (after a Faker upgrade)."""
    locales, names = faker_names()
    path.write_text("\n".join([f"{_HEADER}{locales}", *names]) + "\n", encoding="utf-8")


# Up to this many distinct values (a category column, in most batches), names are looked
# up value by value, which is faster than building the frames the vectorized path needs.
_FEW = 256
# A word: 3+ letters with their combining marks (Indic scripts write vowels as marks).
_WORD = r"[\p{L}\p{M}\x{200C}\x{200D}]{3,}"


def names_in(distinct: pl.Series) -> pl.DataFrame:
    """For each distinct value (``i``, its position) the first names it bears (``name``)."""
    lex = lexicon()
    lower = distinct.cast(pl.String).str.to_lowercase()
    tokens = lower.str.extract_all(_WORD)
    if lower.len() <= _FEW and not lower.str.contains(_UNSPACED.pattern).any():
        pairs = [(i, w) for i, ws in enumerate(tokens.to_list()) for w in ws or ()
                 if w in lex.word_set]  # fmt: skip
        return pl.DataFrame(pairs, schema={"i": pl.Int64, "name": pl.String}, orient="row")
    frame = pl.DataFrame({"i": range(lower.len()), "word": tokens})
    words = frame.explode("word").filter(pl.col("word").is_in(lex.word_list))
    found = [words.rename({"word": "name"})]
    if lex.unspaced and lower.str.contains(_UNSPACED.pattern).any():
        inside = pl.DataFrame(
            {"i": range(lower.len()), "name": lower.str.extract_many(list(lex.unspaced))}
        ).explode("name")
        found.append(inside.drop_nulls())
    return pl.concat(found).unique()


@dataclass(frozen=True)
class NameFinding:
    names: int  # different first names found
    values: int  # distinct values that bear one
    distinct: int  # distinct values looked at
    example: str  # one value bearing a name (unredacted: redact before showing)

    @property
    def share(self) -> float:
        return self.values / self.distinct if self.distinct else 0.0

    @property
    def holds_names(self) -> bool:
        return self.names >= MIN_NAMES and self.share >= MIN_SHARE


def find_names(distinct: pl.Series) -> NameFinding:
    """How many names, in how many of the ``distinct`` values (nulls dropped first)."""
    distinct = distinct.drop_nulls()
    found = names_in(distinct)
    if found.height == 0:
        return NameFinding(0, 0, distinct.len(), "")
    example = str(distinct[int(found["i"][0])])
    return NameFinding(found["name"].n_unique(), found["i"].n_unique(), distinct.len(), example)


if __name__ == "__main__":
    write_names_file()
