"""Turning raw inbound mail into plain, safe values.  (pure)

``parse_message`` never raises: intake stores the raw bytes first and then
parses, and one broken message must not stop the fetch of the ones after it.
Whatever the email package chokes on is recovered piece by piece (a header, a
charset, a MIME part) and noted in ``defects``; only bytes that are not mail at
all get an ``error`` and go to quarantine.

Every string that leaves this module went through ``clean_text``/``clean_line``:
no control characters (terminal escapes), no lone surrogates (SQLite refuses
them), no CR/LF in one-line values (an encoded word can decode to CR/LF).

Decisions:

* Raw 8-bit header bytes (which the email package keeps as surrogates) are read
  as UTF-8 when they are valid UTF-8, else as Windows-1252.
* Body charsets: the declared charset is tried strictly, then UTF-8, then the
  declared charset with replacement characters.  A missing, unknown or US-ASCII
  label that does not fit the bytes falls back to UTF-8 (unless it decodes to C1
  controls, which no real text holds), then Windows-1252 (its five unassigned bytes
  become U+FFFD): mislabelled mail is common and a guess reads better than a wall
  of U+FFFD.  The raw bytes stay stored as they came.
  A Latin-1 label is read as Windows-1252, as browsers do (WHATWG Encoding): real
  Latin-1 text never holds the C1 controls 0x80–0x9F, and mailers that write €, “ ”
  or – in those bytes label them ISO-8859-1 all the time.
* The body is every inline text/plain part in order (Apple Mail splits text
  around inline images); in multipart/alternative the plain version wins unless
  it is empty.  HTML-only mail is converted with html2text, links kept as
  ``[text](url)``.
* ``from_trusted`` is False when the From header has defects or does not name
  exactly one address: Python 3.11 reads ``alice@example.org)<bob@example.org>``
  as alice (CVE-2023-27043) but records a defect, and such a sender must not be
  filed under an existing customer.
* Attachment file names lose any directory part (``../../x`` → ``x``): they are
  meant to be saved.  Forwarded messages (message/rfc822) are kept whole as
  ``.eml`` attachments; their bodies are not merged into this one.
* Quarantine (``error`` set) only for: empty input, no header section, no header
  a mail would have, or nothing readable at all (no subject, no text, no
  attachment).
"""

from __future__ import annotations

import binascii
import codecs
import email
import email.errors
import email.header
import email.parser
import email.utils
import mimetypes
import re
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from email.message import Message
from email.policy import default as _POLICY

import html2text

from supportdesk.text import clean_line, clean_text

__all__ = [
    "LOOP_HEADERS",
    "DeliveryReport",
    "ParsedAttachment",
    "ParsedMessage",
    "html_to_text",
    "parse_many",
    "parse_message",
    "quote_split",
]

LOOP_HEADERS = (
    "auto-submitted",
    "precedence",
    "list-id",
    "list-unsubscribe",
    "x-loop",
    "x-auto-response-suppress",
    "return-path",
    "x-autoreply",
    "x-autorespond",
)

_MAX_DEPTH = 40
_MAX_PARTS = 2000
_MAX_BOUNDARIES = 300
_MAX_DEFECTS = 50
_MAX_IDS = 500
_MAIL_HEADERS = frozenset({
    "from", "sender", "to", "cc", "bcc", "reply-to", "subject", "date", "message-id",
    "in-reply-to", "references", "mime-version", "content-type", "content-transfer-encoding",
    "content-disposition", "received", "return-path", "delivered-to",
})
_STATUS_TYPES = ("message/delivery-status", "message/global-delivery-status")
_ORIGINAL_TYPES = ("message/rfc822", "message/global", "text/rfc822-headers", "message/global-headers")
_ASCII_LABELS = frozenset({"us-ascii", "ascii", "ansi_x3.4-1968", "iso646-us", "646", "us"})
_SURROGATES = re.compile("[\udc80-\udcff]+")
_C1_CONTROLS = re.compile("[\x80-\x9f]")
_HEADER_START = re.compile(rb"[!-9;-~]+:")
_BRACKETED_ID = re.compile(r"<([^<>]*)>")
_MIME_TYPE = re.compile(r"[A-Za-z0-9][\w!#$&^.+-]*/[\w!#$&^.+-]+", re.ASCII)
_BASE64_JUNK = re.compile(rb"[^A-Za-z0-9+/=\s]")
_BINARY_CHARS = re.compile("[\x00-\x08\x0e-\x1f\ufffd]")
# Obsolete syntax (an unquoted "John Q. Public") and raw UTF-8 in a display name are
# everyday mail; they do not make the address ambiguous.
_BENIGN_DEFECTS = (email.errors.ObsoleteHeaderDefect, email.errors.UndecodableBytesDefect)
_MIME_TYPES = mimetypes.MimeTypes()  # built-in table only: same names on every machine
_EXTENSIONS = {"application/ms-tnef": ".dat", "text/calendar": ".ics", "message/rfc822": ".eml"}


