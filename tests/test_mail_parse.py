"""Inbound mail parsing: never raises, never lets unsafe text through, reads real-world mail."""

from __future__ import annotations

import os

import base64
import functools
import quopri
import re
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from supportdesk.mail.parse import (
    DeliveryReport,
    ParsedAttachment,
    ParsedMessage,
    html_to_text,
    parse_message,
    quote_split,
)

CORPUS = Path(__file__).resolve().parents[2] / "shared" / "corpus"
CORPUS_FILES = sorted(CORPUS.glob("cpython/*.txt")) + sorted(CORPUS.glob("enmime/*.raw"))

# Control characters, DEL, C1 and lone surrogates: never in stored or displayed text.
UNSAFE_IN_BODY = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff]")
UNSAFE_IN_LINE = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")


def assert_clean(msg: ParsedMessage) -> None:
    """Every string in the result is safe: bodies may keep \\n and \\t, nothing else may."""
    lines: list[str] = [msg.subject, msg.from_name, *msg.in_reply_to, *msg.references, *msg.defects]
    lines += [value for value in (msg.message_id, msg.from_addr, msg.error) if value is not None]
    for pairs in (msg.to, msg.cc, msg.reply_to):
        for name, addr in pairs:
            lines += [name, addr]
    lines += [*msg.headers.keys(), *msg.headers.values()]
    for attachment in msg.attachments:
        assert isinstance(attachment.data, bytes)
        lines += [attachment.filename, attachment.content_type]
        if attachment.content_id is not None:
            lines.append(attachment.content_id)
    if msg.dsn is not None:
        lines += [msg.dsn.action, msg.dsn.status, msg.dsn.diagnostic, *msg.dsn.recipients]
        if msg.dsn.original_message_id is not None:
            lines.append(msg.dsn.original_message_id)
    for value in lines:
        assert isinstance(value, str)
        assert not UNSAFE_IN_LINE.search(value), repr(value)
    for value in (msg.body_text, msg.body_html or ""):
        assert not UNSAFE_IN_BODY.search(value), repr(value[:200])
    if msg.date is not None:
        assert msg.date.utcoffset().total_seconds() == 0


def assert_usable_or_quarantined(msg: ParsedMessage) -> None:
    if msg.error is None:
        assert msg.body_text.strip() or msg.attachments or msg.subject
    else:
        assert msg.error.strip()


@functools.cache
def parsed(path: Path) -> ParsedMessage:
    """Each corpus file is parsed once per session, however many tests look at it."""
    return parse_message(path.read_bytes())


def corpus(name: str) -> ParsedMessage:
    path = CORPUS / name
    if not path.exists():
        pytest.skip(f"corpus missing: {path}")
    return parsed(path)


# -- the whole corpus ------------------------------------------------------------------------


def _require_corpus() -> None:
    """The corpus sits beside the repo (../shared/corpus); CI always has it, so there its absence fails."""
    if not CORPUS.is_dir():
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"corpus folder missing: {CORPUS}")
        pytest.skip(f"corpus folder missing: {CORPUS}")


def test_corpus_is_present():
    _require_corpus()
    assert len(CORPUS_FILES) > 100


