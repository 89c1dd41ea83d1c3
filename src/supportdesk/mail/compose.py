"""Outbound mail: turning a reply into RFC 5322 bytes ready for SMTP.  (pure)

Everything that reaches a header is checked before anything is built: a CR or
LF in a header value is how one mail becomes two (or grows a Bcc), so it is
refused outright rather than cleaned.  Addresses go through a strict pattern,
because ``email.utils.parseaddr`` accepts shapes that mean one address to us and
another to the MTA (CVE-2023-27043).

Decisions:

* Message ids are handled in store form (no angle brackets); surrounding
  brackets on input are tolerated.  Our own ``message_id`` must be a proper
  ``dot-atom@dot-atom``.  Ids from other mailers (``in_reply_to``,
  ``references``) that cannot be written into a header (spaces, brackets,
  non-ASCII, longer than 900 characters) are dropped rather than failing the
  reply: a customer's odd mailer must not make a ticket unanswerable.  A CR/LF
  in any of them still raises.
* ``References`` follows RT: the thread, duplicates removed, with the parent
  (``in_reply_to``) moved to the end as RFC 5322 §3.6.4 expects, then trimmed to
  the first 4 and last 6 ids past 10.
* Message-ID, In-Reply-To and References are folded only at spaces and never
  RFC 2047-encoded (the stdlib encodes long ids, which breaks threading).
  Subject, the From display name (quoted) and extra headers are written as-is
  when plain ASCII, otherwise as encoded words covering the whole value, so
  whitespace survives exactly.
* Automatic mail carries ``Auto-Submitted: auto-replied`` (RFC 3834) and
  ``X-Auto-Response-Suppress: All`` (stops Exchange/Outlook out-of-office replies,
  the usual loop partner).  No ``Precedence: bulk``: RFC 3834 does not ask for it
  and large providers read it as bulk/marketing mail.
* Header values may contain no control characters at all (C0, DEL, C1, U+2028,
  U+2029): several of them count as line breaks for ``str.splitlines``, which
  the email package uses.  Surrounding whitespace in the subject and display
  name is dropped, since a header cannot carry it reliably.
* The body is UTF-8 text/plain, always 7-bit clean on the wire: 7bit when it is
  printable ASCII with lines of at most 78 characters, else quoted-printable,
  or base64 when that is shorter (mostly non-Latin text).  Line endings become
  CRLF and the body ends with a line break.
* Attachments are always base64; ``multipart/*`` and ``message/*`` types are
  refused (a message/rfc822 part cannot be base64, and inbound mail is never
  re-serialised here).
"""

from __future__ import annotations

import re
import secrets
import unicodedata
from dataclasses import dataclass, field
from datetime import datetime, timezone
from email.header import Header
from email.headerregistry import Address, HeaderRegistry, UniqueUnstructuredHeader
from email.message import EmailMessage, MIMEPart
from email.policy import SMTP
from email.utils import format_datetime
from typing import Iterable, Sequence

from supportdesk.mail.subjects import remove_ticket_tag, strip_reply_prefixes, tag_subject

__all__ = [
    "BadAddressError",
    "HeaderInjectionError",
    "OutgoingMail",
    "build_message",
    "envelope_recipients",
    "make_message_id",
    "reply_subject",
    "trim_references",
    "validate_address",
]


class HeaderInjectionError(ValueError):
    """A header name or value that could split or forge headers (CR, LF, other controls)."""


class BadAddressError(ValueError):
    """An email address we will not put in a header or an SMTP envelope."""