@dataclass(frozen=True)
class ParsedAttachment:
    filename: str
    content_type: str
    data: bytes
    content_id: str | None = None
    inline: bool = False


@dataclass(frozen=True)
class DeliveryReport:
    """What a bounce (multipart/report; report-type=delivery-status) says.

    ``action``/``status``/``diagnostic`` come from the first failed recipient, else
    the first recipient listed.
    """

    original_message_id: str | None
    recipients: list[str]
    action: str
    status: str
    diagnostic: str


@dataclass(frozen=True)
class ParsedMessage:
    message_id: str | None = None
    in_reply_to: list[str] = field(default_factory=list)
    references: list[str] = field(default_factory=list)
    subject: str = ""
    from_addr: str | None = None
    from_name: str = ""
    from_trusted: bool = False
    to: list[tuple[str, str]] = field(default_factory=list)
    cc: list[tuple[str, str]] = field(default_factory=list)
    reply_to: list[tuple[str, str]] = field(default_factory=list)
    date: datetime | None = None
    body_text: str = ""
    body_html: str | None = None
    attachments: list[ParsedAttachment] = field(default_factory=list)
    headers: dict[str, str] = field(default_factory=dict)
    dsn: DeliveryReport | None = None
    report_type: str | None = None
    """report-type of a top-level multipart/report ("" if missing): bounces, read receipts."""
    defects: list[str] = field(default_factory=list)
    error: str | None = None


def parse_message(raw: bytes) -> ParsedMessage:
    """Parse one RFC 5322 message; never raises (see the module docstring)."""
    try:
        return _Parser(raw).run()
    except Exception as exc:  # last line of defence: intake must go on
        return ParsedMessage(error=f"unparseable message ({type(exc).__name__})")


def parse_many(raws: list[bytes]) -> list[ParsedMessage | None]:
    """`parse_message` for a batch, e.g. in a worker process; None where the parser itself failed."""
    parsed: list[ParsedMessage | None] = []
    for raw in raws:
        try:
            parsed.append(parse_message(raw))
        except Exception:
            parsed.append(None)
    return parsed


# -- text helpers ---------------------------------------------------------------------------


def _decode_guess(data: bytes) -> str:
    """Unlabelled bytes: UTF-8 if they are UTF-8 and read as text, else Windows-1252.

    Valid UTF-8 that decodes to C1 controls (Windows-1252 "Â" + "Œ" is the UTF-8 of U+008C)
    is not UTF-8 text: those characters would be stripped and the words with them."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("cp1252", "replace")
    return data.decode("cp1252", "replace") if _C1_CONTROLS.search(text) else text


def _unsurrogate(value: str) -> str:
    """Raw 8-bit header bytes, which reach a str as surrogates, read as UTF-8 or cp1252."""
    if not value:
        return ""
    return _SURROGATES.sub(lambda m: _decode_guess(m.group(0).encode("utf-8", "surrogateescape")), value)


def _decode_text(data: bytes, charset: str | None) -> str:
    """A text part's bytes as str, whatever its label claims (see the module docstring)."""
    label = (charset or "").strip().strip("\"'").lower()
    if label and label not in _ASCII_LABELS:
        try:
            if codecs.lookup(label).name == "iso8859-1":
                label = "cp1252"
        except (LookupError, ValueError):
            return _decode_guess(data)
        for attempt, errors in ((label, "strict"), ("utf-8", "strict"), (label, "replace")):
            try:
                return data.decode(attempt, errors)
            except (UnicodeError, LookupError, ValueError):
                pass
    return _decode_guess(data)


def _decode_words(value: str) -> str:
    """RFC 2047 encoded words decoded by hand: the fallback when the email package gives up."""
    value = _unsurrogate(str(value))
    if "=?" not in value:
        return value
    try:
        chunks = email.header.decode_header(value)
    except Exception:
        return value
    out = []
    for chunk, charset in chunks:
        if isinstance(chunk, str):
            out.append(chunk)
        elif charset is None:
            out.append(chunk.decode("raw-unicode-escape", "replace"))
        else:
            out.append(_decode_text(chunk, charset))
    return "".join(out)


def _line(value: object) -> str:
    return clean_line(_unsurrogate(str(value))) if value is not None else ""


def _words(value: str) -> str:
    """One line with folded whitespace collapsed: DSN fields are wrapped at will."""
    return " ".join(_line(value).split())