@pytest.mark.parametrize("path", CORPUS_FILES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_corpus_message_parses_or_is_quarantined(path):
    msg = parsed(path)
    assert isinstance(msg, ParsedMessage)
    assert_usable_or_quarantined(msg)
    assert_clean(msg)


def test_only_non_mail_in_the_corpus_is_quarantined():
    """Real mail must never end in quarantine; the few files that hold no mail do."""
    _require_corpus()
    quarantined = {
        f"{p.parent.name}/{p.name}" for p in CORPUS_FILES if parsed(p).error is not None
    }
    assert quarantined == {
        "cpython/msg_18.txt",  # headers only, no subject, empty body
        "cpython/msg_19.txt",  # a digest body without any header
        "enmime/mail__erroneous.raw",  # "// Not an RFC-822 Document"
        "enmime/parts__chardet-fail.raw",  # a GIF labelled text/plain, no sender or subject
        "enmime/parts__header-only.raw",  # a MIME part header, nothing else
        "enmime/parts__malformed-content-type-params.raw",
        "enmime/parts__missing-closing-param-quote.raw",
    }


# -- specific corpus messages -----------------------------------------------------------------


def test_html_only_message_becomes_text_and_keeps_inline_image():
    msg = corpus("enmime/mail__html-only-inline.raw")
    assert msg.error is None
    assert msg.body_text == "Test of HTML section"
    assert msg.body_html and "<html" in msg.body_html.lower()
    [image] = msg.attachments
    assert (image.filename, image.content_type, image.inline) == ("favicon.png", "image/png", True)
    assert image.content_id == "8B8481A2-25CA-4886-9B5A-8EB9115DD064@skynet"
    assert image.data.startswith(b"\x89PNG")


def test_plain_alternative_wins_over_html():
    msg = corpus("enmime/mail__html-mime-inline.raw")
    assert msg.body_text == "Test of text section"
    assert msg.body_html is not None


def test_rfc2047_subject_and_names_are_decoded():
    msg = corpus("enmime/mail__qp-utf8-header.raw")
    assert msg.subject == "MIME UTF8 Test ¢ More Text"
    assert msg.to == [("Mirosław Marczak", "marczak@inbucket.com")]
    assert msg.message_id == "5081A889.3020108@jamehi03lx.noa.com"
    assert msg.date == datetime(2012, 10, 19, 19, 22, 49, tzinfo=timezone.utc)


def test_two_addresses_in_from_are_not_trusted():
    msg = corpus("enmime/mail__qp-utf8-header.raw")
    assert msg.from_addr == "jamehi03@jamehi03lx.noa.com"
    assert msg.from_trusted is False


@pytest.mark.parametrize(
    ("name", "filename", "content_type"),
    [
        ("enmime/mail__mime-bad-8bit-filename.raw", "管理.doc", "application/msword"),
        ("enmime/mail__mime-unquoted-tspecials-param.raw", "Invoice_(302232133150612).pdf", "application/pdf"),
        ("enmime/mail__mime-bad-content-type.raw", "Invoice_302232133150612.pdf", "application/pdf"),
        ("enmime/mail__attachment-only-text-attachment.raw", "test.csv", "text/plain"),
        ("enmime/parts__unquoted-ctype-param-special.raw", "calendar.ics", "text/calendar"),
        ("cpython/msg_07.txt", "dingusfish.gif", "image/gif"),
    ],
)
def test_attachments_are_named(name, filename, content_type):
    msg = corpus(name)
    assert msg.error is None
    assert [(a.filename, a.content_type) for a in msg.attachments] == [(filename, content_type)]


def test_attachment_without_name_gets_one():
    msg = corpus("enmime/mail__attachment-octet.raw")
    assert [a.filename for a in msg.attachments] == ["attachment-1.bin"]


def test_malformed_base64_is_decoded_as_far_as_it_goes():
    msg = corpus("enmime/low-quality__malformed-base64-attach.raw")
    assert msg.body_text == "A text section"
    assert msg.attachments[0].data == b"<html>\n"
    assert any("base64" in d for d in msg.defects)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("enmime/low-quality__unk-charset-part.raw", "A text section"),
        ("enmime/low-quality__unk-charset-html-only.raw", "Hello World!"),
        ("enmime/mail__multipart-wo-boundary.raw", "I'm  multipart message without boundary"),
        ("enmime/parts__ctype-invalid-characters.raw", "Test of text/plain section with invalid content type"),
        ("enmime/mail__mime-bad-content-transfer-encoding.raw", "ploozdect  nispplul"),
        ("enmime/parts__chardet-success-iso-8859-1.raw", "DIE Drachenköpfe unserer Boote"),
    ],
)
def test_damaged_mail_still_reads(name, expected):
    msg = corpus(name)
    assert msg.error is None
    assert msg.body_text.startswith(expected)


def test_mislabelled_utf8_reads_as_utf8():
    msg = corpus("enmime/low-quality__incorrect-charset.raw")
    assert "∮ E⋅da = Q" in msg.body_text
    assert "\ufffd" not in msg.body_text[:200]


def test_leading_space_before_headers_is_forgiven():
    msg = corpus("enmime/low-quality__bad-header-start.raw")
    assert (msg.from_addr, msg.subject, msg.body_text) == ("james@makita.skynet", "plain text", "A text section")


def test_non_mail_is_quarantined():
    assert corpus("enmime/mail__erroneous.raw").error


def test_corpus_bounce_names_the_original_message():
    msg = corpus("cpython/msg_16.txt")
    assert msg.dsn == DeliveryReport(
        original_message_id="002001c144a6$8752e060$56104586@oxy.edu",
        recipients=["jangel1@cougar.noc.ucla.edu"],
        action="failed",
        status="5.0.0 (recipient reached disk quota)",
        diagnostic="",
    )


def test_corpus_bounce_with_rfc822_headers_part():
    msg = corpus("cpython/msg_43.txt")
    assert msg.dsn is not None
    assert msg.dsn.original_message_id == "edab.7804f5cb8070@python.org"
    assert msg.dsn.status == "5.7.1"
    assert "xxx@dot.ca.gov" in msg.dsn.recipients
    assert msg.from_addr is None and msg.from_name == "MAILER DAEMON"


