"""Making untrusted text safe to store and to show.

Mail content reaches the database and the terminal; neither may receive control
characters (terminal escape sequences) or lone surrogates (SQLite refuses them).
"""

from __future__ import annotations

import re
import unicodedata

_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")
_SURROGATE = re.compile("[\ud800-\udfff]")
_SINGLE_LINE_SPACE = re.compile(r"[\r\n\t]+")


def clean_text(value: str | None) -> str:
    """Multi-line text with every control character but newline and tab removed.

    Line endings become ``\\n``; lone surrogates (from raw 8-bit headers) become U+FFFD.
    Bidirectional overrides are dropped too: they can make text read differently
    from what it is.
    """
    if not value:
        return ""
    value = _SURROGATE.sub("\ufffd", value)
    value = value.replace("\r\n", "\n").replace("\r", "\n")
    return _CONTROL.sub("", value)


def clean_line(value: str | None) -> str:
    """One line of text (a subject, a name): no controls, no line breaks."""
    return _SINGLE_LINE_SPACE.sub(" ", clean_text(value)).strip()


def fold_for_search(value: str) -> str:
    """Lower-case, accent-free form used when comparing subjects."""
    decomposed = unicodedata.normalize("NFKD", value)
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch)).casefold()