_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]"
_DOT_ATOM = rf"{_ATEXT}+(?:\.{_ATEXT}+)*"
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_TLD = r"(?:[A-Za-z]{2,63}|xn--[A-Za-z0-9-]{1,59})"
_DOMAIN = rf"(?:{_LABEL}\.)+{_TLD}"
_ADDRESS_RE = re.compile(rf"(?P<local>{_DOT_ATOM})@(?P<domain>{_DOMAIN})")
_DOMAIN_RE = re.compile(_DOMAIN)
_OWN_ID_RE = re.compile(rf"{_DOT_ATOM}@{_DOT_ATOM}")
_FOREIGN_ID_RE = re.compile(r"[\x21-\x3b\x3d\x3f-\x7e]{1,900}")
_FIELD_NAME_RE = re.compile(r"[\x21-\x39\x3b-\x7e]{1,76}")
_CONTENT_TYPE_RE = re.compile(r"([A-Za-z0-9!#$&^_.+-]{1,64})/([A-Za-z0-9!#$&^_.+-]{1,64})")
_LINE_BREAKS = frozenset("\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029")

REFERENCES_LIMIT = 10
REFERENCES_HEAD = 4
REFERENCES_TAIL = 6
_MAX_LINE = 998
_FOLD_AT = 78

# Headers build_message writes itself; extra_headers may not smuggle a second copy.
_RESERVED_HEADERS = frozenset({
    "from", "sender", "to", "cc", "bcc", "reply-to", "subject", "date", "message-id", "in-reply-to",
    "references", "mime-version", "content-type", "content-transfer-encoding", "content-disposition",
    "auto-submitted", "x-auto-response-suppress", "return-path", "received",
})


def _check_value(header: str, value: str) -> None:
    """Raise HeaderInjectionError for any character that could end or corrupt a header line."""
    for ch in value:
        if ch in _LINE_BREAKS:
            raise HeaderInjectionError(
                f"header {header} contains a line break (U+{ord(ch):04X}); refusing to build the message"
            )
        if unicodedata.category(ch) in ("Cc", "Cs"):
            kind = "a lone surrogate" if unicodedata.category(ch) == "Cs" else "a control character"
            raise HeaderInjectionError(f"header {header} contains {kind} (U+{ord(ch):04X})")


def validate_address(addr: str) -> str:
    """The bare address, lower-cased; BadAddressError for anything but exactly one plain address.

    Only ``local@domain`` with a dot-atom local part and a DNS domain is accepted:
    no display names, angle brackets, comments, quoted local parts, IP literals,
    lists or non-ASCII.  Anything looser is where parsers disagree.
    """
    if not isinstance(addr, str):
        raise BadAddressError(f"address {addr!r} is not a string")
    for ch in addr:
        if ch in _LINE_BREAKS or unicodedata.category(ch) in ("Cc", "Cs"):
            raise BadAddressError(f"address {addr!r} contains a control character or line break (U+{ord(ch):04X})")
    bare = addr.strip(" ")
    if not bare:
        raise BadAddressError("address is empty")
    if not bare.isascii():
        raise BadAddressError(f"address {addr!r} is not ASCII; internationalised addresses are not supported")
    if any(c in bare for c in "<>()\",;: "):
        raise BadAddressError(
            f"address {addr!r} is not a single bare address (display names, brackets, comments "
            "and lists are refused)"
        )
    if bare.count("@") != 1:
        raise BadAddressError(f"address {addr!r} must contain exactly one '@'")
    local, domain = bare.split("@")
    if not local:
        raise BadAddressError(f"address {addr!r} has no local part")
    if not domain:
        raise BadAddressError(f"address {addr!r} has no domain")
    match = _ADDRESS_RE.fullmatch(bare)
    if match is None:
        if not re.fullmatch(_DOT_ATOM, local):
            raise BadAddressError(f"address {addr!r} has an invalid local part {local!r}")
        raise BadAddressError(f"address {addr!r} has an invalid domain {domain!r}")
    if len(local) > 64:
        raise BadAddressError(f"address {addr!r}: local part is longer than 64 characters")
    if len(bare) > 254:
        raise BadAddressError(f"address {addr!r} is longer than 254 characters")
    return bare.lower()


def make_message_id(domain: str) -> str:
    """A fresh, unguessable Message-ID in store form (no angle brackets).

    128 random bits: ids are what inbound threading trusts first, so a guessable
    one would let a stranger's mail join a ticket.
    """
    if not isinstance(domain, str) or not _DOMAIN_RE.fullmatch(domain) or len(domain) > 253:
        raise ValueError(f"message id domain {domain!r} is not a valid domain name")
    return f"{secrets.token_hex(16)}@{domain.lower()}"