def test_forwarded_message_is_kept_as_eml():
    msg = corpus("cpython/msg_46.txt")
    [forwarded] = msg.attachments
    assert forwarded.content_type == "message/rfc822"
    assert forwarded.filename.endswith(".eml")
    assert b"Subject:" in forwarded.data


# -- crafted messages ----------------------------------------------------------------------


def mail(*headers: str, body: str | bytes = "Hello\n") -> bytes:
    head = "\r\n".join(headers).encode("utf-8", "surrogateescape")
    payload = body if isinstance(body, bytes) else body.encode()
    return head + b"\r\n\r\n" + payload


def test_plain_message_fields():
    msg = parse_message(
        mail(
            "From: Alice Example <Alice@Example.ORG>",
            "To: Support <support@desk.test>, bob@example.org",
            "Cc: \"Carol, C.\" <carol@example.org>",
            "Reply-To: <replies@example.org>",
            "Subject: Printer on fire",
            "Date: Tue, 1 Oct 2024 10:00:00 +0200",
            "Message-ID: < abc.123@example.org >",
            "In-Reply-To: <parent@desk.test> (sent by Bob)",
            "References: <root@desk.test>\r\n <parent@desk.test>",
            "Auto-Submitted: no",
            "X-Unrelated: yes",
        )
    )
    assert msg.error is None
    assert (msg.from_addr, msg.from_name, msg.from_trusted) == ("alice@example.org", "Alice Example", True)
    assert msg.to == [("Support", "support@desk.test"), ("", "bob@example.org")]
    assert msg.cc == [("Carol, C.", "carol@example.org")]
    assert msg.reply_to == [("", "replies@example.org")]
    assert msg.message_id == "abc.123@example.org"
    assert msg.in_reply_to == ["parent@desk.test"]
    assert msg.references == ["root@desk.test", "parent@desk.test"]
    assert msg.date == datetime(2024, 10, 1, 8, 0, tzinfo=timezone.utc)
    assert msg.headers == {"auto-submitted": "no"}
    assert msg.body_text == "Hello"


def test_cve_2023_27043_from_is_not_trusted():
    msg = parse_message(mail("From: alice@example.org)<bob@example.org>", "Subject: hi"))
    assert msg.error is None
    assert msg.from_trusted is False
    assert any("not trusted" in d for d in msg.defects)


@pytest.mark.parametrize(
    "from_header",
    [
        "From: alice@example.org <bob@example.org>",
        "From: Smith, John <john@example.org>",
        "From: alice@example.org, bob@example.org",
        "From: John <john@example.org",
    ],
)
def test_ambiguous_from_is_not_trusted(from_header):
    assert parse_message(mail(from_header, "Subject: hi")).from_trusted is False


@pytest.mark.parametrize(
    ("from_header", "addr", "name"),
    [
        ("From: John Q. Public <john@example.org>", "john@example.org", "John Q. Public"),
        ("From: john@example.org (John Smith)", "john@example.org", ""),
        ('From: "alice@example.org" <bob@example.org>', "bob@example.org", "alice@example.org"),
        ("From: =?utf-8?q?J=C3=B6rg?= <j@example.de>", "j@example.de", "Jörg"),
    ],
)
def test_ordinary_from_is_trusted(from_header, addr, name):
    msg = parse_message(mail(from_header, "Subject: hi"))
    assert (msg.from_addr, msg.from_name, msg.from_trusted) == (addr, name, True)


@pytest.mark.parametrize(
    ("header", "check"),
    [
        ("From: <", lambda m: m.from_addr is None and not m.from_trusted),
        ("From: [, .--\t?>=.;", lambda m: not m.from_trusted),
        ("Message-ID:  <q@[", lambda m: m.message_id == "q@["),
        ("To: q[>?\\;,:u;q8(", lambda m: m.to == []),
        ("Reply-To: qf ?@", lambda m: True),
    ],
)
def test_headers_the_email_package_cannot_read(header, check):
    """Python 3.11 raises IndexError/AttributeError/UnboundLocalError on these."""
    sender = [] if header.startswith("From") else ["From: a@example.org"]
    msg = parse_message(mail(*sender, header, "Subject: s"))
    assert msg.error is None
    assert check(msg)
    assert_clean(msg)


def test_encoded_word_with_crlf_cannot_inject_a_header():
    msg = parse_message(
        mail("From: a@example.org", "Subject: =?utf-8?q?hello=0D=0ABcc:_victim@example.org?=", "To: x@example.org")
    )
    assert msg.subject == "hello Bcc: victim@example.org"
    assert msg.to == [("", "x@example.org")]


