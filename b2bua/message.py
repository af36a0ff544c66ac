"""SIP messages (RFC 3261), sans-IO: parse bytes into requests/responses and back.

A UDP datagram is one message (`parse_message`); a TCP stream is cut into messages by
`StreamFramer`. Header values are kept as written so the B2BUA can pass unknown headers
through untouched; only the headers the stack interprets (Via, From, To, Call-ID, CSeq,
Contact, Max-Forwards, Content-Length) are validated here. Text is decoded as UTF-8 with
``surrogateescape`` so that any byte sequence survives a parse/serialise round trip.
"""

from __future__ import annotations

import itertools
import re
import secrets
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

__all__ = [
    "REASON_PHRASES",
    "CSeq",
    "Headers",
    "NameAddr",
    "SipMessage",
    "SipParseError",
    "SipRequest",
    "SipResponse",
    "SipUri",
    "StreamFramer",
    "Via",
    "generate_branch",
    "generate_call_id",
    "generate_tag",
    "make_response",
    "parse_message",
    "split_header_list",
]

_ENCODING = "utf-8"
_ERRORS = "surrogateescape"

# RFC 3261 token characters; used for methods, header names and parameter names.
_TOKEN_RE = re.compile(r"[A-Za-z0-9\-.!%*_+`'~]+")
_SCHEME_RE = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*")
_HOSTNAME_RE = re.compile(r"[A-Za-z0-9\-._~%!$&'()*+,=]+")
_IPV6_RE = re.compile(r"[0-9A-Fa-f:.]+")
# Only character classes that exclude each other follow one another, so matching is linear.
_SENT_PROTOCOL_RE = re.compile(
    r"[ \t]*([A-Za-z0-9\-.!%*_+`'~]+)[ \t]*/[ \t]*([A-Za-z0-9\-.!%*_+`'~]+)[ \t]*/[ \t]*"
    r"([A-Za-z0-9\-.!%*_+`'~]+)"
)
_WHITESPACE = " \t"
_MAX_CSEQ = 2**31 - 1  # RFC 3261 8.1.1.5: the sequence number must be below 2**31

# Compact form -> lower-case long name (RFC 3261 7.3.3 and extensions).
_COMPACT: dict[str, str] = {
    "a": "accept-contact",
    "b": "referred-by",
    "c": "content-type",
    "d": "request-disposition",
    "e": "content-encoding",
    "f": "from",
    "i": "call-id",
    "j": "reject-contact",
    "k": "supported",
    "l": "content-length",
    "m": "contact",
    "n": "identity-info",
    "o": "event",
    "r": "refer-to",
    "s": "subject",
    "t": "to",
    "u": "allow-events",
    "v": "via",
    "x": "session-expires",
    "y": "identity",
}

_KNOWN_NAMES = (
    "Accept",
    "Accept-Contact",
    "Accept-Encoding",
    "Accept-Language",
    "Alert-Info",
    "Allow",
    "Allow-Events",
    "Authentication-Info",
    "Authorization",
    "Call-ID",
    "Call-Info",
    "Contact",
    "Content-Disposition",
    "Content-Encoding",
    "Content-Language",
    "Content-Length",
    "Content-Type",
    "CSeq",
    "Date",
    "Error-Info",
    "Event",
    "Expires",
    "From",
    "Identity",
    "Identity-Info",
    "In-Reply-To",
    "Max-Forwards",
    "MIME-Version",
    "Min-Expires",
    "Min-SE",
    "Organization",
    "P-Asserted-Identity",
    "P-Preferred-Identity",
    "Path",
    "Priority",
    "Privacy",
    "Proxy-Authenticate",
    "Proxy-Authorization",
    "Proxy-Require",
    "RAck",
    "Reason",
    "Record-Route",
    "Refer-To",
    "Referred-By",
    "Reject-Contact",
    "Replaces",
    "Reply-To",
    "Request-Disposition",
    "Require",
    "Retry-After",
    "Route",
    "RSeq",
    "Server",
    "Session-Expires",
    "Subject",
    "Subscription-State",
    "Supported",
    "Timestamp",
    "To",
    "Unsupported",
    "User-Agent",
    "Via",
    "Warning",
    "WWW-Authenticate",
)
_CANONICAL: dict[str, str] = {name.lower(): name for name in _KNOWN_NAMES}

