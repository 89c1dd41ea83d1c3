"""Loop protection: which mail never gets an automatic answer, and the automatic-mail rate limits."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from supportdesk.mail.loops import (
    DEFAULT_RECIPIENT_LIMITS,
    DEFAULT_TICKET_LIMITS,
    RateLimit,
    allowed,
    automatic_reason,
)
from supportdesk.mail.parse import parse_message

OURS = ["support@desk.test", "Billing@Desk.test"]


def message(*headers: str, sender: str = "Customer <customer@example.org>", body: str = "Hello") -> bytes:
    lines = [f"From: {sender}", "To: support@desk.test", "Subject: help", *headers]
    return ("\r\n".join(lines) + "\r\n\r\n" + body + "\r\n").encode()


def reason(*headers: str, **kwargs) -> str | None:
    return automatic_reason(parse_message(message(*headers, **kwargs)), OURS)


def test_ordinary_customer_mail_may_be_acknowledged():
    assert reason() is None
    assert reason("Auto-Submitted: no") is None
    assert reason("Precedence: first-class") is None
    assert reason("X-Auto-Response-Suppress: DR, RN, NRN") is None
    assert reason("Return-Path: <customer@example.org>") is None


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("Auto-Submitted: auto-replied", "Auto-Submitted"),
        ("Auto-Submitted: auto-generated (failure)", "Auto-Submitted"),
        ("Auto-Submitted: Auto-Notified; owner-email=x@example.org", "Auto-Submitted"),
        ("Precedence: bulk", "Precedence"),
        ("Precedence: JUNK", "Precedence"),
        ("Precedence: list", "Precedence"),
        ("List-Id: Users <users.lists.example.org>", "List-Id"),
        ("List-Unsubscribe: <mailto:leave@lists.example.org>", "List-Unsubscribe"),
        ("X-Loop: helpdesk@example.org", "X-Loop"),
        ("X-Auto-Response-Suppress: All", "X-Auto-Response-Suppress"),
        ("X-Auto-Response-Suppress: DR, OOF", "X-Auto-Response-Suppress"),
        ("X-Auto-Response-Suppress: AutoReply", "X-Auto-Response-Suppress"),
        ("X-Autoreply: yes", "autoresponder"),
        ("X-Autorespond: vacation", "autoresponder"),
        ("Return-Path: <>", "empty return path"),
        ("Return-Path: <MAILER-DAEMON@mx.example.org>", "mailer-daemon"),
        ("Return-Path: postmaster@example.org", "postmaster"),
    ],
)
def test_loop_signals(header, expected):
    found = reason(header)
    assert found is not None and expected.lower() in found.lower()


@pytest.mark.parametrize(
    "sender",
    ["MAILER-DAEMON@mx.example.org", "Mail Delivery Subsystem <postmaster@example.org>", "mailer-daemon"],
)
def test_system_senders(sender):
    assert reason(sender=sender) is not None


def test_mail_from_our_own_addresses():
    assert "own address" in reason(sender="Support <SUPPORT@desk.test>")
    assert "own address" in reason(sender="billing@desk.test")
    assert reason(sender="support@desk.test.example.org") is None


def test_no_sender_address():
    assert reason(sender="Nobody <>") == "no sender address"


def test_auto_reply_with_auto_submitted():
    raw = message(
        "Auto-Submitted: auto-replied",
        "Message-ID: <ooo-1@example.org>",
        body="I am out of the office until Monday.",
    )
    msg = parse_message(raw)
    assert msg.error is None
    assert automatic_reason(msg, OURS) == "Auto-Submitted: auto-replied"


def test_dsn_is_automatic_even_without_other_signals():
    raw = (
        b"From: Mail System <mail@mx.example.org>\r\nTo: support@desk.test\r\nSubject: Undeliverable\r\n"
        b'Content-Type: multipart/report; report-type=delivery-status; boundary="r"\r\n\r\n'
        b"--r\r\nContent-Type: text/plain\r\n\r\nfailed\r\n"
        b"--r\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx\r\n\r\n"
        b"Final-Recipient: rfc822; c@example.org\r\nAction: failed\r\nStatus: 5.1.1\r\n\r\n--r--\r\n"
    )
    msg = parse_message(raw)
    assert msg.dsn is not None
    assert automatic_reason(msg, OURS) == "delivery or read report"


def test_read_receipt_is_automatic():
    raw = (
        b"From: c@example.org\r\nSubject: Read: help\r\n"
        b'Content-Type: multipart/report; report-type=disposition-notification; boundary="r"\r\n\r\n'
        b"--r\r\nContent-Type: text/plain\r\n\r\nYour message was read.\r\n--r--\r\n"
    )
    msg = parse_message(raw)
    assert msg.dsn is None and msg.report_type == "disposition-notification"
    assert automatic_reason(msg, OURS) == "delivery or read report"


# -- rate limits ------------------------------------------------------------------------------

NOW = datetime(2024, 5, 1, 12, 0, tzinfo=timezone.utc)


def minutes_ago(*minutes: float) -> list[datetime]:
    return [NOW - timedelta(minutes=m) for m in minutes]


def test_default_limits():
    assert DEFAULT_TICKET_LIMITS == (RateLimit(10, 600), RateLimit(100, 36000))
    assert DEFAULT_RECIPIENT_LIMITS == (RateLimit(30, 600), RateLimit(360, 36000))


def test_short_window():
    assert allowed([], NOW, DEFAULT_TICKET_LIMITS)
    assert allowed(minutes_ago(*range(9)), NOW, DEFAULT_TICKET_LIMITS)
    assert not allowed(minutes_ago(*range(10)), NOW, DEFAULT_TICKET_LIMITS)
    assert allowed(minutes_ago(*[10 + i / 100 for i in range(10)]), NOW, DEFAULT_TICKET_LIMITS)


def test_long_window():
    spread = minutes_ago(*[15 + i * 5 for i in range(99)])
    assert allowed(spread, NOW, DEFAULT_TICKET_LIMITS)
    assert not allowed([*spread, NOW - timedelta(hours=9)], NOW, DEFAULT_TICKET_LIMITS)
    assert allowed([*spread, NOW - timedelta(hours=10, seconds=1)], NOW, DEFAULT_TICKET_LIMITS)


def test_recipient_limits():
    assert allowed(minutes_ago(*[i / 10 for i in range(29)]), NOW, DEFAULT_RECIPIENT_LIMITS)
    assert not allowed(minutes_ago(*[i / 10 for i in range(30)]), NOW, DEFAULT_RECIPIENT_LIMITS)


def test_future_times_count_and_naive_times_are_utc():
    future = [NOW + timedelta(hours=1)] * 10
    assert not allowed(future, NOW, DEFAULT_TICKET_LIMITS)
    naive = [t.replace(tzinfo=None) for t in minutes_ago(*range(10))]
    assert not allowed(naive, NOW, DEFAULT_TICKET_LIMITS)
    assert not allowed(minutes_ago(*range(10)), NOW.replace(tzinfo=None), DEFAULT_TICKET_LIMITS)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(min_value=-3600, max_value=72000), max_size=150))
def test_allowed_matches_counting(offsets):
    times = [NOW - timedelta(seconds=s) for s in offsets]
    expected = all(sum(1 for s in offsets if s < limit.window_seconds) < limit.count for limit in DEFAULT_TICKET_LIMITS)
    assert allowed(times, NOW, DEFAULT_TICKET_LIMITS) is expected