def test_terminal_escapes_are_removed_everywhere():
    msg = parse_message(
        mail(
            "From: =?utf-8?q?Evil=1B]0;pwned=07?= <evil@example.org>",
            "Subject: =?utf-8?q?=1B[31mred=C2=9B?=",
            body="line\x1b[2J one\r\nline two\x07\n",
        )
    )
    assert_clean(msg)
    assert msg.subject == "[31mred"
    assert msg.body_text == "line[2J one\nline two"


def test_raw_8bit_headers_are_decoded_not_surrogates():
    msg = parse_message(b"From: Jos\xe9 <jose@example.org>\r\nSubject: Caf\xc3\xa9 \xe9t\xe9\r\n\r\nx")
    assert msg.subject == "Café été"
    assert msg.from_name == "José"
    assert_clean(msg)


def test_garbage_date_is_none_and_noted():
    msg = parse_message(mail("From: a@example.org", "Subject: s", "Date: the day after tomorrow"))
    assert msg.date is None
    assert any("date" in d.lower() for d in msg.defects)


def test_date_without_zone_is_utc():
    msg = parse_message(mail("From: a@example.org", "Subject: s", "Date: Thu, 18 Oct 2012 22:48:39 -0000"))
    assert msg.date == datetime(2012, 10, 18, 22, 48, 39, tzinfo=timezone.utc)


def test_unknown_charset_falls_back():
    msg = parse_message(
        mail(
            "From: a@example.org",
            "Subject: s",
            "Content-Type: text/plain; charset=x-no-such-charset",
            body="Grüße".encode(),
        )
    )
    assert msg.body_text == "Grüße"


def test_non_text_codec_as_charset_is_harmless():
    msg = parse_message(
        mail("From: a@example.org", "Subject: s", "Content-Type: text/plain; charset=zlib_codec", body="plain")
    )
    assert msg.body_text == "plain"


# Old mailers send 8-bit Windows-1252/Latin-1 text with no charset label (or labelled ISO-8859-1).
WIN1252_TEXT = "Grüße aus Köln – das Gerät kostet 12 € … “bitte” ‘schnell’ • Œuvre ß"
LATIN1_TEXT = "Ça coûte très cher, garçon! ¿Qué? ½ × ÿ"


def unlabelled(content_type: str = "text/plain", cte: str = "8bit", body: bytes = b"") -> bytes:
    return mail("From: Bob <bob@acme.test>", "To: support@desk.test", "Subject: Rechnung", "MIME-Version: 1.0",
                f"Content-Type: {content_type}", f"Content-Transfer-Encoding: {cte}", body=body)


@pytest.mark.parametrize("raw", [
    unlabelled(body=WIN1252_TEXT.encode("cp1252") + b"\r\n"),
    unlabelled(cte="quoted-printable", body=quopri.encodestring(WIN1252_TEXT.encode("cp1252"))),
    unlabelled(cte="base64", body=base64.encodebytes(WIN1252_TEXT.encode("cp1252"))),
    mail("From: bob@acme.test", "Subject: no MIME at all", body=WIN1252_TEXT.encode("cp1252")),
], ids=["8bit", "quoted-printable", "base64", "no-mime-headers"])
def test_unlabelled_windows_1252_text_part_reads_as_written(raw):
    msg = parse_message(raw)
    assert msg.error is None
    assert msg.body_text == WIN1252_TEXT
    assert "\ufffd" not in msg.body_text
    assert_clean(msg)


def test_unlabelled_latin1_parts_of_a_multipart_read_as_written():
    boundary = "BB"
    raw = unlabelled(f"multipart/mixed; boundary={boundary}", "8bit", (
        b"--BB\r\nContent-Type: text/plain\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
        + LATIN1_TEXT.encode("latin-1") + b"\r\n"
        b"--BB\r\nContent-Type: multipart/alternative; boundary=AA\r\n\r\n"
        b"--AA\r\nContent-Type: text/plain\r\n\r\n" + WIN1252_TEXT.encode("cp1252") + b"\r\n"
        b"--AA\r\nContent-Type: text/html\r\n\r\n<p>" + WIN1252_TEXT.encode("cp1252") + b"</p>\r\n--AA--\r\n"
        b"--BB\r\nContent-Type: application/octet-stream\r\nContent-Disposition: attachment; filename=x.bin\r\n"
        b"Content-Transfer-Encoding: base64\r\n\r\nAAEC/w==\r\n--BB--\r\n"
    ))
    msg = parse_message(raw)
    assert msg.error is None
    assert msg.body_text == f"{LATIN1_TEXT}\n\n{WIN1252_TEXT}"
    assert msg.body_html == f"<p>{WIN1252_TEXT}</p>"
    assert [(a.filename, a.data) for a in msg.attachments] == [("x.bin", b"\x00\x01\x02\xff")]
    assert_clean(msg)