# Headers whose single value may legitimately contain commas (credentials, dates, free
# text) or that RFC 3261 defines as one value only: get_all must not split these.
_UNSPLITTABLE = frozenset(
    {
        "authorization",
        "proxy-authorization",
        "www-authenticate",
        "proxy-authenticate",
        "authentication-info",
        "date",
        "subject",
        "organization",
        "user-agent",
        "server",
        "call-id",
        "cseq",
        "from",
        "to",
        "max-forwards",
        "content-length",
        "content-type",
        "content-disposition",
        "expires",
        "min-expires",
        "retry-after",
        "timestamp",
        "mime-version",
        "priority",
        "refer-to",
        "referred-by",
        "replaces",
        "session-expires",
        "min-se",
        "identity",
        "identity-info",
        "event",
        "subscription-state",
        "rack",
        "rseq",
        "reply-to",
        "in-reply-to",
    }
)

# A request or response without one of these is rejected (RFC 3261 8.1.1).
_MANDATORY = ("Via", "From", "To", "Call-ID", "CSeq")
# Headers that may appear only once (RFC 4475 3.3.9 multi01, 3.3.10 mcl01).
_SINGLETONS = ("From", "To", "Call-ID", "CSeq", "Max-Forwards", "Content-Length", "Content-Type")


def _key(name: str) -> str:
    lower = name.lower()
    return _COMPACT.get(lower, lower)


def canonical_name(name: str) -> str:
    """The long canonical spelling of a known header (compact forms expanded), else `name`."""
    return _CANONICAL.get(_key(name), name)


class SipParseError(ValueError):
    """A SIP message could not be parsed.

    `reason` is one line a person can act on; `partial` is a salvaged request (start line
    and headers, no body) when Via, From, To, Call-ID and CSeq were readable, so that a
    400 can still be sent; otherwise None.
    """

    def __init__(self, reason: str, partial: SipRequest | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.partial = partial


class Headers:
    """Ordered, case-insensitive multi-map of SIP header fields.

    Known headers are stored under their canonical long name (compact forms expanded);
    unknown headers keep their spelling. Values are kept exactly as received.
    """

    __slots__ = ("_fields",)

    def __init__(self, items: Iterable[tuple[str, str]] = ()) -> None:
        # (lookup key, name as stored, value)
        self._fields: list[tuple[str, str, str]] = []
        for name, value in items:
            key = _key(name)
            self._fields.append((key, _CANONICAL.get(key, name), value))

    def get(self, name: str) -> str | None:
        key = _key(name)
        for field_key, _, value in self._fields:
            if field_key == key:
                return value
        return None

    def get_all(self, name: str) -> list[str]:
        """Every value of `name`, comma lists split outside quotes and <> (not for
        headers such as Authorization or Date whose values contain commas)."""
        key = _key(name)
        values = [value for field_key, _, value in self._fields if field_key == key]
        if key in _UNSPLITTABLE:
            return values
        result: list[str] = []
        for value in values:
            result.extend(split_header_list(value))
        return result

    def fields(self, name: str) -> list[str]:
        """Every field value of `name` as written, without splitting comma lists."""
        key = _key(name)
        return [value for field_key, _, value in self._fields if field_key == key]

    def set(self, name: str, value: str) -> None:
        """Replace all fields of `name` by one, at the position of the first."""
        key = _key(name)
        new_fields: list[tuple[str, str, str]] = []
        placed = False
        for entry in self._fields:
            if entry[0] == key:
                if not placed:
                    new_fields.append((key, canonical_name(name), value))
                    placed = True
            else:
                new_fields.append(entry)
        if not placed:
            new_fields.append((key, canonical_name(name), value))
        self._fields = new_fields

    def add(self, name: str, value: str, *, first: bool = False) -> None:
        """Append a field; with `first`, insert it before the first field of that name
        (or at the very top when there is none), as a proxy does with its Via."""
        key = _key(name)
        entry = (key, canonical_name(name), value)
        if not first:
            self._fields.append(entry)
            return
        for index, (field_key, _, _) in enumerate(self._fields):
            if field_key == key:
                self._fields.insert(index, entry)
                return
        self._fields.insert(0, entry)

    def remove(self, name: str) -> None:
        key = _key(name)
        self._fields = [entry for entry in self._fields if entry[0] != key]

    def copy(self) -> Headers:
        clone = Headers()
        clone._fields = list(self._fields)
        return clone

    def count(self, name: str) -> int:
        """Number of fields (lines) of `name`."""
        key = _key(name)
        return sum(1 for entry in self._fields if entry[0] == key)

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        key = _key(name)
        return any(entry[0] == key for entry in self._fields)

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter([(name, value) for _, name, value in self._fields])

    def __len__(self) -> int:
        return len(self._fields)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Headers):
            return NotImplemented
        return [(k, v) for k, _, v in self._fields] == [(k, v) for k, _, v in other._fields]

    def __repr__(self) -> str:
        return f"Headers({list(self)!r})"

    def _to_lines(self, body_length: int, out: list[str]) -> None:
        wrote_length = False
        for key, name, value in self._fields:
            if key == "content-length":
                if not wrote_length:
                    out.append(f"Content-Length: {body_length}\r\n")
                    wrote_length = True
                continue
            out.append(f"{name}: {value}\r\n")
        if not wrote_length:
            out.append(f"Content-Length: {body_length}\r\n")


