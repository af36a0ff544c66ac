"""SDP (RFC 4566/8866), sans-IO: parse a body, and rewrite its c=/m= lines for the relay.

The B2BUA is transparent to codecs, so `rewrite_sdp` edits only the addresses and ports
the media relay takes over and leaves every other byte of the body as it was.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = [
    "STATIC_PAYLOAD_TYPES",
    "MediaDescription",
    "SdpError",
    "SessionDescription",
    "keep_telephone_event",
    "parse_sdp",
    "rewrite_sdp",
    "telephone_event_formats",
]

# RFC 3551 static payload types the relay and recorder care about.
STATIC_PAYLOAD_TYPES: dict[int, tuple[str, int]] = {
    0: ("PCMU", 8000),
    8: ("PCMA", 8000),
    9: ("G722", 8000),
    13: ("CN", 8000),
    18: ("G729", 8000),
}
_DIRECTIONS = ("sendrecv", "sendonly", "recvonly", "inactive")


class SdpError(ValueError):
    """The SDP body could not be parsed or rewritten."""


Attribute = tuple[str, str | None]


def _direction(attributes: list[Attribute]) -> str | None:
    found: str | None = None
    for name, value in attributes:
        if value is None and name in _DIRECTIONS:
            found = name
    return found


@dataclass
class MediaDescription:
    """One m= section: media kind, port, transport protocol, formats, its own c= address
    (None when it inherits the session's) and its a= attributes in order."""

    kind: str
    port: int
    proto: str
    formats: list[str]
    connection: str | None = None
    attributes: list[Attribute] = field(default_factory=list)
    session_direction: str | None = field(default=None, repr=False, compare=False)

    @property
    def rtpmap(self) -> dict[int, tuple[str, int]]:
        """Payload type -> (encoding name, clock rate): a=rtpmap lines, plus the static
        types 0, 8, 9, 13 and 18 listed in the m= line without an rtpmap."""
        mapping: dict[int, tuple[str, int]] = {}
        for fmt in self.formats:
            if fmt.isdigit() and int(fmt) in STATIC_PAYLOAD_TYPES:
                mapping[int(fmt)] = STATIC_PAYLOAD_TYPES[int(fmt)]
        for name, value in self.attributes:
            if name != "rtpmap" or value is None:
                continue
            payload_type, _, encoding = value.strip().partition(" ")
            encoding_name, _, rest = encoding.strip().partition("/")
            clock_rate = rest.partition("/")[0]
            # A malformed rtpmap (RFC 4475 uses "a=rtpmap:31 LPC") is skipped, not fatal.
            if payload_type.isdigit() and encoding_name and clock_rate.isdigit():
                mapping[int(payload_type)] = (encoding_name, int(clock_rate))
        return mapping

    @property
    def direction(self) -> str:
        """sendrecv, sendonly, recvonly or inactive: the media-level attribute, else the
        session-level one, else sendrecv."""
        return _direction(self.attributes) or self.session_direction or "sendrecv"


@dataclass
class SessionDescription:
    """A parsed SDP body: session-level c= address, m= sections and session attributes."""

    connection: str | None
    media: list[MediaDescription]
    attributes: list[Attribute] = field(default_factory=list)
    origin: str | None = None
    version: int = 0

    @property
    def direction(self) -> str:
        """Session-level direction attribute, default sendrecv."""
        return _direction(self.attributes) or "sendrecv"


def _lines(body: bytes) -> list[str]:
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SdpError(f"SDP is not UTF-8: {exc.reason}") from None
    return [line.removesuffix("\r") for line in text.split("\n")]


def _connection_address(value: str) -> str:
    parts = value.split()
    if len(parts) != 3 or parts[0] != "IN":
        raise SdpError(f"bad c= line: {value[:60]!r}")
    # Drop a multicast /ttl[/count] suffix: callers want the address itself.
    return parts[2].split("/")[0]


def _attribute(value: str) -> Attribute:
    name, colon, rest = value.partition(":")
    return (name, rest if colon else None)


def parse_sdp(body: bytes) -> SessionDescription:
    """Parse an SDP body (CRLF or bare LF line ends). Raises SdpError."""
    session = SessionDescription(connection=None, media=[])
    current: MediaDescription | None = None
    seen_version = False
    for number, line in enumerate(_lines(body), start=1):
        if not line:
            continue
        if len(line) < 2 or line[1] != "=" or not line[0].isalpha():
            raise SdpError(f"line {number} is not 'x=value': {line[:60]!r}")
        kind, value = line[0], line[2:]
        if kind == "v":
            if not value.strip().isdigit():
                raise SdpError(f"bad v= line: {value[:20]!r}")
            session.version = int(value.strip())
            seen_version = True
        elif kind == "o" and current is None:
            session.origin = value
        elif kind == "c":
            address = _connection_address(value)
            if current is None:
                session.connection = address
            else:
                current.connection = address
        elif kind == "m":
            current = _media(value)
            session.media.append(current)
        elif kind == "a":
            (session.attributes if current is None else current.attributes).append(
                _attribute(value)
            )
    if not seen_version:
        raise SdpError("SDP has no v= line")
    session_direction = _direction(session.attributes)
    for media in session.media:
        media.session_direction = session_direction
    return session


def _media(value: str) -> MediaDescription:
    parts = value.split()
    if len(parts) < 3:
        raise SdpError(f"bad m= line: {value[:60]!r}")
    kind, port_text, proto, *formats = parts
    port_text = port_text.split("/")[0]
    if not port_text.isdigit() or int(port_text) > 65535:
        raise SdpError(f"bad port in m= line: {value[:60]!r}")
    return MediaDescription(kind, int(port_text), proto, formats)


def rewrite_sdp(
    body: bytes, address: str, ports: list[int], *, bump_version: bool = False
) -> bytes:
    """Point the session at the relay: every c= line gets `address` (IP4 or IP6 chosen
    from it), the i-th m= line gets port ports[i], and a=rtcp gets ports[i] + 1.

    An m= line with port 0 (a disabled stream) keeps port 0; m= lines beyond len(ports)
    get port 0, since the relay does not carry them. With `bump_version` the o= session
    version is incremented. Every other line, and each line's CRLF or LF ending, is kept
    byte for byte. Raises SdpError.
    """
    if not body.lstrip().startswith(b"v="):
        raise SdpError("SDP does not start with v=")
    address_type = b"IP6" if ":" in address else b"IP4"
    address_bytes = address.encode("ascii")
    media_index = -1
    out: list[bytes] = []
    for raw in body.splitlines(keepends=True):
        line = raw.rstrip(b"\r\n")
        ending = raw[len(line) :]
        if line.startswith(b"c="):
            line = b"c=IN " + address_type + b" " + address_bytes
        elif line.startswith(b"m="):
            media_index += 1
            line = _rewrite_media_port(line, ports, media_index)
        elif line.startswith(b"a=rtcp:") and 0 <= media_index < len(ports):
            line = _rewrite_rtcp(line, ports[media_index] + 1, address_type, address_bytes)
        elif bump_version and line.startswith(b"o=") and media_index < 0:
            line = _bump_origin(line)
        out.append(line + ending)
    return b"".join(out)


def _rewrite_media_port(line: bytes, ports: list[int], index: int) -> bytes:
    parts = line[2:].split(b" ")
    if len(parts) < 3:
        raise SdpError(f"bad m= line: {line[:60]!r}")
    port, _, count = parts[1].partition(b"/")
    if not port.isdigit():
        raise SdpError(f"bad port in m= line: {line[:60]!r}")
    if int(port) == 0:
        return line
    new_port = ports[index] if index < len(ports) else 0
    parts[1] = str(new_port).encode() + (b"/" + count if count and new_port else b"")
    return b"m=" + b" ".join(parts)


def _rewrite_rtcp(line: bytes, port: int, address_type: bytes, address: bytes) -> bytes:
    parts = line[len(b"a=rtcp:") :].split()
    if len(parts) >= 4:
        return b"a=rtcp:%d IN %s %s" % (port, address_type, address)
    return b"a=rtcp:%d" % port


def _bump_origin(line: bytes) -> bytes:
    parts = line.split(b" ")
    if len(parts) != 6 or not parts[2].isdigit():
        raise SdpError(f"bad o= line: {line[:60]!r}")
    parts[2] = str(int(parts[2]) + 1).encode()
    return b" ".join(parts)


TELEPHONE_EVENT = "telephone-event"


def telephone_event_formats(media: MediaDescription) -> list[str]:
    """The payload types (as in the m= line) that `media` maps to telephone-event."""
    rtpmap = media.rtpmap
    return [
        f
        for f in media.formats
        if f.isdigit() and rtpmap.get(int(f), ("",))[0].lower() == TELEPHONE_EVENT
    ]


def _first_audio(sdp: SessionDescription) -> MediaDescription | None:
    return next((m for m in sdp.media if m.kind == "audio" and m.port != 0), None)


def keep_telephone_event(offer: bytes, answer: bytes) -> bytes:
    """The `answer` to a phone with the offer's telephone-event kept (RFC 4733).

    When the offer's first audio stream has telephone-event and the answer's lacks it
    (a trunk without RFC 4733), the offer's payload type, with its a=rtpmap and a=fmtp
    lines, is added to the answer's m= line, so the phone still sends its keys as events
    (callrec takes them for the feature code and does not forward them). Otherwise, or
    when the answer already uses that payload type for something else, the answer comes
    back unchanged. Every other byte of the answer is kept, but for a=rtpmap and a=fmtp
    lines of telephone-event on types its m= line does not list. Raises SdpError.
    """
    offered = _first_audio(parse_sdp(offer))
    answered = _first_audio(parse_sdp(answer))
    if offered is None or answered is None or telephone_event_formats(answered):
        return answer
    events = telephone_event_formats(offered)
    if not events:
        return answer
    payload_type = events[0]
    if payload_type in answered.formats:
        return answer
    mapped = answered.rtpmap.get(int(payload_type))
    if mapped is not None and mapped[0].lower() != TELEPHONE_EVENT:
        return answer
    # An answer with a stray a=rtpmap for telephone-event on that payload type but not in
    # its m= line (some trunks answer so) gets the type in the m= line, its lines kept.
    # Stray telephone-event lines of other types go: pjsua takes the first such a=rtpmap
    # as the type to send events with, whatever the m= line says, and callrec would
    # neither see those events nor keep them from the far end.
    stray = {
        str(mapped_type).encode()
        for mapped_type, (name, _) in answered.rtpmap.items()
        if name.lower() == TELEPHONE_EVENT
        and str(mapped_type) not in answered.formats
        and str(mapped_type) != payload_type
    }
    present = {
        (name, (value or "").split(" ")[0])
        for name, value in answered.attributes
        if name in ("rtpmap", "fmtp")
    }
    added = [
        f"a={name}:{value}".encode()
        for name, value in offered.attributes
        if name in ("rtpmap", "fmtp")
        and value is not None
        and value.split(" ")[0] == payload_type
        and (name, payload_type) not in present
    ]
    out: list[bytes] = []
    in_audio = False
    done = False
    ending = b"\r\n"
    lines = answer.splitlines(keepends=True)
    for raw in lines:
        line = raw.rstrip(b"\r\n")
        line_ending = raw[len(line) :]
        ending = line_ending or ending
        if line.startswith(b"m="):
            if in_audio and not done:
                out += [extra + ending for extra in added]
                done = True
            in_audio = not done and line.startswith(b"m=audio ") and _port(line) != 0
            if in_audio:
                line += b" " + payload_type.encode()
        elif in_audio and _attribute_type(line) in stray:
            continue
        out.append(line + line_ending)
    if in_audio and not done:
        if out and not out[-1].endswith(b"\n"):
            out[-1] += ending
        out += [extra + ending for extra in added]
    return b"".join(out)


def _attribute_type(line: bytes) -> bytes | None:
    """The payload type an a=rtpmap or a=fmtp line is about, else None."""
    for prefix in (b"a=rtpmap:", b"a=fmtp:"):
        if line.startswith(prefix):
            return line[len(prefix) :].split(b" ", 1)[0].strip()
    return None


def _port(m_line: bytes) -> int:
    parts = m_line.split(b" ")
    port = parts[1].split(b"/")[0] if len(parts) > 1 else b""
    return int(port) if port.isdigit() else 0
