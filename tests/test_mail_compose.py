"""Outbound message building: what we put on the wire must parse back to exactly what we meant."""

from __future__ import annotations

import email
import email.policy
import re
from datetime import datetime, timedelta, timezone

from email.header import decode_header, make_header

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from supportdesk.mail import compose
from supportdesk.mail.compose import (
    BadAddressError,
    HeaderInjectionError,
    OutgoingMail,
    build_message,
    envelope_recipients,
    make_message_id,
    reply_subject,
    trim_references,
    validate_address,
)

WHEN = datetime(2024, 5, 1, 12, 30, 15, tzinfo=timezone.utc)


def mail(**overrides) -> OutgoingMail:
    fields = dict(
        from_addr="support@example.org",
        from_name="Example Support",
        to=["alice@example.com"],
        subject="Re: Printer on fire [Support #5]",
        body_text="Hello Alice,\n\nwe are on it.\n",
        message_id="0123abcd@example.org",
        date=WHEN,
    )
    fields.update(overrides)
    return OutgoingMail(**fields)


def parse(raw: bytes) -> email.message.EmailMessage:
    return email.message_from_bytes(raw, policy=email.policy.default)


def body_of(msg) -> str:
    return msg.get_body(preferencelist=("plain",)).get_content().replace("\r\n", "\n")


def from_display_name(raw: bytes) -> str:
    """The From display name decoded by the RFC 2047 rules.

    The stdlib's address parser puts a space between adjacent encoded words in a
    display name, which RFC 2047 §6.2 says to drop, so it cannot judge a long name.
    """
    header_block = raw.split(b"\r\n\r\n", 1)[0].decode("ascii")
    value = re.search(r"^From: (.*?)\r\n(?![ \t])", header_block, re.M | re.S).group(1).replace("\r\n", "")
    head, _, _addr = value.rpartition(" <")
    if head.startswith('"'):
        return re.sub(r"\\(.)", r"\1", head[1:-1])
    return str(make_header(decode_header(head)))


def expected_body(text: str) -> str:
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    return text if text.endswith("\n") else text + "\n"


# --- round trip -------------------------------------------------------------------------------


def test_every_header_round_trips():
    raw = build_message(mail(
        cc=["carol@example.com"], reply_to="support@example.org", in_reply_to="orig-1@mail.example.com",
        references=["root@mail.example.com", "orig-1@mail.example.com"], extra_headers={"X-Ticket-ID": "5"},
    ))
    msg = parse(raw)
    assert msg["From"].addresses[0].display_name == "Example Support"
    assert msg["From"].addresses[0].addr_spec == "support@example.org"
    assert [a.addr_spec for a in msg["To"].addresses] == ["alice@example.com"]
    assert [a.addr_spec for a in msg["Cc"].addresses] == ["carol@example.com"]
    assert msg["Reply-To"].addresses[0].addr_spec == "support@example.org"
    assert msg["Subject"] == "Re: Printer on fire [Support #5]"
    assert msg["Date"].datetime == WHEN
    assert msg["Message-ID"] == "<0123abcd@example.org>"
    assert msg["In-Reply-To"] == "<orig-1@mail.example.com>"
    assert msg["References"] == "<root@mail.example.com> <orig-1@mail.example.com>"
    assert msg["MIME-Version"] == "1.0"
    assert msg["X-Ticket-ID"] == "5"
    assert msg.get_content_type() == "text/plain"
    assert msg.get_content_charset() == "utf-8"
    assert body_of(msg) == "Hello Alice,\n\nwe are on it.\n"
    assert not msg.defects


def test_optional_headers_are_absent_when_unset():
    msg = parse(build_message(mail(from_name="")))
    for name in ("Cc", "Reply-To", "In-Reply-To", "References", "Auto-Submitted", "Bcc"):
        assert name not in msg
    assert str(msg["From"]) == "support@example.org"


def test_unicode_subject_name_and_body_round_trip():
    subject = "Re: Größenänderung  —  日本語の件名 with a rather long tail that needs folding [Support #5]"
    raw = build_message(mail(
        from_name="Zoë Ørsted via Ünïcode Support, Inc. \"Ops\"",
        subject=subject,
        body_text="Grüße aus Köln 🎉\nЗдравствуйте\n\tindented line\n",
    ))
    msg = parse(raw)
    assert from_display_name(raw) == "Zoë Ørsted via Ünïcode Support, Inc. \"Ops\""
    assert msg["From"].addresses[0].addr_spec == "support@example.org"
    assert msg["Subject"] == subject
    assert body_of(msg) == "Grüße aus Köln 🎉\nЗдравствуйте\n\tindented line\n"