def split_header_list(value: str) -> list[str]:
    """Split a header value on commas outside quoted strings and <...>; drop empties."""
    if '"' not in value and "<" not in value:
        return [part.strip(_WHITESPACE) for part in value.split(",") if part.strip(_WHITESPACE)]
    parts: list[str] = []
    start = 0
    in_quotes = False
    in_angle = False
    index = 0
    length = len(value)
    while index < length:
        char = value[index]
        if in_quotes:
            if char == "\\":
                index += 1
            elif char == '"':
                in_quotes = False
        elif char == '"':
            in_quotes = True
        elif char == "<":
            in_angle = True
        elif char == ">":
            in_angle = False
        elif char == "," and not in_angle:
            parts.append(value[start:index])
            start = index + 1
        index += 1
    parts.append(value[start:])
    return [part.strip(_WHITESPACE) for part in parts if part.strip(_WHITESPACE)]


def _serialise(start_line: str, headers: Headers, body: bytes) -> bytes:
    out = [start_line]
    headers._to_lines(len(body), out)
    out.append("\r\n")
    return "".join(out).encode(_ENCODING, _ERRORS) + body


@dataclass
class SipRequest:
    """A SIP request: method, Request-URI, headers and body."""

    method: str
    uri: str
    headers: Headers
    body: bytes = b""
    version: str = "SIP/2.0"

    def to_bytes(self) -> bytes:
        """Serialise; Content-Length is always written as len(body)."""
        return _serialise(f"{self.method} {self.uri} {self.version}\r\n", self.headers, self.body)


@dataclass
class SipResponse:
    """A SIP response: status code, reason phrase, headers and body."""

    status: int
    reason: str
    headers: Headers
    body: bytes = b""
    version: str = "SIP/2.0"

    def to_bytes(self) -> bytes:
        """Serialise; Content-Length is always written as len(body)."""
        return _serialise(
            f"{self.version} {self.status} {self.reason}\r\n", self.headers, self.body
        )


SipMessage = SipRequest | SipResponse


# ---------------------------------------------------------------------------------------
# Framing


def _skip_line_breaks(data: bytes | bytearray, start: int = 0) -> int:
    length = len(data)
    while start < length and data[start] in (0x0D, 0x0A):
        start += 1
    return start


def _find_head_end(data: bytes | bytearray, start: int) -> tuple[int, int] | None:
    """(end of header section, start of body), accepting CRLF or bare LF line ends."""
    crlf = data.find(b"\r\n\r\n", start)
    # Look for a bare-LF end only before the CRLF one, so each call stays linear in the
    # message and not in everything buffered behind it.
    bare = data.find(b"\n\n", start, crlf if crlf >= 0 else len(data))
    if bare >= 0:
        return bare, bare + 2
    if crlf >= 0:
        return crlf, crlf + 4
    return None


def _content_length_of_head(head: bytes) -> int | None:
    """Content-Length from a raw header section, for framing (None when absent)."""
    found: int | None = None
    for raw_line in head.split(b"\n")[1:]:
        if not raw_line or raw_line[:1] in (b" ", b"\t"):
            continue
        name, colon, value = raw_line.partition(b":")
        if not colon:
            continue
        if name.strip().lower() not in (b"content-length", b"l"):
            continue
        length = _parse_content_length(value.strip().decode("latin-1"))
        if found is not None and found != length:
            raise SipParseError("several different Content-Length headers")
        found = length
    return found


def _parse_content_length(text: str) -> int:
    if text.startswith("-") and text[1:].isdigit():
        raise SipParseError(f"negative Content-Length: {text}")
    if not text.isascii() or not text.isdigit():
        raise SipParseError(f"Content-Length is not a number: {text[:40]!r}")
    if len(text) > 9:
        raise SipParseError(f"Content-Length too large: {text[:40]}")
    return int(text)


