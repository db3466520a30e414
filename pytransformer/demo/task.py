"""The demo task: written dates to ISO 8601 dates, one character per token.

A small sequence-to-sequence problem whose every answer can be checked::

    "friday, march 5, 2021"        -> "2021-03-05"
    "the fifth of march 2021"      -> "2021-03-05"
    "5 mar 2021"                   -> "2021-03-05"

The source is a date written in one of several English forms (month names,
abbreviations, ordinals in digits or words, an optional weekday that is always
the true one); the target is ``YYYY-MM-DD``.  Every form names the month with
a word or puts the year first, so no source is ambiguous (no 05/03 question).

Train and held-out examples are separated by *date*, not by draw: a fixed hash
of the calendar day puts one day in ten in the held-out set, in every written
form.  The shipped model never saw a held-out day during training, so exact
match on held-out draws measures generalisation, not recall.

Tokens are characters over a small vocabulary shared by source and target:
``<pad>`` = 0, ``<bos>`` = 1, ``<eos>`` = 2, then space, comma, hyphen, slash,
digits and lowercase letters.  Only numpy and the standard library are used.
"""
import datetime
import os

import numpy as np

__all__ = [
    "MODEL_PATH", "PAD_ID", "BOS_ID", "EOS_ID", "VOCAB", "VOCAB_SIZE", "MAX_SOURCE_LEN",
    "TARGET_LEN", "FORMATS", "encode", "decode", "encode_batch", "format_date", "is_held_out",
    "random_date", "sample_pairs", "exact_match",
]

# The trained model (scripts/train_demo.py writes it; the package ships it).
MODEL_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "demo_model.safetensors")

PAD_ID, BOS_ID, EOS_ID = 0, 1, 2
VOCAB = ["<pad>", "<bos>", "<eos>"] + list(" ,-/") + list("0123456789") + \
    list("abcdefghijklmnopqrstuvwxyz")
VOCAB_SIZE = len(VOCAB)
_INDEX = {c: i for i, c in enumerate(VOCAB) if len(c) == 1}

FIRST_YEAR, LAST_YEAR = 1900, 2099
TARGET_LEN = len("2021-03-05")

MONTHS = ["january", "february", "march", "april", "may", "june", "july", "august",
          "september", "october", "november", "december"]
MONTHS_SHORT = [m[:3] for m in MONTHS]
WEEKDAYS = ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]

_UNITS = ["", "first", "second", "third", "fourth", "fifth", "sixth", "seventh", "eighth",
          "ninth", "tenth", "eleventh", "twelfth", "thirteenth", "fourteenth", "fifteenth",
          "sixteenth", "seventeenth", "eighteenth", "nineteenth"]


def ordinal_word(n):
    """1 -> 'first', 23 -> 'twenty-third', 30 -> 'thirtieth' (1 <= n <= 31)."""
    if n < 20:
        return _UNITS[n]
    if n == 20:
        return "twentieth"
    if n == 30:
        return "thirtieth"
    tens = "twenty" if n < 30 else "thirty"
    return f"{tens}-{_UNITS[n % 10]}"


def ordinal_suffix(n):
    """1 -> '1st', 2 -> '2nd', 11 -> '11th', 23 -> '23rd'."""
    if 10 <= n % 100 <= 20:
        return f"{n}th"
    return f"{n}{ {1: 'st', 2: 'nd', 3: 'rd'}.get(n % 10, 'th') }"


# Each form maps a datetime.date to its written source.  d = day, m = month.
FORMATS = {
    "month_day_year": lambda d: f"{MONTHS[d.month - 1]} {d.day}, {d.year}",
    "day_month_year": lambda d: f"{d.day} {MONTHS[d.month - 1]} {d.year}",
    "mon_day_year": lambda d: f"{MONTHS_SHORT[d.month - 1]} {d.day}, {d.year}",
    "day_mon_year": lambda d: f"{d.day} {MONTHS_SHORT[d.month - 1]} {d.year}",
    "month_nth_year": lambda d: f"{MONTHS[d.month - 1]} {ordinal_suffix(d.day)}, {d.year}",
    "nth_month_year": lambda d: f"{ordinal_suffix(d.day)} {MONTHS[d.month - 1]} {d.year}",
    "the_nth_of_month": lambda d: f"the {ordinal_word(d.day)} of {MONTHS[d.month - 1]} {d.year}",
    "month_the_nth": lambda d: f"{MONTHS[d.month - 1]} the {ordinal_word(d.day)}, {d.year}",
    "weekday_month_day_year": lambda d: (f"{WEEKDAYS[d.weekday()]}, {MONTHS[d.month - 1]} "
                                         f"{d.day}, {d.year}"),
    "weekday_day_mon_year": lambda d: (f"{WEEKDAYS[d.weekday()][:3]} {d.day} "
                                       f"{MONTHS_SHORT[d.month - 1]} {d.year}"),
    "year_slash": lambda d: f"{d.year}/{d.month:02d}/{d.day:02d}",
    "year_month_day": lambda d: f"{d.year} {MONTHS[d.month - 1]} {d.day}",
}
FORMAT_NAMES = list(FORMATS)