def test_unlabelled_utf8_stays_utf8_and_unassigned_bytes_are_marked_not_dropped():
    assert parse_message(unlabelled(body=WIN1252_TEXT.encode("utf-8"))).body_text == WIN1252_TEXT
    # 0x81 0x8D 0x8F 0x90 0x9D mean nothing in Windows-1252: shown as U+FFFD, the rest kept.
    msg = parse_message(unlabelled(body=b"Preis \x80 \x81\x8d\x8f\x90\x9d Ende"))
    assert msg.error is None
    assert msg.body_text == "Preis € \ufffd\ufffd\ufffd\ufffd\ufffd Ende"
    assert_clean(msg)


@pytest.mark.parametrize("label", ["iso-8859-1", "ISO-8859-1", "latin1", '"iso-8859-1"', "l1"])
def test_a_latin1_label_is_read_as_windows_1252(label):
    """Outlook and friends write €, curly quotes and dashes in 0x80–0x9F and still say ISO-8859-1;
    read strictly as Latin-1 those become C1 controls and vanish."""
    raw = unlabelled(f"text/plain; charset={label}", body=WIN1252_TEXT.encode("cp1252"))
    assert parse_message(raw).body_text == WIN1252_TEXT
    assert parse_message(unlabelled(f"text/plain; charset={label}", body=LATIN1_TEXT.encode("latin-1"))
                         ).body_text == LATIN1_TEXT


def test_unlabelled_utf8_of_c1_controls_is_read_as_windows_1252():
    """Corpus: an unlabelled HTML part holds C2 80, valid UTF-8 of a control, meant as a Euro sign
    (enmime expects U+20AC too); read as UTF-8 the sign would be stripped without a trace."""
    msg = corpus("enmime/mail__non-mime-missing-charset.raw")
    assert "Euro Sign: Â€" in msg.body_text and "Euro Sign: Â€" in msg.body_html


CP1252_PRINTABLE = [chr(c) for c in range(0x20, 0x7F)] + [
    ch for ch in bytes(range(0x80, 0x100)).decode("cp1252", "ignore") if ch.isprintable()]


@settings(max_examples=200, deadline=None)
@given(st.text(st.sampled_from(CP1252_PRINTABLE), min_size=1, max_size=200))
def test_unlabelled_single_byte_text_is_never_lost(text):
    """Unless its bytes happen to be UTF-8 text, unlabelled Windows-1252 text comes back exactly."""
    data = text.encode("cp1252")
    msg = parse_message(unlabelled(body=data))
    assert msg.error is None
    assert_clean(msg)
    try:
        expected = data.decode("utf-8")
        if re.search("[\x80-\x9f]", expected):
            expected = text
    except UnicodeDecodeError:
        expected = text
    assert msg.body_text == (expected if expected.strip() else "")


def test_rfc2231_filename_and_continuations():
    boundary = "b0undary"
    raw = mail(
        "From: a@example.org",
        "Subject: files",
        f'Content-Type: multipart/mixed; boundary="{boundary}"',
        body=(
            f"--{boundary}\r\nContent-Type: text/plain\r\n\r\nSee attached.\r\n"
            f"--{boundary}\r\nContent-Type: application/pdf\r\n"
            "Content-Disposition: attachment; filename*=utf-8''r%C3%A9sum%C3%A9.pdf\r\n"
            "Content-Transfer-Encoding: base64\r\n\r\nJVBERi0=\r\n"
            f"--{boundary}\r\nContent-Type: application/octet-stream\r\n"
            "Content-Disposition: attachment; filename*0*=utf-8''%E2%82%AC-;\r\n filename*1=report.txt\r\n\r\ndata\r\n"
            f"--{boundary}\r\nContent-Type: application/octet-stream\r\n"
            'Content-Disposition: attachment; filename="..\\\\..\\\\evil.exe"\r\n\r\nMZ\r\n'
            f"--{boundary}--\r\n"
        ),
    )
    msg = parse_message(raw)
    assert [a.filename for a in msg.attachments] == ["résumé.pdf", "€-report.txt", "evil.exe"]
    assert msg.attachments[0].data == b"%PDF-"
    assert msg.body_text == "See attached."