class StreamFramer:
    """Cuts a reliable byte stream (TCP/TLS) into SIP messages by Content-Length.

    CRLF keep-alives between messages (RFC 5626 ping/pong) are dropped. After a
    SipParseError the stream cannot be resynchronised: close the connection.
    """

    def __init__(
        self, max_message_size: int = 256 * 1024, max_header_size: int | None = None
    ) -> None:
        self._buffer = bytearray()
        self._max_message_size = max_message_size
        # A header section that never ends must not grow to the whole message limit.
        self._max_header_size = max_header_size or max_message_size

    @property
    def pending(self) -> int:
        """Bytes of a message received but not yet complete (0 between messages)."""
        return len(self._buffer) - _skip_line_breaks(self._buffer)

    def feed(self, data: bytes) -> list[bytes]:
        """Add received bytes; return the complete messages now available, in order."""
        self._buffer += data
        buffer = self._buffer
        messages: list[bytes] = []
        position = 0
        try:
            while True:
                position = _skip_line_breaks(buffer, position)
                if position >= len(buffer):
                    break
                found = _find_head_end(buffer, position)
                if found is None:
                    if len(buffer) - position > self._max_header_size:
                        raise SipParseError("header section too large on stream")
                    break
                head_end, body_start = found
                if head_end - position > self._max_header_size:
                    raise SipParseError("header section too large on stream")
                length = _content_length_of_head(bytes(buffer[position:head_end]))
                if length is None:
                    raise SipParseError("missing Content-Length on a stream transport")
                total = body_start + length - position
                if total > self._max_message_size:
                    raise SipParseError(f"message too large on stream: {total} bytes")
                if len(buffer) < position + total:
                    break
                messages.append(bytes(buffer[position : position + total]))
                position += total
        finally:
            # Drop consumed bytes once per feed, not once per message (that is quadratic).
            del buffer[:position]
        return messages

    @property
    def buffered(self) -> int:
        """Bytes received but not yet returned as a message."""
        return len(self._buffer)


# ---------------------------------------------------------------------------------------
# Parsing


def parse_message(data: bytes) -> SipMessage:
    """Parse one SIP message (a whole UDP datagram, or one message cut by StreamFramer).

    Leading CRLFs are skipped. The body is cut to Content-Length; without Content-Length
    the body is the rest of the datagram. Raises SipParseError.
    """
    start = _skip_line_breaks(data)
    if start >= len(data):
        raise SipParseError("empty message (only CR/LF keep-alive)")
    found = _find_head_end(data, start)
    if found is None:
        if data.endswith(b"\n"):
            head_end, body_start = len(data), len(data)
        else:
            raise SipParseError("header section not terminated by an empty line")
    else:
        head_end, body_start = found
    head = data[start:head_end]
    _check_nul(head)
    lines = head.decode(_ENCODING, _ERRORS).split("\n")
    start_line = lines[0].removesuffix("\r")
    headers = _parse_header_lines(lines[1:])
    try:
        message = _build_message(start_line, headers)
        _validate(message)
        message.body = _cut_body(headers, data[body_start:])
    except SipParseError as exc:
        if exc.partial is None:
            exc.partial = _salvage(start_line, headers)
        raise
    return message


def _check_nul(head: bytes) -> None:
    position = head.find(b"\x00")
    while position >= 0:
        # A NUL is legal only as a quoted-pair inside a quoted string (RFC 4475 intmeth).
        if position == 0 or head[position - 1] != 0x5C:
            raise SipParseError("NUL byte in the header section")
        position = head.find(b"\x00", position + 1)


def _parse_header_lines(lines: list[str]) -> Headers:
    items: list[tuple[str, str]] = []
    name: str | None = None
    parts: list[str] = []
    for raw in lines:
        line = raw.removesuffix("\r")
        if line[:1] in (" ", "\t"):
            if name is None:
                raise SipParseError("header continuation line before the first header")
            # RFC 3261 7.3.1: a fold (CRLF + whitespace) is equivalent to one space.
            parts.append(line.strip(_WHITESPACE))
            continue
        if name is not None:
            items.append((name, " ".join(part for part in parts if part)))
        colon = line.find(":")
        if colon < 0:
            raise SipParseError(f"header line without colon: {line[:60]!r}")
        name = line[:colon].rstrip(_WHITESPACE)
        if not _TOKEN_RE.fullmatch(name):
            raise SipParseError(f"invalid header name: {name[:60]!r}")
        parts = [line[colon + 1 :].strip(_WHITESPACE)]
    if name is not None:
        items.append((name, " ".join(part for part in parts if part)))
    return Headers(items)


def _build_message(start_line: str, headers: Headers) -> SipMessage:
    if start_line[:4].upper() == "SIP/":
        version, _, rest = start_line.partition(" ")
        _check_version(version)
        code, _, reason = rest.partition(" ")
        if not (len(code) == 3 and code.isascii() and code.isdigit()):
            raise SipParseError(f"invalid status code: {code[:20]!r}")
        status = int(code)
        if not 100 <= status <= 699:
            raise SipParseError(f"status code out of range: {status}")
        return SipResponse(status, reason, headers, version=version)
    parts = start_line.split(" ")
    if len(parts) != 3 or not all(parts):
        raise SipParseError(
            f"bad request line (need 'METHOD SP Request-URI SP SIP/2.0'): {start_line[:80]!r}"
        )
    method, uri, version = parts
    if not _TOKEN_RE.fullmatch(method):
        raise SipParseError(f"invalid method: {method[:40]!r}")
    _check_version(version)
    _check_request_uri(uri)
    return SipRequest(method, uri, headers, version=version)