def test_wire_form_is_crlf_seven_bit_and_short_lined():
    raw = build_message(mail(
        from_name="Zoë", subject="Ünïcode " * 40, body_text=("ü" * 3000) + "\n" + ("x" * 5000),
        references=[f"{'r' * 80}{i}@example.net" for i in range(15)],
        attachments=[("a.bin", "application/octet-stream", bytes(range(256)) * 20)],
    ))
    assert raw.isascii()
    assert b"\n" not in raw.replace(b"\r\n", b"")
    assert b"\r" not in raw.replace(b"\r\n", b"")
    assert raw.endswith(b"\r\n")
    assert max(len(line) for line in raw.split(b"\r\n")) <= 998
    header_block = raw.split(b"\r\n\r\n", 1)[0]
    assert b"=?utf-8?" not in b"".join(l for l in header_block.split(b"\r\n") if l.startswith((b"References", b" <")))


@pytest.mark.parametrize("body", [
    "x" * 1200,
    "word " * 400 + "\nend",
    "ü" * 1200,
    "a line ending in spaces   \nand a dot\n.\nFrom the start of a line\n",
])
def test_long_and_awkward_body_lines_are_encoded_safely(body):
    raw = build_message(mail(body_text=body))
    body_bytes = raw.split(b"\r\n\r\n", 1)[1]
    assert max(len(line) for line in body_bytes.split(b"\r\n")) <= 78
    assert body_of(parse(raw)) == expected_body(body)


def test_body_transfer_encoding_is_chosen_for_the_content():
    def cte(body: str) -> str:
        return parse(build_message(mail(body_text=body)))["Content-Transfer-Encoding"]

    assert cte("short ascii\n") == "7bit"
    assert cte("a" * 100) == "quoted-printable"
    assert cte("Grüße, the rest is plain English text\n") == "quoted-printable"
    assert cte("Здравствуйте, спасибо за ваше письмо\n") == "base64"


def test_body_line_endings_are_normalised():
    msg = parse(build_message(mail(body_text="one\r\ntwo\rthree\nfour")))
    assert body_of(msg) == "one\ntwo\nthree\nfour\n"


def test_attachments_make_multipart_mixed():
    pdf = b"%PDF-1.7\x00\xff\xfe binary"
    raw = build_message(mail(
        body_text="See attached.",
        attachments=[("résumé.pdf", "application/pdf", pdf), ("notes.txt", "text/plain", "Grüße\n".encode())],
    ))
    msg = parse(raw)
    assert msg.get_content_type() == "multipart/mixed"
    assert msg["MIME-Version"] == "1.0"
    assert body_of(msg) == "See attached.\n"
    parts = list(msg.iter_attachments())
    assert [p.get_filename() for p in parts] == ["résumé.pdf", "notes.txt"]
    assert [p.get_content_type() for p in parts] == ["application/pdf", "text/plain"]
    assert parts[0].get_payload(decode=True) == pdf
    assert parts[1].get_payload(decode=True) == "Grüße\n".encode()
    assert all(p["Content-Transfer-Encoding"] == "base64" for p in parts)
    assert all("MIME-Version" not in p for p in msg.walk() if p is not msg)


@pytest.mark.parametrize("content_type", ["multipart/mixed", "message/rfc822", "text", "text/plain; x=1", ""])
def test_attachment_content_types_that_cannot_be_sent_as_bytes_are_refused(content_type):
    with pytest.raises(ValueError, match="content type"):
        build_message(mail(attachments=[("a", content_type, b"x")]))


def test_date_defaults_to_now_and_must_be_aware():
    before = datetime.now(timezone.utc).replace(microsecond=0)
    sent = parse(build_message(mail(date=None)))["Date"].datetime
    assert before <= sent <= datetime.now(timezone.utc)
    with pytest.raises(ValueError, match="timezone-aware"):
        build_message(mail(date=datetime(2024, 5, 1, 12, 0)))
    offset = timezone(timedelta(hours=2))
    assert parse(build_message(mail(date=WHEN.astimezone(offset))))["Date"].datetime == WHEN


def test_recipients_are_lower_cased_and_deduplicated_in_headers_and_envelope():
    m = mail(to=["Alice@Example.com", "bob@example.com", "alice@example.com"],
             cc=["BOB@example.com", "carol@example.com", "Carol@example.com"])
    msg = parse(build_message(m))
    assert [a.addr_spec for a in msg["To"].addresses] == ["alice@example.com", "bob@example.com"]
    assert [a.addr_spec for a in msg["Cc"].addresses] == ["carol@example.com"]
    assert envelope_recipients(m) == ["alice@example.com", "bob@example.com", "carol@example.com"]