def test_winmail_dat_is_kept_as_attachment():
    tnef = b"\x78\x9f\x3e\x22\x01\x00\x01\x06\x90\x08\x00"
    raw = mail(
        "From: outlook@example.org",
        "Subject: rich text",
        'Content-Type: multipart/mixed; boundary="x"',
        body=(
            "--x\r\nContent-Type: text/plain\r\n\r\nHello from Outlook\r\n"
            '--x\r\nContent-Type: application/ms-tnef; name="winmail.dat"\r\n'
            f"Content-Transfer-Encoding: base64\r\n\r\n{base64.b64encode(tnef).decode()}\r\n--x--\r\n"
        ),
    )
    msg = parse_message(raw)
    assert msg.body_text == "Hello from Outlook"
    assert [(a.filename, a.content_type, a.data) for a in msg.attachments] == [
        ("winmail.dat", "application/ms-tnef", tnef)
    ]


def test_nested_multiparts_are_walked():
    raw = mail(
        "From: a@example.org",
        "Subject: nested",
        'Content-Type: multipart/mixed; boundary="outer"',
        body=(
            '--outer\r\nContent-Type: multipart/alternative; boundary="alt"\r\n\r\n'
            "--alt\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nplain version\r\n"
            '--alt\r\nContent-Type: multipart/related; boundary="rel"\r\n\r\n'
            '--rel\r\nContent-Type: text/html\r\n\r\n<p>html <img src="cid:logo@x"></p>\r\n'
            "--rel\r\nContent-Type: image/png\r\nContent-ID: <logo@x>\r\n\r\nPNG\r\n--rel--\r\n"
            "--alt--\r\n"
            '--outer\r\nContent-Type: text/plain; name="notes.txt"\r\n'
            "Content-Disposition: attachment\r\n\r\nnotes\r\n--outer--\r\n"
        ),
    )
    msg = parse_message(raw)
    assert msg.body_text == "plain version"
    assert msg.body_html and "cid:logo@x" in msg.body_html
    assert [(a.filename, a.content_id, a.inline) for a in msg.attachments] == [
        ("attachment-1.png", "logo@x", True),
        ("notes.txt", None, False),
    ]


def nested(depth: int) -> bytes:
    body = "".join(f'--b{i}\r\nContent-Type: multipart/mixed; boundary="b{i + 1}"\r\n\r\n' for i in range(depth))
    body += f"--b{depth}\r\nContent-Type: text/plain\r\n\r\ndeep\r\n"
    return mail("From: a@example.org", "Subject: deep", 'Content-Type: multipart/mixed; boundary="b0"', body=body)


def test_deep_nesting_is_cut_off():
    msg = parse_message(nested(60))
    assert msg.error is None
    assert any("nested deeper" in d for d in msg.defects)


def test_absurd_nesting_is_read_as_plain_text_quickly():
    started = time.perf_counter()
    msg = parse_message(nested(2000))
    assert time.perf_counter() - started < 2
    assert msg.error is None and msg.subject == "deep"
    assert msg.body_text.startswith("--b0")
    assert any("boundaries" in d for d in msg.defects)


def test_html_only_keeps_links_and_drops_scripts():
    html = (
        "<html><head><style>p { color: red }</style><script>alert(1)</script></head><body>"
        '<p>Reset your password <a href="https://example.org/reset?a=1&amp;b=2">here</a>.</p>'
        "<ul><li>one</li><li>two</li></ul><p>C:\\temp\\file.txt</p><p>1. first</p></body></html>"
    )
    msg = parse_message(mail("From: a@example.org", "Subject: html", "Content-Type: text/html; charset=utf-8", body=html))
    assert "[here](https://example.org/reset?a=1&b=2)" in msg.body_text
    assert "alert" not in msg.body_text and "color" not in msg.body_text
    assert "C:\\temp\\file.txt" in msg.body_text
    assert "1. first" in msg.body_text
    assert msg.body_html == html


def test_html_to_text_survives_broken_markup():
    assert "text" in html_to_text("<p>text<div><<<>>><a href='x'")


def test_dsn_for_a_message_we_sent():
    raw = mail(
        "From: Mail Delivery System <MAILER-DAEMON@mx.example.org>",
        "To: support@desk.test",
        "Subject: Undelivered Mail Returned to Sender",
        "Auto-Submitted: auto-replied",
        'Content-Type: multipart/report; report-type=delivery-status; boundary="r"',
        body=(
            "--r\r\nContent-Type: text/plain\r\n\r\nI'm sorry to have to inform you...\r\n"
            "--r\r\nContent-Type: message/delivery-status\r\n\r\n"
            "Reporting-MTA: dns; mx.example.org\r\n\r\n"
            "Final-Recipient: rfc822; Customer@Example.COM\r\nOriginal-Recipient: rfc822;customer@example.com\r\n"
            "Action: failed\r\nStatus: 5.1.1\r\n"
            "Diagnostic-Code: smtp; 550 5.1.1 <customer@example.com>:\r\n    user unknown\r\n\r\n"
            "--r\r\nContent-Type: text/rfc822-headers\r\n\r\n"
            "From: support@desk.test\r\nTo: customer@example.com\r\nMessage-ID: <reply-42.abc@desk.test>\r\n"
            "Subject: Re: [Support #42] help\r\n--r--\r\n"
        ),
    )
    msg = parse_message(raw)
    assert msg.error is None
    assert msg.report_type == "delivery-status"
    assert msg.dsn == DeliveryReport(
        original_message_id="reply-42.abc@desk.test",
        recipients=["customer@example.com"],
        action="failed",
        status="5.1.1",
        diagnostic="smtp; 550 5.1.1 <customer@example.com>: user unknown",
    )
    assert msg.body_text == "I'm sorry to have to inform you..."