def _check_version(version: str) -> None:
    if version.upper() != "SIP/2.0":
        raise SipParseError(f"unsupported SIP version: {version[:20]!r}")


def _check_request_uri(uri: str) -> None:
    if uri.startswith("<"):
        raise SipParseError(f"Request-URI must not be enclosed in <>: {uri[:80]!r}")
    scheme, colon, _ = uri.partition(":")
    if not colon or not _SCHEME_RE.fullmatch(scheme):
        raise SipParseError(f"Request-URI has no valid scheme: {uri[:80]!r}")
    if scheme.lower() in ("sip", "sips"):
        parsed = SipUri.parse(uri)
        if parsed.headers:
            # RFC 3261 19.1.1: headers are not allowed in a Request-URI (RFC 4475 escruri).
            raise SipParseError("Request-URI must not contain URI headers ('?...')")


def _validate(message: SipMessage) -> None:
    headers = message.headers
    counts = Counter(key for key, _, _ in headers._fields)
    missing = [name for name in _MANDATORY if not counts[name.lower()]]
    if missing:
        raise SipParseError("missing mandatory header(s): " + ", ".join(missing))
    for name in _SINGLETONS:
        if counts[name.lower()] > 1:
            raise SipParseError(f"header {name} appears more than once")
    cseq = CSeq.parse(headers.get("CSeq") or "")
    if isinstance(message, SipRequest) and cseq.method != message.method:
        raise SipParseError(
            f"CSeq method {cseq.method!r} does not match request method {message.method!r}"
        )
    for via in headers.get_all("Via"):
        Via.parse(via)
    if not headers.get_all("Via"):
        raise SipParseError("empty Via header")
    for name in ("From", "To"):
        NameAddr.parse(headers.get(name) or "")
    for contact in headers.get_all("Contact"):
        if contact != "*":
            NameAddr.parse(contact)
    max_forwards = headers.get("Max-Forwards")
    if max_forwards is not None:
        if not (max_forwards.isascii() and max_forwards.isdigit()):
            raise SipParseError(f"Max-Forwards is not a number: {max_forwards[:40]!r}")
        if int(max_forwards) > 255:
            raise SipParseError(f"Max-Forwards above 255: {max_forwards[:40]}")
    if not headers.get("Call-ID"):
        raise SipParseError("empty Call-ID header")


def _cut_body(headers: Headers, rest: bytes) -> bytes:
    value = headers.get("Content-Length")
    if value is None:
        return rest
    length = _parse_content_length(value)
    if length > len(rest):
        raise SipParseError(f"Content-Length {length} is larger than the body ({len(rest)} bytes)")
    return rest[:length]


def _salvage(start_line: str, headers: Headers) -> SipRequest | None:
    if start_line[:4].upper() == "SIP/":
        return None
    if any(name not in headers for name in _MANDATORY):
        return None
    tokens = start_line.split()
    if len(tokens) < 2 or not _TOKEN_RE.fullmatch(tokens[0]):
        return None
    return SipRequest(tokens[0], tokens[1], headers.copy())


# ---------------------------------------------------------------------------------------
# Header value helpers


def _split_outside_quotes(text: str, separator: str) -> list[str]:
    if '"' not in text:
        return text.split(separator)
    parts: list[str] = []
    start = 0
    in_quotes = False
    index = 0
    while index < len(text):
        char = text[index]
        if in_quotes:
            if char == "\\":
                index += 1
            elif char == '"':
                in_quotes = False
        elif char == '"':
            in_quotes = True
        elif char == separator:
            parts.append(text[start:index])
            start = index + 1
        index += 1
    if in_quotes:
        raise SipParseError(f"unterminated quoted string in {text[:60]!r}")
    parts.append(text[start:])
    return parts


def _parse_params(items: list[str], where: str) -> dict[str, str | None]:
    """';'-separated generic params (already split); names lower-cased, values as written."""
    params: dict[str, str | None] = {}
    for item in items:
        name, equals, value = item.partition("=")
        name = name.strip(_WHITESPACE)
        if not _TOKEN_RE.fullmatch(name):
            raise SipParseError(f"bad parameter {item.strip()[:40]!r} in {where}")
        if equals:
            value = value.strip(_WHITESPACE)
            if not value:
                raise SipParseError(f"parameter {name!r} has an empty value in {where}")
            params[name.lower()] = value
        else:
            params[name.lower()] = None
    return params