def _parse_ids(value: str, loose: bool = False) -> list[str]:
    """Message ids without brackets.  Unbracketed tokens count only if they contain "@"
    (In-Reply-To often carries prose), or, when ``loose``, as the single token given."""
    value = clean_line(value)
    ids = [re.sub(r"\s+", "", found) for found in _BRACKETED_ID.findall(value)]
    if not ids:
        tokens = value.split()
        ids = [token.strip("<>") for token in tokens if "@" in token]
        if not ids and loose and len(tokens) == 1:
            ids = [tokens[0].strip("<>")]
    return [ident for ident in ids if ident]


def _plausible_address(addr: str) -> bool:
    local, at, domain = addr.rpartition("@")
    return bool(at and local and domain) and not any(ch.isspace() for ch in addr) and "@" not in local.strip('"')


def _count_at_signs(value: str) -> int:
    """"@" outside quoted strings and comments: more than one for a single address
    means two parsers may disagree on who sent the mail (CVE-2023-27043)."""
    count = depth = 0
    quoted = escaped = False
    for ch in value:
        if escaped:
            escaped = False
        elif ch == "\\" and (quoted or depth):
            escaped = True
        elif quoted:
            quoted = ch != '"'
        elif ch == '"' and not depth:
            quoted = True
        elif ch == "(":
            depth += 1
        elif ch == ")" and depth:
            depth -= 1
        elif ch == "@" and not depth:
            count += 1
    return count


def _describe(defect: object) -> str:
    """The defect's own message, else the first line of its class docstring."""
    detail = str(defect).strip()
    if detail:
        return detail
    return (type(defect).__doc__ or type(defect).__name__).strip().splitlines()[0].rstrip(".")


def _looks_binary(text: str) -> bool:
    if not text:
        return False
    return "\x00" in text or len(_BINARY_CHARS.findall(text)) > len(text) / 10


def _content_type(part: Message) -> str:
    """maintype/subtype, lower-case; junk after it (``text/plain>``, a missing ";") is cut off.

    Memoised on the part: the email package re-parses the header on every call.
    """
    cached = getattr(part, "_supportdesk_ctype", None)
    if cached is not None:
        return cached
    try:
        match = _MIME_TYPE.match(part.get_content_type())
    except Exception:
        match = None
    value = match.group(0).lower() if match else "application/octet-stream"
    try:
        part._supportdesk_ctype = value  # type: ignore[attr-defined]
    except Exception:
        pass
    return value


def _disposition(part: Message) -> str | None:
    try:
        return part.get_content_disposition()
    except Exception:
        return None


def _payload(part: Message) -> object:
    try:
        return part.get_payload()
    except Exception:
        return None


def _report_type(part: Message) -> str | None:
    if _content_type(part) != "multipart/report":
        return None
    try:
        value = part.get_param("report-type")
        if isinstance(value, tuple):
            value = email.utils.collapse_rfc2231_value(value)
    except Exception:
        value = None
    return _line(value).lower() if value else ""


def _raw_body(part: Message) -> bytes | None:
    """The undecoded body of a leaf part as the bytes that were on the wire.

    Read from ``_payload``: ``get_payload()`` already decodes 8-bit bodies with the
    declared charset and "replace", which would lose bytes a better guess could read.
    """
    payload = getattr(part, "_payload", None)
    if isinstance(payload, bytes):
        return payload
    if isinstance(payload, str):
        return payload.encode("utf-8", "surrogateescape")
    return None


def _extension(content_type: str) -> str:
    return _EXTENSIONS.get(content_type) or _MIME_TYPES.guess_extension(content_type) or ".bin"


def _html_converter() -> html2text.HTML2Text:
    converter = html2text.HTML2Text(bodywidth=0)
    converter.ignore_emphasis = True
    converter.images_to_alt = True
    converter.unicode_snob = True
    converter.inline_links = True
    converter.protect_links = False
    converter.wrap_links = False
    return converter


_MD_ESCAPED_BACKSLASH = re.compile(r"\\\\(?=[\\`*_{}\[\]()#+\-.!])")
_MD_ESCAPED_LIST = re.compile(r"^(\s*)\\([-+])", re.MULTILINE)
_MD_ESCAPED_NUMBER = re.compile(r"^(\s*\d+)\\(\.)", re.MULTILINE)


def html_to_text(html: str) -> str:
    """Readable text for an HTML body: paragraphs, lists and quotes kept, links as [text](url).

    html2text writes Markdown and escapes what Markdown would misread (a backslash, a
    leading "-" or "1."); those escapes are undone so a path like C:\\temp reads as sent.
    """
    try:
        text = _html_converter().handle(html)
    except Exception:
        text = re.sub(r"<[^>]*>", " ", re.sub(r"(?is)<(script|style)\b.*?</\1\s*>", " ", html))
    text = _MD_ESCAPED_BACKSLASH.sub(r"\\", text)
    text = _MD_ESCAPED_LIST.sub(r"\1\2", text)
    text = _MD_ESCAPED_NUMBER.sub(r"\1\2", text)
    lines = [line.rstrip() for line in clean_text(text).split("\n")]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip("\n")