def _strip_brackets(msg_id: str) -> str:
    msg_id = msg_id.strip(" \t")
    if msg_id.startswith("<") and msg_id.endswith(">"):
        msg_id = msg_id[1:-1].strip(" \t")
    return msg_id


def trim_references(refs: Sequence[str]) -> list[str]:
    """RT's trimming: past 10 ids keep the first 4 (thread root) and the last 6 (recent parents)."""
    refs = list(refs)
    if len(refs) <= REFERENCES_LIMIT:
        return refs
    return refs[:REFERENCES_HEAD] + refs[-REFERENCES_TAIL:]


def reply_subject(ticket_subject: str, tag: str, ticket_id: int) -> str:
    """``Re: <subject> [<tag> #<id>]``: prefixes and our tag are stripped however they nest, then tagged once."""
    if isinstance(ticket_id, bool) or not isinstance(ticket_id, int) or ticket_id <= 0:
        raise ValueError(f"ticket id must be a positive integer, not {ticket_id!r}")
    _check_value("subject tag", tag)
    base = ticket_subject or ""
    while True:
        stripped = remove_ticket_tag(strip_reply_prefixes(base), tag)
        if stripped == base:
            break
        base = stripped
    return "Re: " + tag_subject(base, tag, ticket_id)


@dataclass
class OutgoingMail:
    """One outbound message, in store form (bare addresses, ids without brackets)."""

    from_addr: str
    to: list[str]
    subject: str
    body_text: str
    message_id: str
    from_name: str = ""
    cc: list[str] = field(default_factory=list)
    reply_to: str | None = None
    in_reply_to: str | None = None
    references: list[str] = field(default_factory=list)
    auto: bool = False
    date: datetime | None = None
    attachments: list[tuple[str, str, bytes]] = field(default_factory=list)
    extra_headers: dict[str, str] = field(default_factory=dict)


def _unique(addresses: Iterable[str], skip: Iterable[str] = ()) -> list[str]:
    seen = set(skip)
    out = []
    for addr in addresses:
        bare = validate_address(addr)
        if bare not in seen:
            seen.add(bare)
            out.append(bare)
    return out


def envelope_recipients(mail: OutgoingMail) -> list[str]:
    """RCPT TO list: To then Cc, validated, lower-cased, each address once."""
    return _unique([*mail.to, *mail.cc])


def _fold_words(name: str, value: str, linesep: str) -> str:
    """Fold an ASCII value at spaces only, so unfolding gives back exactly ``value``."""
    words = re.findall(r" *[^ ]+| +$", value)
    lines: list[str] = []
    line = f"{name}:"
    if words and not words[0].startswith(" "):
        words[0] = " " + words[0]
    for word in words:
        if len(line) + len(word) > _FOLD_AT and line.strip() and word.strip() and len(line) > len(name) + 1:
            lines.append(line)
            line = word
        else:
            line += word
    lines.append(line)
    for folded in lines:
        if len(folded) > _MAX_LINE:
            raise ValueError(f"header {name} has a word too long for a {_MAX_LINE}-character line")
    return linesep.join(lines) + linesep


def _plain_ascii(value: str) -> bool:
    """Whether free text can go out verbatim: ASCII, no encoded-word lookalike, every word fits a line."""
    return value.isascii() and "=?" not in value and all(len(word) <= 900 for word in value.split(" "))


class _IdListHeader(UniqueUnstructuredHeader):
    """Message-ID, In-Reply-To, References: written verbatim, folded at spaces, never encoded."""

    @classmethod
    def parse(cls, value, kwds):
        super().parse(value, kwds)
        kwds["decoded"] = value

    def fold(self, *, policy):
        return _fold_words(self.name, str(self), policy.linesep)


class _MailboxHeader(_IdListHeader):
    """From: a display name we format ourselves, written verbatim.

    The stdlib writes display names unquoted where it can, so runs of spaces
    collapse; and readers (the stdlib too) decode a literal ``=?…?=`` even inside
    quotes, so such names go out encoded.
    """