def _format_params(params: dict[str, str | None]) -> str:
    return "".join(
        f";{name}" if value is None else f";{name}={value}" for name, value in params.items()
    )


def _parse_port(text: str, where: str) -> int:
    if not (text.isascii() and text.isdigit()) or len(text) > 5 or int(text) > 65535:
        raise SipParseError(f"invalid port {text[:20]!r} in {where}")
    return int(text)


def _parse_hostport(text: str, where: str) -> tuple[str, int | None]:
    """host[:port]; IPv6 references come in brackets and are returned without them."""
    if text.startswith("["):
        close = text.find("]")
        if close < 0 or not _IPV6_RE.fullmatch(text[1:close]):
            raise SipParseError(f"bad IPv6 reference in {where}")
        host, rest = text[1:close], text[close + 1 :]
        if not rest:
            return host, None
        if not rest.startswith(":"):
            raise SipParseError(f"junk after IPv6 host in {where}")
        return host, _parse_port(rest[1:], where)
    host, colon, port = text.partition(":")
    if not _HOSTNAME_RE.fullmatch(host):
        raise SipParseError(f"bad host {host[:60]!r} in {where}")
    return host, (_parse_port(port, where) if colon else None)


def _format_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _unquote(text: str) -> str:
    """Content of a quoted string starting at text[0] == '"'; raises if unterminated."""
    out: list[str] = []
    index = 1
    while index < len(text):
        char = text[index]
        if char == "\\" and index + 1 < len(text):
            out.append(text[index + 1])
            index += 2
            continue
        if char == '"':
            return "".join(out)
        out.append(char)
        index += 1
    raise SipParseError(f"unterminated quoted string: {text[:60]!r}")


def _quote(text: str) -> str:
    escaped = "".join(
        "\\" + char
        if char in '"\\' or (ord(char) < 0x20 and char not in "\t") or char == "\x7f"
        else char
        for char in text
    )
    return f'"{escaped}"'


@dataclass(frozen=True)
class SipUri:
    """A sip:, sips: or tel: URI. IPv6 hosts are stored without brackets; user,
    params and headers keep their %-escapes as written. For tel: the number is `user`
    and `host` is empty."""

    scheme: str
    user: str | None
    password: str | None
    host: str
    port: int | None = None
    params: dict[str, str | None] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str) -> SipUri:
        scheme, colon, rest = text.partition(":")
        if not colon or not _SCHEME_RE.fullmatch(scheme):
            raise SipParseError(f"URI without a scheme: {text[:80]!r}")
        scheme = scheme.lower()
        if any(char in rest for char in ' \t\r\n<>"'):
            raise SipParseError(f'URI contains whitespace or <>": {text[:80]!r}')
        if scheme == "tel":
            number, *param_items = rest.split(";")
            if not number:
                raise SipParseError("tel: URI without a number")
            return cls(scheme, number, None, "", None, _parse_params(param_items, "tel URI"))
        if scheme not in ("sip", "sips"):
            raise SipParseError(f"unsupported URI scheme {scheme!r}")
        user: str | None = None
        password: str | None = None
        at = rest.find("@")
        if at >= 0:
            userinfo, rest = rest[:at], rest[at + 1 :]
            user_text, has_password, password_text = userinfo.partition(":")
            if not user_text:
                raise SipParseError(f"empty user part in URI {text[:80]!r}")
            user = user_text
            password = password_text if has_password else None
        rest, question, header_text = rest.partition("?")
        hostport, *param_items = rest.split(";")
        host, port = _parse_hostport(hostport, "URI")
        params = _parse_params(param_items, "URI")
        headers: dict[str, str] = {}
        if question:
            for item in header_text.split("&"):
                name, equals, value = item.partition("=")
                if not name or not equals:
                    raise SipParseError(f"bad URI header {item[:40]!r}")
                headers[name] = value
        return cls(scheme, user, password, host, port, params, headers)

    def __str__(self) -> str:
        if self.scheme == "tel":
            return f"tel:{self.user}{_format_params(self.params)}"
        userinfo = ""
        if self.user is not None:
            userinfo = self.user
            if self.password is not None:
                userinfo += ":" + self.password
            userinfo += "@"
        port = f":{self.port}" if self.port is not None else ""
        headers = ""
        if self.headers:
            headers = "?" + "&".join(f"{name}={value}" for name, value in self.headers.items())
        return (
            f"{self.scheme}:{userinfo}{_format_host(self.host)}{port}"
            f"{_format_params(self.params)}{headers}"
        )