def test_envelope_recipients_validates():
    with pytest.raises(BadAddressError):
        envelope_recipients(mail(cc=["Mallory <m@example.com>"]))


def test_message_without_to_is_refused():
    with pytest.raises(BadAddressError, match="To"):
        build_message(mail(to=[]))


# --- automatic mail ---------------------------------------------------------------------------


def test_auto_submitted_only_on_automatic_mail():
    auto = parse(build_message(mail(auto=True)))
    assert auto["Auto-Submitted"] == "auto-replied"
    assert auto["X-Auto-Response-Suppress"] == "All"
    assert "Precedence" not in auto
    manual = parse(build_message(mail(auto=False)))
    assert "Auto-Submitted" not in manual
    assert "X-Auto-Response-Suppress" not in manual


# --- header injection -------------------------------------------------------------------------

INJECTIONS = ["\r\nBcc: victim@example.net", "\nBcc: victim@example.net", "\rX: y", "a\r\n\r\nbody", "\x85", "\u2028",
              "\x0b", "\x0c", "\x00", "\x1b[31m"]


def _inject(field_name: str, bad: str) -> OutgoingMail:
    values = {
        "from_name": dict(from_name="Support" + bad),
        "subject": dict(subject="Hello" + bad),
        "message_id": dict(message_id="abc@example.org" + bad),
        "in_reply_to": dict(in_reply_to="x@example.com" + bad),
        "references": dict(references=["ok@example.com", "x@example.com" + bad]),
        "extra_value": dict(extra_headers={"X-Ticket": "5" + bad}),
        "extra_name": dict(extra_headers={"X-Ticket" + bad: "5"}),
        "filename": dict(attachments=[("a.txt" + bad, "text/plain", b"x")]),
        "content_type": dict(attachments=[("a.txt", "text/plain" + bad, b"x")]),
        "from_addr": dict(from_addr="support@example.org" + bad),
        "to": dict(to=["alice@example.com" + bad]),
        "cc": dict(cc=["carol@example.com" + bad]),
        "reply_to": dict(reply_to="support@example.org" + bad),
    }[field_name]
    return mail(**values)


FIELDS = ["from_name", "subject", "message_id", "in_reply_to", "references", "extra_value", "extra_name",
          "filename", "content_type", "from_addr", "to", "cc", "reply_to"]


@pytest.mark.parametrize("bad", INJECTIONS)
@pytest.mark.parametrize("field_name", FIELDS)
def test_line_breaks_and_controls_in_any_header_input_are_refused(field_name, bad):
    with pytest.raises(HeaderInjectionError, match="header"):
        build_message(_inject(field_name, bad))


def test_injection_is_refused_before_anything_is_built(monkeypatch):
    def no_building(*args, **kwargs):
        raise AssertionError("message construction started")

    monkeypatch.setattr(compose, "EmailMessage", no_building)
    with pytest.raises(HeaderInjectionError, match="Subject"):
        build_message(mail(subject="Hi\r\nBcc: victim@example.net"))
    with pytest.raises(HeaderInjectionError, match="References"):
        build_message(mail(references=["a@b.example", "c@d.example\n"]))


def test_injection_error_names_header_and_problem():
    with pytest.raises(HeaderInjectionError) as info:
        build_message(mail(from_name="Support\nBcc: x@example.net"))
    assert "From (display name)" in str(info.value) and "line break" in str(info.value)


@pytest.mark.parametrize("name", ["From", "to", "BCC", "Message-ID", "Content-Type", "Auto-Submitted", "Subject"])
def test_extra_headers_cannot_override_built_headers(name):
    with pytest.raises(HeaderInjectionError, match="override"):
        build_message(mail(extra_headers={name: "x"}))


@pytest.mark.parametrize("name", ["X Ticket", "X-Ticket:", "", "X-Tïcket"])
def test_extra_header_names_must_be_field_names(name):
    with pytest.raises(HeaderInjectionError, match="field name"):
        build_message(mail(extra_headers={name: "x"}))


def test_extra_header_values_keep_long_ascii_tokens_unencoded():
    url = "<https://support.example.org/unsubscribe/" + "a" * 120 + ">"
    raw = build_message(mail(extra_headers={"List-Unsubscribe": url}))
    assert b"=?utf-8?" not in raw
    assert parse(raw)["List-Unsubscribe"] == url


