"""Subjects: reply prefixes and the ticket tag ``[Support #123]``.  (pure)"""

from __future__ import annotations

import re

from supportdesk.text import clean_line, fold_for_search

# Re, Fwd and their cousins in common languages, with optional counters
# ("Re[2]:", "AW(3):") and the full-width colon some clients emit.
REPLY_PREFIXES = (
    "re", "aw", "sv", "vs", "antw", "antwort", "réf", "ref", "rif", "r", "res", "odp", "ynt",
    "fwd", "fw", "wg", "tr", "enc", "doorst", "rv", "i", "vb", "πρθ", "απ", "ha", "答复", "回复",
    "转发", "답장", "전달",
)
_PREFIX = re.compile(
    r"^\s*(?:%s)\s*(?:\[\d+\]|\(\d+\))?\s*[:：]\s*" % "|".join(re.escape(p) for p in REPLY_PREFIXES),
    re.IGNORECASE,
)
_TAG = r"\[\s*{tag}\s*#\s*(\d{{1,12}})\s*\]"


def strip_reply_prefixes(subject: str) -> str:
    """The subject without any leading chain of reply/forward prefixes."""
    subject = clean_line(subject)
    while True:
        stripped = _PREFIX.sub("", subject, count=1)
        if stripped == subject:
            return subject.strip()
        subject = stripped


def find_ticket_tag(subject: str, tag: str) -> int | None:
    """The ticket id in ``[<tag> #<id>]``, or None.  The tag is matched case-insensitively."""
    match = re.search(_TAG.format(tag=re.escape(tag)), subject or "", re.IGNORECASE)
    return int(match.group(1)) if match else None


def remove_ticket_tag(subject: str, tag: str) -> str:
    cleaned = re.sub(_TAG.format(tag=re.escape(tag)), " ", subject or "", flags=re.IGNORECASE)
    return re.sub(r"\s{2,}", " ", cleaned).strip()


def tag_subject(subject: str, tag: str, ticket_id: int) -> str:
    """``Re: <subject> [<tag> #<id>]`` style: the tag once, never doubled on reply chains."""
    base = remove_ticket_tag(strip_reply_prefixes(subject), tag) or "(no subject)"
    return f"{base} [{tag} #{ticket_id}]"


def subject_key(subject: str, tag: str | None = None) -> str:
    """A comparison key: no prefixes, no ticket tag, folded case and accents, single spaces."""
    base = strip_reply_prefixes(subject)
    if tag:
        base = remove_ticket_tag(base, tag)
    return " ".join(fold_for_search(base).split())