def _check_uri_text(uri: str, where: str) -> None:
    scheme, colon, rest = uri.partition(":")
    if not colon or not _SCHEME_RE.fullmatch(scheme) or not rest:
        raise SipParseError(f"{where}: not a URI: {uri[:80]!r}")
    if any(char in uri for char in ' \t<>"'):
        raise SipParseError(f'{where}: whitespace or <>" inside URI {uri[:80]!r}')


@dataclass
class NameAddr:
    """A name-addr or addr-spec with header parameters (From, To, Contact, Route...).

    In the addr-spec form (no <>) everything after the first ';' is a header
    parameter, not a URI parameter (RFC 3261 20.10). `display` is unquoted.
    """

    display: str | None
    uri: str
    params: dict[str, str | None] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str) -> NameAddr:
        text = text.strip(_WHITESPACE)
        display: str | None = None
        if text.startswith('"'):
            display = _unquote(text)
            end_quote = _closing_quote(text)
            rest = text[end_quote + 1 :].lstrip(_WHITESPACE)
            if not rest.startswith("<"):
                raise SipParseError(f"quoted display name not followed by <URI>: {text[:80]!r}")
            return cls._angle(display, rest, text)
        if "<" in text:
            left = text.find("<")
            words = text[:left].split()
            for word in words:
                if not _TOKEN_RE.fullmatch(word):
                    raise SipParseError(
                        f"display name must be tokens or a quoted string: {text[:left][:60]!r}"
                    )
            display = " ".join(words) if words else None
            return cls._angle(display, text[left:], text)
        uri, *param_items = _split_outside_quotes(text, ";")
        uri = uri.rstrip(_WHITESPACE)
        _check_uri_text(uri, "addr-spec")
        if "?" in uri or "," in uri:
            raise SipParseError(f"URI with '?' or ',' must be enclosed in <>: {uri[:80]!r}")
        return cls(None, uri, _parse_params(param_items, "header parameters"))

    @classmethod
    def _angle(cls, display: str | None, rest: str, whole: str) -> NameAddr:
        close = rest.find(">")
        if close < 0:
            raise SipParseError(f"unterminated <URI>: {whole[:80]!r}")
        uri = rest[1:close]
        _check_uri_text(uri, "name-addr")
        tail = rest[close + 1 :].strip(_WHITESPACE)
        if tail and not tail.startswith(";"):
            raise SipParseError(f"junk after <URI>: {tail[:40]!r}")
        items = _split_outside_quotes(tail[1:], ";") if tail else []
        return cls(display, uri, _parse_params(items, "header parameters"))

    def __str__(self) -> str:
        display = f"{_quote(self.display)} " if self.display is not None else ""
        return f"{display}<{self.uri}>{_format_params(self.params)}"

    @property
    def tag(self) -> str | None:
        return self.params.get("tag")


def _closing_quote(text: str) -> int:
    index = 1
    while index < len(text):
        if text[index] == "\\":
            index += 2
            continue
        if text[index] == '"':
            return index
        index += 1
    raise SipParseError(f"unterminated quoted string: {text[:60]!r}")


@dataclass
class Via:
    """One Via hop: SIP/2.0/<transport> <host>[:port] ;params (transport upper-cased,
    IPv6 host without brackets, param names lower-cased)."""

    transport: str
    host: str
    port: int | None = None
    params: dict[str, str | None] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str) -> Via:
        first, *param_items = _split_outside_quotes(text, ";")
        match = _SENT_PROTOCOL_RE.match(first)
        if match is None or first[match.end() : match.end() + 1] not in (" ", "\t"):
            raise SipParseError(f"malformed Via: {text[:80]!r}")
        protocol, version, transport = match.groups()
        if protocol.upper() != "SIP" or version != "2.0":
            raise SipParseError(f"Via protocol is not SIP/2.0: {text[:80]!r}")
        words = first[match.end() :].split()
        # sent-by may carry LWS around the port colon ("host : 5060"), nowhere else.
        for left, right in itertools.pairwise(words):
            if not (left.endswith(":") or right.startswith(":")):
                raise SipParseError(f"malformed Via sent-by: {text[:80]!r}")
        host, port = _parse_hostport("".join(words), "Via")
        return cls(transport.upper(), host, port, _parse_params(param_items, "Via"))

    def __str__(self) -> str:
        port = f":{self.port}" if self.port is not None else ""
        return (
            f"SIP/2.0/{self.transport} {_format_host(self.host)}{port}{_format_params(self.params)}"
        )

    @property
    def branch(self) -> str | None:
        return self.params.get("branch")