def test_words_too_long_for_a_line_are_encoded_instead_of_refused():
    subject, name = "x" * 2500, "n" * 1500
    raw = build_message(mail(subject=subject, from_name=name))
    assert max(len(line) for line in raw.split(b"\r\n")) <= 998
    assert parse(raw)["Subject"] == subject
    assert from_display_name(raw) == name


def test_literal_encoded_word_text_in_subject_survives():
    subject = "Why does my mail say =?utf-8?q?hello?= here"
    assert parse(build_message(mail(subject=subject)))["Subject"] == subject


def test_lone_surrogate_in_body_is_refused():
    with pytest.raises(ValueError, match="surrogate"):
        build_message(mail(body_text="bad \udcff byte"))


# --- addresses --------------------------------------------------------------------------------


@pytest.mark.parametrize("given_addr, expected", [
    ("alice@example.org", "alice@example.org"),
    ("Alice.Smith+tickets@Mail.Example.ORG", "alice.smith+tickets@mail.example.org"),
    ("  bob@example.co.uk ", "bob@example.co.uk"),
    ("o'brien@example.ie", "o'brien@example.ie"),
    ("x@xn--bcher-kva.example", "x@xn--bcher-kva.example"),
    ("user@sub-domain.example-1.com", "user@sub-domain.example-1.com"),
])
def test_valid_addresses_are_returned_bare_and_lower_cased(given_addr, expected):
    assert validate_address(given_addr) == expected


@pytest.mark.parametrize("bad", [
    "alice@example.org)<bob@example.org>",  # CVE-2023-27043
    "alice@example.org) <bob@example.org>",
    "\"bob@evil.example\" <alice@example.org>",
    "Alice <alice@example.org>",
    "<alice@example.org>",
    "alice@example.org, bob@example.org",
    "alice@example.org bob@example.org",
    "alice@example.org;bob@example.org",
    "alice(comment)@example.org",
    "\"quoted local\"@example.org",
    "alice@example.org\r\nBcc: victim@example.net",
    "alice@example.org\n",
    "alice@example.org\r",
    "ali\x00ce@example.org",
    "alice",
    "alice@",
    "@example.org",
    "alice@example",
    "alice@localhost",
    "alice@example.org.",
    "alice@.example.org",
    "alice@-example.org",
    "alice@example-.org",
    "alice@exa_mple.org",
    "alice@example..org",
    "alice@example.123",
    "alice@[192.0.2.1]",
    "a@b@example.org",
    ".alice@example.org",
    "alice.@example.org",
    "al..ice@example.org",
    "älice@example.org",
    "alice@exämple.org",
    "a" * 65 + "@example.org",
    "a@" + ("b" * 63 + ".") * 4 + "org",
    "",
    "   ",
])
def test_bad_addresses_are_refused(bad):
    with pytest.raises(BadAddressError) as info:
        validate_address(bad)
    assert str(info.value)


def test_bad_address_error_names_the_address():
    with pytest.raises(BadAddressError, match=re.escape("alice@example.org)<bob@example.org>")):
        validate_address("alice@example.org)<bob@example.org>")


@pytest.mark.parametrize("field_name", ["from_addr", "to", "cc", "reply_to"])
def test_every_address_in_a_message_is_validated(field_name):
    bad = "alice@example.org)<bob@example.org>"
    values = {"from_addr": bad, "to": [bad], "cc": [bad], "reply_to": bad}[field_name]
    with pytest.raises(BadAddressError):
        build_message(mail(**{field_name: values}))


# --- message ids and references ---------------------------------------------------------------


def test_message_ids_are_bare_unique_and_unguessable():
    ids = [make_message_id("Example.ORG") for _ in range(10_000)]
    assert len(set(ids)) == len(ids)
    for msg_id in ids[:100]:
        assert re.fullmatch(r"[0-9a-f]{32}@example\.org", msg_id)


@pytest.mark.parametrize("domain", ["", "example", "exa mple.org", "example.org>", "a@example.org", "example.org\n"])
def test_message_id_domain_must_be_a_domain(domain):
    with pytest.raises(ValueError, match="domain"):
        make_message_id(domain)


def test_message_id_is_written_with_brackets_and_brackets_are_tolerated():
    assert parse(build_message(mail(message_id="<abc@example.org>")))["Message-ID"] == "<abc@example.org>"
    with pytest.raises(ValueError, match="message id"):
        build_message(mail(message_id="not an id"))


@pytest.mark.parametrize("n", [0, 1, 9, 10])
def test_short_reference_lists_are_kept(n):
    refs = [f"m{i}@example.com" for i in range(n)]
    assert trim_references(refs) == refs