# The longest source is 'the twenty-seventh of september 1900' (36 characters).
MAX_SOURCE_LEN = 36


def format_date(date, fmt):
    """The written source of ``date`` in form ``fmt`` (a key of FORMATS)."""
    try:
        return FORMATS[fmt](date)
    except KeyError:
        raise ValueError(f"unknown date format {fmt!r}; expected one of {FORMAT_NAMES}") from None


def iso(date):
    return date.isoformat()


_FIRST_ORDINAL = datetime.date(FIRST_YEAR, 1, 1).toordinal()
_N_DAYS = datetime.date(LAST_YEAR, 12, 31).toordinal() - _FIRST_ORDINAL + 1


def is_held_out(date):
    """True for the one day in ten kept out of training (a fixed hash of the day)."""
    # Knuth's multiplicative hash: consecutive days land far apart, and the
    # split is independent of weekday, month and year.
    return (date.toordinal() * 2654435761) % (1 << 32) * 10 >> 32 == 0


def random_date(rng, split="train"):
    """A uniformly random day in [1900-01-01, 2099-12-31] from ``split``
    ('train', 'held_out' or 'any')."""
    if split not in ("train", "held_out", "any"):
        raise ValueError(f"split must be 'train', 'held_out' or 'any', got {split!r}")
    while True:
        d = datetime.date.fromordinal(_FIRST_ORDINAL + int(rng.integers(_N_DAYS)))
        if split == "any" or is_held_out(d) == (split == "held_out"):
            return d


def sample_pairs(n, seed=None, split="train", rng=None):
    """n (source, target) string pairs: random days of ``split``, random forms.

    ``seed`` (or a numpy Generator ``rng``) makes the draw reproducible.
    """
    rng = np.random.default_rng(seed) if rng is None else rng
    pairs = []
    for _ in range(int(n)):
        d = random_date(rng, split)
        fmt = FORMAT_NAMES[int(rng.integers(len(FORMAT_NAMES)))]
        pairs.append((format_date(d, fmt), iso(d)))
    return pairs


# ------------------------------------------------------------------ tokens --

def encode(text, add_bos=False, add_eos=False):
    """Character ids of ``text`` (lower-cased); characters outside the
    vocabulary raise ValueError."""
    ids = [BOS_ID] if add_bos else []
    for c in str(text).lower():
        try:
            ids.append(_INDEX[c])
        except KeyError:
            raise ValueError(f"character {c!r} in {text!r} is not in the demo vocabulary "
                             f"(letters, digits, space and ' ,-/')") from None
    if add_eos:
        ids.append(EOS_ID)
    return np.array(ids, dtype=np.int64)


def decode(ids):
    """Text of a token sequence: stops at the first <eos>, skips <pad>/<bos>."""
    out = []
    for i in np.asarray(ids).ravel().tolist():
        if i == EOS_ID:
            break
        if i in (PAD_ID, BOS_ID):
            continue
        out.append(VOCAB[i] if 0 <= i < VOCAB_SIZE else "?")
    return "".join(out)


def encode_batch(texts, add_bos=False, add_eos=False):
    """A (B, T) int64 array of ``texts``, right-padded with <pad>."""
    seqs = [encode(t, add_bos, add_eos) for t in texts]
    width = max((len(s) for s in seqs), default=0)
    out = np.full((len(seqs), width), PAD_ID, dtype=np.int64)
    for i, s in enumerate(seqs):
        out[i, :len(s)] = s
    return out


def exact_match(predictions, targets):
    """Fraction of predictions equal to their target string."""
    predictions, targets = list(predictions), list(targets)
    if len(predictions) != len(targets):
        raise ValueError(f"{len(predictions)} predictions for {len(targets)} targets")
    if not targets:
        return 0.0
    return sum(p == t for p, t in zip(predictions, targets)) / len(targets)