def _mailbox(header: str, name: str, addr: str) -> str:
    """``"Name" <addr>`` with the name quoted when ASCII, else as UTF-8 encoded words."""
    if not name:
        return addr
    if _plain_ascii(name):
        quoted = name.replace("\\", "\\\\").replace('"', '\\"')
        return f'"{quoted}" <{addr}>'
    encoded = Header(name, "utf-8", header_name=header).encode(linesep=" ", maxlinelen=_FOLD_AT)
    return f"{encoded} <{addr}>"


class _TextHeader(UniqueUnstructuredHeader):
    """Free text (Subject, extra headers) that round-trips exactly.

    Kept verbatim when plain ASCII; otherwise the whole value becomes UTF-8
    encoded words.  The stdlib would decode a literal ``=?…?=`` on the way in and
    mixes raw and encoded words in ways that lose whitespace.
    """

    @classmethod
    def parse(cls, value, kwds):
        super().parse(value, kwds)
        kwds["decoded"] = value

    def fold(self, *, policy):
        value = str(self)
        if _plain_ascii(value):
            return _fold_words(self.name, value, policy.linesep)
        encoded = Header(value, "utf-8", header_name=self.name).encode(linesep=policy.linesep, maxlinelen=_FOLD_AT)
        return f"{self.name}: {encoded}{policy.linesep}"


def _registry() -> HeaderRegistry:
    registry = HeaderRegistry(default_class=_TextHeader, use_default_map=True)
    for name in ("message-id", "in-reply-to", "references"):
        registry.map_to_type(name, _IdListHeader)
    registry.map_to_type("subject", _TextHeader)
    registry.map_to_type("from", _MailboxHeader)
    return registry


_POLICY = SMTP.clone(header_factory=_registry(), max_line_length=_FOLD_AT)


def _own_id(msg_id: str) -> str:
    bare = _strip_brackets(msg_id)
    if not _OWN_ID_RE.fullmatch(bare) or len(bare) > 900:
        raise ValueError(f"message id {msg_id!r} is not of the form local@domain")
    return bare


def _foreign_id(msg_id: str | None) -> str | None:
    if not msg_id:
        return None
    bare = _strip_brackets(msg_id)
    return bare if _FOREIGN_ID_RE.fullmatch(bare) else None


def _thread_ids(own: str, in_reply_to: str | None, references: Sequence[str]) -> list[str]:
    ids: list[str] = []
    for ref in references:
        bare = _foreign_id(ref)
        if bare and bare != own and bare != in_reply_to and bare not in ids:
            ids.append(bare)
    if in_reply_to and in_reply_to != own:
        ids.append(in_reply_to)
    return trim_references(ids)


def _check_inputs(mail: OutgoingMail) -> None:
    """Every string that can reach a header, checked before any building starts."""
    values: list[tuple[str, str | None]] = [
        ("From", mail.from_addr), ("From (display name)", mail.from_name), ("Reply-To", mail.reply_to),
        ("Subject", mail.subject), ("Message-ID", mail.message_id), ("In-Reply-To", mail.in_reply_to),
    ]
    values += [("To", a) for a in mail.to] + [("Cc", a) for a in mail.cc]
    values += [("References", r) for r in mail.references]
    for name, value in mail.extra_headers.items():
        values += [("extra header name", name), (name if isinstance(name, str) else "extra header", value)]
    for filename, content_type, _data in mail.attachments:
        values += [("attachment filename", filename), ("attachment content type", content_type)]
    for header, value in values:
        if value is None:
            continue
        if not isinstance(value, str):
            raise TypeError(f"header {header}: expected a string, got {type(value).__name__}")
        _check_value(header, value)


def _body_encoding(text: str) -> str:
    """7bit when nothing needs encoding; otherwise whichever of QP and base64 is smaller."""
    short_lines = all(len(line) <= _FOLD_AT for line in text.split("\n"))
    if short_lines and all(" " <= c <= "~" or c in "\t\n" for c in text):
        return "7bit"
    data = text.encode("utf-8")
    non_ascii = sum(b > 0x7E or (b < 0x20 and b not in (0x09, 0x0A)) or b == 0x3D for b in data)
    return "base64" if non_ascii * 5 > len(data) - non_ascii else "quoted-printable"