def test_dsn_with_attached_original_message():
    raw = mail(
        "From: postmaster@mx.example.org",
        "Subject: failure",
        'Content-Type: multipart/report; report-type="delivery-status"; boundary="r"',
        body=(
            "--r\r\nContent-Type: text/plain\r\n\r\nbounced\r\n"
            "--r\r\nContent-Type: message/delivery-status\r\n\r\n"
            "Reporting-MTA: dns; mx\r\n\r\nFinal-Recipient: rfc822; a@example.org\r\nAction: delayed\r\nStatus: 4.4.1\r\n\r\n"
            "Final-Recipient: rfc822; b@example.org\r\nAction: failed\r\nStatus: 5.2.2\r\n\r\n"
            "--r\r\nContent-Type: message/rfc822\r\n\r\n"
            "Message-ID: <orig@desk.test>\r\nSubject: hello\r\n\r\nbody\r\n--r--\r\n"
        ),
    )
    dsn = parse_message(raw).dsn
    assert dsn is not None
    assert (dsn.original_message_id, dsn.recipients, dsn.action, dsn.status) == (
        "orig@desk.test",
        ["a@example.org", "b@example.org"],
        "failed",
        "5.2.2",
    )


def test_auto_reply_headers_are_collected():
    msg = parse_message(
        mail(
            "From: bob@example.org",
            "Subject: Out of office",
            "Auto-Submitted: auto-replied (vacation)",
            "Precedence: bulk",
            "X-Auto-Response-Suppress: All",
            "Return-Path: <>",
            "List-Id: <list.example.org>",
        )
    )
    assert msg.headers == {
        "auto-submitted": "auto-replied (vacation)",
        "precedence": "bulk",
        "x-auto-response-suppress": "All",
        "return-path": "<>",
        "list-id": "<list.example.org>",
    }


@pytest.mark.parametrize(
    ("raw", "error"),
    [
        (b"", "empty message"),
        (b"  \r\n\r\n", "empty message"),
        (b"just some words\nand more\n", "no header section"),
        (b"X-Thing: 1\n\nbody\n", "no recognisable mail headers"),
        (b"From: a@example.org\n\n", "no subject, text or attachments"),
        (b"Content-Type: text/plain\n\n\x00\x01\x02\x03\xff\xfe\x00\x00GIF\x00\x00", "binary data"),
    ],
)
def test_quarantine_reasons(raw, error):
    result = parse_message(raw)
    assert result.error is not None and result.error.startswith(error)


def test_non_bytes_input_does_not_raise():
    assert parse_message(None).error  # type: ignore[arg-type]
    assert parse_message("From: a@example.org\nSubject: str input\n\nhi").subject == "str input"  # type: ignore[arg-type]


def test_message_id_and_references_are_cleaned():
    msg = parse_message(
        mail(
            "From: a@example.org",
            "Subject: s",
            "Message-ID: no-brackets@example.org",
            "In-Reply-To: Your message of Monday <one@x>",
            "References: <one@x> <two\r\n @x> <one@x> garbage <>",
        )
    )
    assert msg.message_id == "no-brackets@example.org"
    assert msg.in_reply_to == ["one@x"]
    assert msg.references == ["one@x", "two@x"]


def test_result_types():
    msg = parse_message(mail("From: a@example.org", "Subject: s"))
    assert all(isinstance(a, ParsedAttachment) for a in msg.attachments)
    with pytest.raises(AttributeError):
        msg.subject = "changed"  # type: ignore[misc]


# -- property tests -------------------------------------------------------------------------