@dataclass(frozen=True)
class CSeq:
    """CSeq header value: sequence number (below 2**31) and method."""

    seq: int
    method: str

    @classmethod
    def parse(cls, text: str) -> CSeq:
        parts = text.split()
        if len(parts) != 2:
            raise SipParseError(f"CSeq must be 'number METHOD': {text[:60]!r}")
        number, method = parts
        if not (number.isascii() and number.isdigit()):
            raise SipParseError(f"CSeq number is not a number: {number[:40]!r}")
        if len(number) > 10 or int(number) > _MAX_CSEQ:
            raise SipParseError(f"CSeq number too large: {number[:40]}")
        if not _TOKEN_RE.fullmatch(method):
            raise SipParseError(f"invalid CSeq method: {method[:40]!r}")
        return cls(int(number), method)

    def __str__(self) -> str:
        return f"{self.seq} {self.method}"


REASON_PHRASES: dict[int, str] = {
    100: "Trying",
    180: "Ringing",
    181: "Call Is Being Forwarded",
    182: "Queued",
    183: "Session Progress",
    199: "Early Dialog Terminated",
    200: "OK",
    202: "Accepted",
    204: "No Notification",
    300: "Multiple Choices",
    301: "Moved Permanently",
    302: "Moved Temporarily",
    305: "Use Proxy",
    380: "Alternative Service",
    400: "Bad Request",
    401: "Unauthorized",
    402: "Payment Required",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    406: "Not Acceptable",
    407: "Proxy Authentication Required",
    408: "Request Timeout",
    410: "Gone",
    412: "Conditional Request Failed",
    413: "Request Entity Too Large",
    414: "Request-URI Too Long",
    415: "Unsupported Media Type",
    416: "Unsupported URI Scheme",
    417: "Unknown Resource-Priority",
    420: "Bad Extension",
    421: "Extension Required",
    422: "Session Interval Too Small",
    423: "Interval Too Brief",
    428: "Use Identity Header",
    429: "Provide Referrer Identity",
    433: "Anonymity Disallowed",
    436: "Bad Identity-Info",
    437: "Unsupported Certificate",
    438: "Invalid Identity Header",
    439: "First Hop Lacks Outbound Support",
    440: "Max-Breadth Exceeded",
    469: "Bad Info Package",
    470: "Consent Needed",
    480: "Temporarily Unavailable",
    481: "Call/Transaction Does Not Exist",
    482: "Loop Detected",
    483: "Too Many Hops",
    484: "Address Incomplete",
    485: "Ambiguous",
    486: "Busy Here",
    487: "Request Terminated",
    488: "Not Acceptable Here",
    489: "Bad Event",
    491: "Request Pending",
    493: "Undecipherable",
    494: "Security Agreement Required",
    500: "Server Internal Error",
    501: "Not Implemented",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Server Time-out",
    505: "Version Not Supported",
    513: "Message Too Large",
    580: "Precondition Failure",
    600: "Busy Everywhere",
    603: "Decline",
    604: "Does Not Exist Anywhere",
    606: "Not Acceptable",
    607: "Unwanted",
}

_CLASS_REASONS = {1: "Trying", 2: "OK", 3: "Redirect", 4: "Client Error", 5: "Server Error"}


def make_response(
    request: SipRequest, status: int, reason: str | None = None, *, to_tag: str | None = None
) -> SipResponse:
    """A response to `request` (RFC 3261 8.2.6): copies every Via, From, To, Call-ID and
    CSeq; adds `to_tag` to To when it has no tag and status > 100. No body."""
    if reason is None:
        reason = REASON_PHRASES.get(status) or _CLASS_REASONS.get(status // 100, "Global Failure")
    source = request.headers
    headers = Headers()
    for via in source.fields("Via"):
        headers.add("Via", via)
    for name in ("From", "To", "Call-ID", "CSeq"):
        value = source.get(name)
        if value is None:
            continue
        if name == "To" and to_tag is not None and status > 100 and not _has_tag(value):
            value = f"{value};tag={to_tag}"
        headers.add(name, value)
    return SipResponse(status, reason, headers)


def _has_tag(value: str) -> bool:
    try:
        return NameAddr.parse(value).tag is not None
    except SipParseError:
        return ";tag=" in value.lower().replace(" ", "")


def generate_tag() -> str:
    """A random From/To tag (64 bits, hex)."""
    return secrets.token_hex(8)


def generate_branch() -> str:
    """A random RFC 3261 branch: the magic cookie z9hG4bK plus 64 random bits."""
    return "z9hG4bK" + secrets.token_hex(8)


def generate_call_id() -> str:
    """A random Call-ID (128 bits, hex)."""
    return secrets.token_hex(16)