def build_message(mail: OutgoingMail) -> bytes:
    """The message as RFC 5322 bytes with CRLF line endings, 7-bit clean, ready for SMTP DATA.

    Raises HeaderInjectionError (CR/LF or control characters in any header
    input), BadAddressError (any address) or ValueError (other bad input)
    before building anything.
    """
    _check_inputs(mail)

    from_addr = validate_address(mail.from_addr)
    to = _unique(mail.to)
    if not to:
        raise BadAddressError("a message needs at least one To address")
    cc = _unique(mail.cc, skip=to)
    reply_to = validate_address(mail.reply_to) if mail.reply_to else None

    message_id = _own_id(mail.message_id)
    in_reply_to = _foreign_id(mail.in_reply_to)
    references = _thread_ids(message_id, in_reply_to, mail.references)

    date = mail.date if mail.date is not None else datetime.now(timezone.utc)
    if date.tzinfo is None or date.utcoffset() is None:
        raise ValueError("date must be timezone-aware")

    extra: list[tuple[str, str]] = []
    for name, value in mail.extra_headers.items():
        if not _FIELD_NAME_RE.fullmatch(name):
            raise HeaderInjectionError(f"extra header name {name!r} is not a valid header field name")
        if name.lower() in _RESERVED_HEADERS:
            raise HeaderInjectionError(f"extra header {name!r} would override a header build_message sets itself")
        extra.append((name, value.strip()))

    attachments: list[tuple[str, str, str, bytes]] = []
    for filename, content_type, data in mail.attachments:
        match = _CONTENT_TYPE_RE.fullmatch(content_type.strip())
        if not match:
            raise ValueError(f"attachment {filename!r}: content type {content_type!r} is not type/subtype")
        maintype, subtype = match.group(1).lower(), match.group(2).lower()
        if maintype in ("multipart", "message"):
            raise ValueError(f"attachment {filename!r}: content type {content_type!r} cannot be attached as bytes")
        if not filename.strip():
            raise ValueError("attachment filename is empty")
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"attachment {filename!r}: data must be bytes")
        attachments.append((filename, maintype, subtype, bytes(data)))

    body = mail.body_text.replace("\r\n", "\n").replace("\r", "\n")
    try:
        body.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError(f"body is not valid Unicode (lone surrogate at position {exc.start})") from None
    if not body.endswith("\n"):
        body += "\n"

    msg = EmailMessage(policy=_POLICY)
    msg["From"] = _mailbox("From", mail.from_name.strip(), from_addr)
    msg["To"] = [Address(addr_spec=a) for a in to]
    if cc:
        msg["Cc"] = [Address(addr_spec=a) for a in cc]
    if reply_to:
        msg["Reply-To"] = Address(addr_spec=reply_to)
    msg["Subject"] = mail.subject.strip()
    msg["Date"] = format_datetime(date.replace(microsecond=0))
    msg["Message-ID"] = f"<{message_id}>"
    if in_reply_to:
        msg["In-Reply-To"] = f"<{in_reply_to}>"
    if references:
        msg["References"] = " ".join(f"<{r}>" for r in references)
    if mail.auto:
        msg["Auto-Submitted"] = "auto-replied"
        msg["X-Auto-Response-Suppress"] = "All"
    for name, value in extra:
        msg[name] = value
    msg["MIME-Version"] = "1.0"
    msg.set_content(body, subtype="plain", charset="utf-8", cte=_body_encoding(body))
    if attachments:
        msg.make_mixed()
        for filename, maintype, subtype, data in attachments:
            part = MIMEPart(policy=_POLICY)
            part.set_content(data, maintype=maintype, subtype=subtype, disposition="attachment", filename=filename)
            msg.attach(part)
    return msg.as_bytes(policy=_POLICY)