# -- the parser ----------------------------------------------------------------------------


_BIG_MESSAGE = 1 << 20
_BIG_BODY = 256 << 10
# Possessive (++): a plain + keeps backtracking state per line, ~3.5× the run in memory.
_BASE64_RUN = re.compile(rb"^(?:[A-Za-z0-9+/]{60,76}\r?\n)++(?:[A-Za-z0-9+/]{1,76}={0,2}\r?\n|={1,2}\r?\n)?", re.M)
_BASE64_CTE = re.compile(rb"^content-transfer-encoding:[ \t]*base64[ \t]*\r?$", re.I | re.M)


class _Parser:
    """One message's parse.

    Large attachments: the email package holds a body as a str and a list of its
    lines (~4× the encoded size, ~6× the decoded one).  In a message over
    ``_BIG_MESSAGE``, each base64 body over ``_BIG_BODY`` is cut out before parsing
    and replaced by a token; the part then decodes straight from the raw bytes.  If
    a token is not met as a part body (e.g. inside a forwarded message), the message
    is parsed again whole, so the result never depends on the shortcut.
    """

    def __init__(self, raw: bytes, *, cut_big_bodies: bool = True) -> None:
        if isinstance(raw, str):
            raw = raw.encode("utf-8", "surrogateescape")
        self.raw = bytes(raw)
        self.cut_big_bodies = cut_big_bodies
        self.big: dict[bytes, tuple[int, int]] = {}
        self.big_used: set[bytes] = set()
        self.big_source = b""
        self.defects: list[str] = []
        self.plain: list[str] = []
        self.html: list[str] = []
        self.attachments: list[ParsedAttachment] = []
        self.parts_seen = 0
        self.dsn: DeliveryReport | None = None

    def defect(self, text: str) -> None:
        text = clean_line(text)
        if text and text not in self.defects and len(self.defects) < _MAX_DEFECTS:
            self.defects.append(text)

    def run(self) -> ParsedMessage:
        raw = self.raw
        if not raw.strip():
            return ParsedMessage(error="empty message")
        stripped = raw.lstrip(b" \t\r\n")
        if len(stripped) != len(raw) and _HEADER_START.match(stripped):
            self.defect("whitespace before the first header was ignored")
            raw = stripped
        msg = self._message_from_bytes(self._cut(raw) if self.cut_big_bodies and len(raw) > _BIG_MESSAGE else raw)
        try:
            names = {str(name).lower() for name, _ in msg.raw_items()}
        except Exception:
            names = set()
        if not names:
            return ParsedMessage(error="no header section: not an email message", defects=self.defects)

        self._walk(msg, depth=0, top=True)
        from_addr, from_name, from_trusted = self._sender(msg)
        body_text, body_html = self._bodies()
        report_type = _report_type(msg)
        if self.dsn is None and report_type == "delivery-status":
            self.dsn = DeliveryReport(None, [], "", "", "")
        result = ParsedMessage(
            message_id=next(iter(_parse_ids(self._text_header(msg, "message-id"), loose=True)), None),
            in_reply_to=self._ids(msg, "in-reply-to"),
            references=self._ids(msg, "references"),
            subject=clean_line(self._text_header(msg, "subject")),
            from_addr=from_addr,
            from_name=from_name,
            from_trusted=from_trusted,
            to=self._address_list(msg, "to")[0],
            cc=self._address_list(msg, "cc")[0],
            reply_to=self._address_list(msg, "reply-to")[0],
            date=self._date(msg),
            body_text=body_text,
            body_html=body_html,
            attachments=self.attachments,
            headers=self._loop_headers(msg),
            dsn=self.dsn,
            report_type=report_type,
            defects=self.defects,
        )
        if self.big_used != set(self.big):
            return _Parser(self.raw, cut_big_bodies=False).run()
        error = self._unusable(names, result)
        return replace(result, error=error) if error else result

    def _cut(self, raw: bytes) -> bytes:
        """The message with each large base64 part body replaced by a token (see the class)."""
        pieces, last = [], 0
        for match in _BASE64_RUN.finditer(raw):
            start, end = match.span()
            if end - start < _BIG_BODY or not (raw.endswith(b"\n\n", 0, start) or raw.endswith(b"\r\n\r\n", 0, start)):
                continue
            opened = max(raw.rfind(b"\n--", max(0, start - 16384), start), 0)
            if not _BASE64_CTE.search(raw, opened, start):
                continue
            token = b"SupportdeskBigBody%d" % len(self.big)
            self.big[token] = (start, end)
            pieces += [raw[last:start], token, b"\r\n" if raw.endswith(b"\r\n", 0, end) else b"\n"]
            last = end
        if not self.big:
            return raw
        self.big_source = raw
        pieces.append(raw[last:])
        return b"".join(pieces)

    def _message_from_bytes(self, raw: bytes) -> Message:
        if raw.lower().count(b"boundary") > _MAX_BOUNDARIES:
            # The email package's time grows with nesting depth times lines; past a
            # few hundred multiparts it is an attack, not a mail client.
            return self._headers_only(raw, f"more than {_MAX_BOUNDARIES} multipart boundaries")
        try:
            return email.message_from_bytes(raw, policy=_POLICY)
        except Exception as exc:
            # e.g. RecursionError on absurdly nested multiparts
            return self._headers_only(raw, f"MIME structure unreadable ({type(exc).__name__})")

    def _headers_only(self, raw: bytes, why: str) -> Message:
        """The headers, and the rest read as one plain-text body."""
        self.defect(f"{why}; body read as plain text")
        msg = email.parser.BytesParser(policy=_POLICY).parsebytes(raw, headersonly=True)
        for name in ("content-type", "content-transfer-encoding"):
            try:
                del msg[name]
            except Exception:
                pass
        return msg

    def _unusable(self, names: set[str], result: ParsedMessage) -> str | None:
        if not names & _MAIL_HEADERS:
            return "no recognisable mail headers: not an email message"
        if not (result.subject or result.body_text.strip() or result.attachments):
            return "no subject, text or attachments"
        if not (result.from_addr or result.subject or result.attachments) and self._binary_body:
            return "binary data without sender or subject: not an email message"
        return None

    # -- headers

    def _raw_header(self, msg: Message, name: str) -> list[str]:
        try:
            return [value for key, value in msg.raw_items() if str(key).lower() == name]
        except Exception:
            return []

    def _text_header(self, msg: Message, name: str) -> str:
        """A header as text; when the email package cannot read it, decoded by hand."""
        raw = self._raw_header(msg, name)
        if raw and _SURROGATES.search(raw[0]):
            # Raw 8-bit text: the email package would decode it as UTF-8 with "replace".
            return _decode_words(raw[0])
        try:
            value = msg.get(name)
            return "" if value is None else _unsurrogate(str(value))
        except Exception as exc:
            self.defect(f"{name} header unreadable ({type(exc).__name__})")
            raw = self._raw_header(msg, name)
            return _decode_words(raw[0]) if raw else ""

    def _ids(self, msg: Message, name: str) -> list[str]:
        found: list[str] = []
        seen: set[str] = set()
        for raw in self._raw_header(msg, name):
            for ident in _parse_ids(_decode_words(raw)):
                if ident not in seen:
                    seen.add(ident)
                    found.append(ident)
        if len(found) > _MAX_IDS:
            self.defect(f"{name} lists {len(found)} ids; kept the first 10 and the last {_MAX_IDS - 10}")
            found = found[:10] + found[-(_MAX_IDS - 10):]
        return found

    def _loop_headers(self, msg: Message) -> dict[str, str]:
        headers = {}
        for name in LOOP_HEADERS:
            values = [clean_line(_decode_words(value)) for value in self._raw_header(msg, name)]
            if values:
                headers[name] = ", ".join(values)
        return headers

    def _date(self, msg: Message) -> datetime | None:
        try:
            header = msg.get("date")
        except Exception:
            header = None
        if header is None and not self._raw_header(msg, "date"):
            return None
        try:
            when = getattr(header, "datetime", None)
            if when is None:
                when = email.utils.parsedate_to_datetime(clean_line(self._raw_header(msg, "date")[0]))
        except Exception:
            when = None
        if when is None:
            self.defect("date header unreadable")
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=timezone.utc)
        try:
            return when.astimezone(timezone.utc)
        except (OverflowError, ValueError):
            self.defect("date header out of range")
            return None

    def _address_list(
        self, msg: Message, name: str, keep_empty: bool = False
    ) -> tuple[list[tuple[str, str]], bool]:
        """(display name, lower-cased address) pairs, and whether the header read cleanly.

        Recipients without an "@" are parser debris and dropped; a From is kept as it
        is ("MAILER-DAEMON") and judged by ``_sender``.
        """
        values = self._raw_header(msg, name)
        if not values:
            return [], True
        clean = len(values) == 1
        try:
            header = msg.get(name)
            for item in getattr(header, "defects", ()):
                self.defect(f"{name}: {_describe(item)}")
                clean = clean and isinstance(item, _BENIGN_DEFECTS)
            pairs = [(a.display_name or "", a.addr_spec or "") for a in header.addresses]
        except Exception as exc:
            self.defect(f"{name} header unreadable ({type(exc).__name__})")
            clean = False
            try:
                pairs = email.utils.getaddresses([_decode_words(v) for v in values])
            except Exception:
                pairs = []
        result = []
        for display, addr in pairs:
            addr = _line(addr).lower()
            if addr == "<>":
                addr = ""
            if (addr or keep_empty) and ("@" in addr or name == "from"):
                result.append((_line(display), addr))
        return result, clean

    def _sender(self, msg: Message) -> tuple[str | None, str, bool]:
        pairs, clean = self._address_list(msg, "from", keep_empty=True)
        named = next((name for name, _ in pairs if name), "")
        plausible = [(name, addr) for name, addr in pairs if _plausible_address(addr)]
        chosen = plausible[0] if plausible else next(((n, a) for n, a in pairs if a), None)
        if chosen is None:
            return None, named, False
        raw = self._raw_header(msg, "from")
        trusted = (
            clean
            and len(pairs) == 1
            and len(plausible) == 1
            and _count_at_signs(_unsurrogate(raw[0]) if raw else "") == 1
        )
        if not trusted:
            self.defect("From header is ambiguous or malformed: sender not trusted")
        return chosen[1], chosen[0], trusted

    # -- MIME structure

    def _walk(self, part: Message, depth: int, top: bool = False) -> None:
        self.parts_seen += 1
        if self.parts_seen > _MAX_PARTS:
            if self.parts_seen == _MAX_PARTS + 1:
                self.defect(f"more than {_MAX_PARTS} MIME parts; the rest was skipped")
            return
        for item in getattr(part, "defects", ()) or ():
            self.defect(_describe(item))
        ctype = _content_type(part)
        payload = _payload(part)

        if ctype in _STATUS_TYPES:
            self._add_attachment(part, "text/plain", "delivery-status.txt", None, self._status_text(part).encode())
            return
        if ctype.startswith("message/"):
            self._attach_message(part, ctype, payload)
            return
        if isinstance(payload, list):
            if depth >= _MAX_DEPTH:
                self.defect(f"MIME parts nested deeper than {_MAX_DEPTH}; inner parts skipped")
                return
            children = [child for child in payload if isinstance(child, Message)]
            if ctype == "multipart/alternative":
                self._alternative(children, depth)
                return
            if ctype == "multipart/report":
                self._report(part, children)
            for child in children:
                self._walk(child, depth + 1)
            return
        if ctype.startswith("multipart/"):
            # No (usable) boundary: the email package leaves the body as one string.
            self.plain.append(self._text_of(part))
            return

        disposition = _disposition(part)
        filename = self._filename(part)
        if ctype in ("text/plain", "text/html") and disposition != "attachment" and (
            top or not filename or disposition == "inline"
        ):
            (self.plain if ctype == "text/plain" else self.html).append(self._text_of(part))
            return
        self._add_attachment(part, ctype, filename, disposition, self._body_bytes(part))

    def _alternative(self, children: list[Message], depth: int) -> None:
        """Text from the plain alternative (else the richest one); HTML for body_html and
        attachments (inline images, calendar invites) from every alternative."""
        kinds = [_content_type(child) for child in children]
        if "text/plain" in kinds:
            chosen = kinds.index("text/plain")
        else:
            chosen = len(children) - 1
            for index in range(len(children) - 1, -1, -1):
                if kinds[index] == "text/html" or kinds[index].startswith("multipart/"):
                    chosen = index
                    break
        for index, child in enumerate(children):
            if index != chosen and kinds[index].startswith("text/") and kinds[index] not in ("text/html", "text/calendar"):
                continue
            plain = len(self.plain)
            self._walk(child, depth + 1)
            if index != chosen:
                del self.plain[plain:]

    @property
    def _binary_body(self) -> bool:
        return _looks_binary("".join(self.plain))

    def _bodies(self) -> tuple[str, str | None]:
        body_html = clean_text("\n".join(self.html)) if any(h.strip() for h in self.html) else None
        plain = [clean_text(text).strip("\n") for text in self.plain]
        plain = [text for text in plain if text.strip()]
        if plain:
            return "\n\n".join(plain), body_html
        if self.html:
            return html_to_text("\n".join(self.html)), body_html
        return "", body_html

    def _text_of(self, part: Message) -> str:
        try:
            charset = part.get_content_charset()
        except Exception:
            charset = None
        return _decode_text(self._body_bytes(part), charset)

    def _body_bytes(self, part: Message) -> bytes:
        """The decoded body; damaged base64 or quoted-printable decoded as far as it goes."""
        raw = _raw_body(part)
        if raw is None:
            return b""
        if self.big and raw.strip() in self.big:
            token = raw.strip()
            self.big_used.add(token)
            start, end = self.big[token]
            return binascii.a2b_base64(memoryview(self.big_source)[start:end])
        try:
            cte = str(part.get("content-transfer-encoding", "") or "").strip().lower()
        except Exception:
            cte = ""
        if cte == "base64":
            return self._base64(raw)
        if cte in ("quoted-printable", "x-quoted-printable"):
            try:
                return binascii.a2b_qp(raw)
            except (binascii.Error, ValueError):
                self.defect("quoted-printable body unreadable; kept as sent")
                return raw
        if cte in ("x-uuencode", "uuencode", "x-uue", "uue"):
            try:
                data = part.get_payload(decode=True)
                return data if isinstance(data, bytes) else raw
            except Exception:
                return raw
        if cte and cte not in ("7bit", "8bit", "binary"):
            self.defect(f"unknown Content-Transfer-Encoding {clean_line(cte)[:40]}; body kept as sent")
        return raw

    def _base64(self, raw: bytes) -> bytes:
        lines = [line.strip() for line in raw.splitlines() if line.strip()]
        if lines and sum(1 for line in lines if re.search(rb"\s", line)) > len(lines) / 2:
            # Base64 lines never hold spaces; words do.  Plain text mislabelled as base64.
            self.defect("body labelled base64 is not base64; kept as sent")
            return raw
        if _BASE64_JUNK.search(raw):
            self.defect("invalid characters in a base64 body were skipped")
        try:
            return binascii.a2b_base64(raw)
        except (binascii.Error, ValueError):
            pass
        self.defect("base64 body with wrong padding decoded as far as possible")
        data = re.sub(rb"[^A-Za-z0-9+/]", b"", raw)
        data = data[: len(data) - (len(data) % 4 == 1)]
        try:
            return binascii.a2b_base64(data + b"=" * (-len(data) % 4))
        except (binascii.Error, ValueError):
            return b""

    def _filename(self, part: Message) -> str:
        name = None
        for getter in (part.get_filename, lambda: part.get_param("name")):
            try:
                name = getter()
                if isinstance(name, tuple):
                    name = email.utils.collapse_rfc2231_value(name)
            except Exception:
                name = None
            if name:
                break
        if not name:
            return ""
        name = clean_line(_decode_words(str(name)))
        name = name.replace("\\", "/").rsplit("/", 1)[-1].strip()
        return "" if name in (".", "..") else name[:200]

    def _add_attachment(
        self, part: Message, ctype: str, filename: str, disposition: str | None, data: bytes
    ) -> None:
        if not filename:
            filename = f"attachment-{len(self.attachments) + 1}{_extension(ctype)}"
        content_id = None
        try:
            raw_cid = part.get("content-id")
            if raw_cid is not None:
                content_id = next(iter(_parse_ids(_unsurrogate(str(raw_cid)), loose=True)), None)
        except Exception:
            pass
        inline = disposition == "inline" or (disposition is None and content_id is not None)
        self.attachments.append(ParsedAttachment(filename, ctype, data, content_id, inline))

    def _attach_message(self, part: Message, ctype: str, payload: object) -> None:
        inner = payload[0] if isinstance(payload, list) and payload else None
        if isinstance(inner, Message):
            data = b""
            try:
                data = inner.as_bytes(policy=_POLICY)
            except Exception:
                try:
                    data = inner.as_string(policy=_POLICY).encode("utf-8", "surrogateescape")
                except Exception:
                    self.defect("an attached message could not be kept")
        else:
            data = self._body_bytes(part)
        filename = self._filename(part)
        if not filename and isinstance(inner, Message):
            subject = self._text_header(inner, "subject")
            safe = re.sub(r"[^\w\- .,()]+", "_", clean_line(subject)).strip(" ._")[:80]
            filename = f"{safe}.eml" if safe else ""
        self._add_attachment(part, ctype, filename, _disposition(part), data)

    # -- bounces

    def _report(self, part: Message, children: list[Message]) -> None:
        status_part = next((c for c in children if _content_type(c) in _STATUS_TYPES), None)
        if status_part is None and _report_type(part) != "delivery-status":
            return
        blocks = self._status_blocks(status_part) if status_part is not None else []
        per_recipient = [b for b in blocks if "final-recipient" in b or "original-recipient" in b]
        recipients: list[str] = []
        for block in per_recipient:
            value = block.get("final-recipient") or block.get("original-recipient") or ""
            address = value.split(";", 1)[-1].strip().strip("<>").lower()
            if address and address not in recipients:
                recipients.append(address)
        main = next(
            (b for b in per_recipient if b.get("action", "").lower() == "failed"),
            per_recipient[0] if per_recipient else {},
        )
        original = None
        for child in children:
            if _content_type(child) in _ORIGINAL_TYPES:
                original = self._original_message_id(child)
                if original:
                    break
        self.dsn = DeliveryReport(
            original_message_id=original,
            recipients=recipients,
            action=main.get("action", "").lower(),
            status=main.get("status", ""),
            diagnostic=main.get("diagnostic-code", ""),
        )

    def _status_blocks(self, part: Message) -> list[dict[str, str]]:
        """The header-like blocks of a delivery-status part, names lower-cased."""
        payload = _payload(part)
        blocks: list[dict[str, str]] = []
        if isinstance(payload, list):
            for block in payload:
                try:
                    blocks.append({str(k).lower(): _words(_decode_words(v)) for k, v in block.raw_items()})
                except Exception:
                    continue
            if any(blocks):
                return blocks
        for chunk in re.split(r"\n[ \t]*\n", self._text_of(part).replace("\r\n", "\n")):
            block: dict[str, str] = {}
            key = None
            for line in chunk.split("\n"):
                if line[:1] in (" ", "\t") and key:
                    block[key] += " " + line.strip()
                elif ":" in line:
                    key, _, value = line.partition(":")
                    key = key.strip().lower()
                    block[key] = value.strip()
            if block:
                blocks.append({k: _words(v) for k, v in block.items()})
        return blocks

    def _status_text(self, part: Message) -> str:
        blocks = self._status_blocks(part)
        return "\n\n".join("\n".join(f"{k}: {v}" for k, v in block.items()) for block in blocks) + "\n"

    def _original_message_id(self, part: Message) -> str | None:
        payload = _payload(part)
        if isinstance(payload, list) and payload and isinstance(payload[0], Message):
            headers = payload[0]
        else:
            text = self._text_of(part).lstrip()
            headers = email.parser.HeaderParser(policy=_POLICY).parsestr(text, headersonly=True)
        raw = self._raw_header(headers, "message-id")
        ids = _parse_ids(_decode_words(raw[0]), loose=True) if raw else []
        return ids[0] if ids else None


