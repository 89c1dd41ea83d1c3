"""Mail loops: which messages must never get an automatic answer, and how many
automatic answers may go out.  (pure)

Two help desks (or a help desk and an out-of-office reply) acknowledging each
other forever is the classic failure; so is answering a bounce.  The signals are
the ones RT and Zammad act on (RFC 3834 and common practice).  A Message-ID at our
own domain is deliberately not one of them: in a company's internal help desk
every colleague's mail carries it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Iterable, Sequence

from supportdesk.mail.parse import ParsedMessage

__all__ = [
    "DEFAULT_RECIPIENT_LIMITS",
    "DEFAULT_TICKET_LIMITS",
    "RateLimit",
    "allowed",
    "automatic_reason",
]

_BULK_PRECEDENCE = frozenset({"bulk", "junk", "list", "auto_reply"})
_SUPPRESS_TOKENS = frozenset({"all", "autoreply", "oof"})
_SYSTEM_SENDERS = frozenset({"mailer-daemon", "postmaster"})
_ANGLE = re.compile(r"<([^<>]*)>")


def automatic_reason(msg: ParsedMessage, our_addresses: Iterable[str]) -> str | None:
    """Why ``msg`` must never be auto-acknowledged, or None when answering is safe."""
    headers = msg.headers
    auto = headers.get("auto-submitted", "").split(";", 1)[0].split("(", 1)[0].strip().lower()
    if auto and auto != "no":
        return f"Auto-Submitted: {auto}"
    precedence = _first_word(headers.get("precedence", ""))
    if precedence in _BULK_PRECEDENCE:
        return f"Precedence: {precedence}"
    if "list-id" in headers:
        return "mailing list (List-Id)"
    if "list-unsubscribe" in headers:
        return "mailing list (List-Unsubscribe)"
    if "x-loop" in headers:
        return "X-Loop header"
    suppress = {t for t in re.split(r"[\s,;]+", headers.get("x-auto-response-suppress", "").lower()) if t}
    if suppress & _SUPPRESS_TOKENS:
        return "X-Auto-Response-Suppress asks for no automatic reply"
    if "x-autoreply" in headers or "x-autorespond" in headers:
        return "sent by an autoresponder (X-Autoreply/X-Autorespond)"
    if "return-path" in headers:
        return_path = _return_path(headers["return-path"])
        if not return_path:
            return "empty return path (bounce or automatic mail)"
        if _local_part(return_path) in _SYSTEM_SENDERS:
            return f"return path is {return_path}"
    if msg.dsn is not None or msg.report_type is not None:
        return "delivery or read report"
    if not msg.from_addr:
        return "no sender address"
    if _local_part(msg.from_addr) in _SYSTEM_SENDERS:
        return f"sent by {msg.from_addr}"
    ours = {address.strip().lower() for address in our_addresses}
    if msg.from_addr.lower() in ours:
        return f"sent from our own address {msg.from_addr}"
    return None


def _first_word(value: str) -> str:
    words = value.strip().lower().split()
    return words[0].strip(";,") if words else ""


def _return_path(value: str) -> str:
    """The address of a Return-Path value: "" for ``<>`` (the null sender)."""
    first = value.split(",", 1)[0].strip()
    match = _ANGLE.search(first)
    return (match.group(1) if match else first).strip().lower()


def _local_part(address: str) -> str:
    return address.rpartition("@")[0].lower() if "@" in address else address.lower()


@dataclass(frozen=True)
class RateLimit:
    """At most ``count`` automatic messages within any ``window_seconds``."""

    count: int
    window_seconds: int


DEFAULT_TICKET_LIMITS = (RateLimit(10, 10 * 60), RateLimit(100, 10 * 60 * 60))
DEFAULT_RECIPIENT_LIMITS = (RateLimit(30, 10 * 60), RateLimit(360, 10 * 60 * 60))


def allowed(sent_times: Sequence[datetime], now: datetime, limits: Iterable[RateLimit]) -> bool:
    """Whether one more automatic message may go out ``now``, given when earlier ones went.

    Times in the future (clock skew between machines) count as inside every window,
    so a wrong clock can only make the limit stricter.  Naive datetimes are UTC.
    """
    now = _utc(now)
    times = [_utc(t) for t in sent_times]
    for limit in limits:
        start = now - timedelta(seconds=limit.window_seconds)
        if sum(1 for t in times if t > start) >= limit.count:
            return False
    return True


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)