FRAGMENTS = [
    b"From: a@example.org\r\n",
    b"From: alice@example.org)<bob@example.org>\r\n",
    b"Subject: =?utf-8?q?a=0D=0Ab?=\r\n",
    b"Subject: =?x-unknown?b?////?=\r\n",
    b"Date: 99 Foo 99999 99:99:99 +9999\r\n",
    b"Content-Type: multipart/mixed; boundary=b\r\n",
    b"Content-Type: multipart/alternative\r\n",
    b"Content-Type: multipart/report; report-type=delivery-status; boundary=b\r\n",
    b"Content-Type: message/delivery-status\r\n",
    b"Content-Type: message/rfc822\r\n",
    b"Content-Type: text/html; charset=utf-7\r\n",
    b"Content-Type: text/plain; charset=\"\xff\"\r\n",
    b"Content-Transfer-Encoding: base64\r\n",
    b"Content-Transfer-Encoding: quoted-printable\r\n",
    b"Content-Disposition: attachment; filename*=utf-8''%FF%00.txt\r\n",
    b"Message-ID: <\x1b]0;x\x07@y>\r\n",
    b"References: <a@b> <c@d\r\n",
    b"\r\n",
    b"--b\r\n",
    b"--b--\r\n",
    b"Final-Recipient: rfc822; x@y\r\n",
    b"<p><a href='x'>y</a>\r\n",
    b"=C3=A9=\r\n",
    b"PGh0bWw+Cg==\r\n",
    b"\xc3\xa9\xff\xfe\x00\x1b[2J\r\n",
]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=2000))
def test_arbitrary_bytes_never_raise(raw):
    msg = parse_message(raw)
    assert_usable_or_quarantined(msg)
    assert_clean(msg)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.sampled_from(FRAGMENTS) | st.binary(max_size=30), max_size=40))
def test_mail_shaped_bytes_never_raise(fragments):
    msg = parse_message(b"".join(fragments))
    assert_usable_or_quarantined(msg)
    assert_clean(msg)


# -- quoted history ---------------------------------------------------------------------------


def test_quote_split_on_wrote_line():
    body = "Thanks, that worked.\n\nOn Mon, 1 Jan 2024 at 10:00, Support <s@desk.test> wrote:\n> Try turning it off\n> and on again."
    assert quote_split(body) == (
        "Thanks, that worked.",
        "On Mon, 1 Jan 2024 at 10:00, Support <s@desk.test> wrote:\n> Try turning it off\n> and on again.",
    )


def test_quote_split_on_wrapped_gmail_attribution():
    body = "Yes.\n\nOn Mon, Jan 1, 2024 at 10:00 AM Support Team <\nsupport@desk.test> wrote:\n\n> Is it fixed?"
    new, rest = quote_split(body)
    assert new == "Yes."
    assert rest.startswith("On Mon") and rest.endswith("> Is it fixed?")


@pytest.mark.parametrize(
    "attribution",
    [
        "Am 01.01.2024 um 10:00 schrieb Support <s@desk.test>:",
        "Le 1 janv. 2024 à 10:00, Support <s@desk.test> a écrit :",
        "El lun, 1 ene 2024 a las 10:00, Support (<s@desk.test>) escribió:",
    ],
)
def test_quote_split_in_other_languages(attribution):
    new, rest = quote_split(f"Danke!\n\n{attribution}\n> alt")
    assert (new, rest) == ("Danke!", f"{attribution}\n> alt")


def test_quote_split_on_outlook_separators():
    assert quote_split("New text\n-----Original Message-----\nFrom: x\nold")[0] == "New text"
    assert quote_split("Neu\n\n-----Ursprüngliche Nachricht-----\nVon: x")[0] == "Neu"
    body = "New\n\n________________________________\nFrom: Support <s@desk.test>\nSent: Monday\nold"
    assert quote_split(body) == ("New", "________________________________\nFrom: Support <s@desk.test>\nSent: Monday\nold")


def test_quote_split_on_signature():
    assert quote_split("Hi\n\n-- \nAlice\nACME Corp") == ("Hi", "-- \nAlice\nACME Corp")
    assert quote_split("Hi\n--\nAlice") == ("Hi", "--\nAlice")


def test_quote_split_folds_trailing_quote_block_only():
    assert quote_split("Agreed.\n\n> old line\n> another\n") == ("Agreed.", "> old line\n> another")
    inline = "> Question one?\nAnswer one.\n> Question two?\nAnswer two."
    assert quote_split(inline) == (inline, "")


def test_quote_split_keeps_everything_when_nothing_new():
    assert quote_split("> only quoted") == ("> only quoted", "")
    assert quote_split("-----Original Message-----\nforwarded") == ("-----Original Message-----\nforwarded", "")
    assert quote_split("") == ("", "")


def test_quote_split_ignores_prose_that_looks_like_attribution():
    body = "On Monday I wrote:\nthe report is late.\nRegards"
    assert quote_split(body) == (body, "")