@pytest.mark.parametrize("n", [11, 12, 50])
def test_long_reference_lists_keep_first_four_and_last_six(n):
    refs = [f"m{i}@example.com" for i in range(n)]
    assert trim_references(refs) == refs[:4] + refs[-6:]


def test_references_header_is_trimmed_and_ends_with_the_parent():
    thread = [f"m{i}@example.com" for i in range(20)]
    msg = parse(build_message(mail(in_reply_to="m12@example.com", references=thread)))
    ids = re.findall(r"<([^>]+)>", msg["References"])
    expected = [i for i in thread if i != "m12@example.com"] + ["m12@example.com"]
    assert ids == expected[:4] + expected[-6:]
    assert msg["In-Reply-To"] == "<m12@example.com>"


def test_references_drop_duplicates_our_own_id_and_unwritable_ids():
    msg = parse(build_message(mail(
        message_id="own@example.org", in_reply_to="<p@example.com>",
        references=["<a@example.com>", "a@example.com", "own@example.org", "has space@x", "ü@example.com", "",
                    "p@example.com"],
    )))
    assert msg["References"] == "<a@example.com> <p@example.com>"


def test_in_reply_to_alone_becomes_the_references():
    msg = parse(build_message(mail(in_reply_to="p@example.com")))
    assert msg["References"] == "<p@example.com>"


def test_unwritable_in_reply_to_is_dropped_not_fatal():
    msg = parse(build_message(mail(in_reply_to="weird id with spaces")))
    assert "In-Reply-To" not in msg


# --- subjects ---------------------------------------------------------------------------------


@pytest.mark.parametrize("subject", [
    "x",
    "Re: x",
    "Re: Re: [Support #5] x",
    "RE: AW: Fwd: x [Support #5]",
    "Re: [Support #5] Re: x",
    "Re: x [support # 5]",
    "[Support #5] Re: [Support #5] x",
    "Aw: Re[2]: SV: x",
])
def test_reply_subject_tags_once(subject):
    assert reply_subject(subject, "Support", 5) == "Re: x [Support #5]"


def test_reply_subject_retags_with_the_current_ticket():
    assert reply_subject("Re: x [Support #4]", "Support", 5) == "Re: x [Support #5]"


def test_reply_subject_of_empty_subject():
    assert reply_subject("", "Support", 7) == "Re: (no subject) [Support #7]"
    assert reply_subject("Re: [Support #7]", "Support", 7) == "Re: (no subject) [Support #7]"


def test_reply_subject_refuses_bad_input():
    with pytest.raises(HeaderInjectionError):
        reply_subject("x", "Support\r\nBcc: y@example.net", 5)
    with pytest.raises(ValueError):
        reply_subject("x", "Support", 0)


def test_reply_subject_cleans_control_characters_from_the_ticket_subject():
    assert reply_subject("Printer\r\nBcc: x@example.net", "Support", 5) == "Re: Printer Bcc: x@example.net [Support #5]"


# --- properties -------------------------------------------------------------------------------

printable_line = st.text(st.characters(exclude_categories=("Cc", "Cs", "Zl", "Zp")), max_size=200)
any_body = st.text(st.characters(exclude_categories=("Cs",)), max_size=400)
line_break = st.sampled_from(["\r", "\n", "\r\n"])


@settings(max_examples=150, deadline=None)
@given(subject=printable_line, name=printable_line)
def test_any_printable_subject_and_name_round_trip(subject, name):
    raw = build_message(mail(subject=subject, from_name=name))
    msg = parse(raw)
    assert msg["Subject"] == subject.strip()
    assert from_display_name(raw) == name.strip()
    if name.isascii() and "=?" not in name:
        assert msg["From"].addresses[0].display_name == name.strip()
    assert msg["From"].addresses[0].addr_spec == "support@example.org"


@settings(max_examples=150, deadline=None)
@given(body=any_body)
def test_any_body_round_trips(body):
    raw = build_message(mail(body_text=body))
    assert raw.isascii()
    assert max(len(line) for line in raw.split(b"\r\n")) <= 998
    assert body_of(parse(raw)) == expected_body(body)


@settings(max_examples=150, deadline=None)
@given(field_name=st.sampled_from(FIELDS), before=printable_line, brk=line_break, after=printable_line)
def test_any_value_with_cr_or_lf_is_refused(field_name, before, brk, after):
    with pytest.raises(HeaderInjectionError):
        build_message(_inject(field_name, before + brk + after))