# -- quoted history --------------------------------------------------------------------------

_ATTRIBUTION_START = re.compile(
    r"^\s*(On|Am|Le|El|Il|Op|Em|Den|På|W dniu|Dne)\b",
    re.IGNORECASE,
)
_ATTRIBUTION_END = re.compile(
    r"\b(wrote|schrieb|a écrit|escribió|ha scritto|schreef|escreveu|skrev|napisał|pisze|napsal)\b[^:]{0,100}:\s*$",
    re.IGNORECASE,
)
_ORIGINAL_MESSAGE = re.compile(
    r"^\s*-{3,}\s*(Original Message|Ursprüngliche Nachricht|Message d'origine|Mensaje original"
    r"|Messaggio originale|Oorspronkelijk bericht|Forwarded message|Weitergeleitete Nachricht)\s*-{3,}\s*$",
    re.IGNORECASE,
)
_OUTLOOK_RULE = re.compile(r"^\s*_{10,}\s*$")
_OUTLOOK_FROM = re.compile(r"^\s*\*?(From|Von|De|Da|Van)\s*:\*?\s", re.IGNORECASE)
_SIGNATURE = re.compile(r"^-- ?$")


def quote_split(body_text: str) -> tuple[str, str]:
    """(new text, the rest) — the rest being quoted history and signature, to fold away.

    Cuts at the first of: an attribution line ("On … wrote:", "Am … schrieb …:",
    "Le … a écrit :", …, also wrapped onto two lines) that is followed by quoted
    lines; an "-----Original Message-----" style separator; an Outlook "____" rule
    followed by a From: line; the "-- " signature delimiter; or the block of ">"
    lines that runs to the end.  ">" lines with answers between them (inline
    replies) stay in the new text.  When nothing new would be left, nothing is
    folded: an empty view is worse than a long one.
    """
    lines = (body_text or "").split("\n")
    cut = len(lines)
    for index, line in enumerate(lines):
        if _is_quote_start(lines, index):
            cut = index
            break
    tail = cut
    while tail > 0 and (lines[tail - 1].lstrip().startswith(">") or not lines[tail - 1].strip()):
        tail -= 1
    if any(line.lstrip().startswith(">") for line in lines[tail:cut]):
        cut = tail
    new = "\n".join(lines[:cut]).rstrip()
    rest = "\n".join(lines[cut:]).strip("\n")
    if not new.strip():
        return body_text or "", ""
    return new, rest


def _is_quote_start(lines: list[str], index: int) -> bool:
    line = lines[index]
    if _SIGNATURE.match(line) or _ORIGINAL_MESSAGE.match(line):
        return True
    following = [text for text in lines[index + 1 : index + 4] if text.strip()]
    if _OUTLOOK_RULE.match(line):
        return bool(following) and bool(_OUTLOOK_FROM.match(following[0]))
    if _ATTRIBUTION_START.match(line):
        if _ATTRIBUTION_END.search(line):
            after = following
        elif index + 1 < len(lines) and _ATTRIBUTION_END.search(lines[index + 1]):
            after = [text for text in lines[index + 2 : index + 4] if text.strip()]
        else:
            return False
        return not after or after[0].lstrip().startswith(">")
    return False
