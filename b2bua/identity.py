"""Who a call toward the trunk says it is from: the authenticated user, never the phone.

A phone proves by digest that it is one user; whatever it writes about itself (From,
P-Asserted-Identity, P-Preferred-Identity, Remote-Party-ID) is only its claim, and the
trunk believes what callrec sends it. So callrec is the edge of the RFC 3325 trust
domain: toward the trunk it drops the phone's identity headers and asserts the user it
authenticated, as `"Name" <sip:EXT@domain>` in From (mode "from"), or in From and
P-Asserted-Identity (mode "pai").

Privacy (RFC 3323/3325): a phone that sends `Privacy: id`, `user` or `header` asks to
stay anonymous to the called party. The From becomes
`"Anonymous" <sip:anonymous@anonymous.invalid>`, P-Asserted-Identity still carries the
user for the trunk (which removes it before leaving the trust domain), and the
request's Privacy keeps the phone's values with `id` added. `none` means no privacy;
other values (`session`, `critical`) are kept.

Display names lose their control characters (CR, LF, NUL, the rest of C0, DEL): the
parser splits lines at LF only, so a bare CR survives parsing, and a peer that ends
lines at CR would read what follows it as a header of its own. Header values that carry
such characters are not relayed at all (`has_control`).

Pure functions over parsed headers: no I/O, no clock.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import quote

from b2bua.message import Headers, NameAddr

__all__ = [
    "ANONYMOUS",
    "IDENTITY_HEADERS",
    "CallerIdentity",
    "clean_display",
    "has_control",
    "outbound_identity",
    "requested_privacy",
]

# What a phone may not tell the trunk about itself; callrec writes its own.
IDENTITY_HEADERS = frozenset(
    ("p-asserted-identity", "p-preferred-identity", "remote-party-id", "privacy")
)
ANONYMOUS = NameAddr("Anonymous", "sip:anonymous@anonymous.invalid")
_HIDE_IDENTITY = frozenset(("id", "user", "header"))
_PRIVACY_VALUES = frozenset(("header", "session", "user", "critical", "id"))
# C0 controls except HTAB, and DEL: never valid in a header value (RFC 3261 25.1 TEXT-UTF8).
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
_ANY_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")


@dataclass(frozen=True)
class CallerIdentity:
    """The authenticated user a call out asserts, and how ([trunk] identity, domain)."""

    extension: str
    name: str | None
    domain: str
    mode: str = "from"

    def name_addr(self) -> NameAddr:
        host = f"[{self.domain}]" if ":" in self.domain else self.domain
        user = quote(self.extension, safe="+-_.!~*'()&=$,;?/")
        return NameAddr(clean_display(self.name), f"sip:{user}@{host}")


def clean_display(text: str | None) -> str | None:
    """A display name without control characters (each run becomes one space)."""
    if text is None:
        return None
    cleaned = " ".join(_ANY_CONTROL.sub(" ", text).split())
    return cleaned or None


def has_control(value: str) -> bool:
    """True if a header value holds a character no header value may hold (HTAB aside)."""
    return _CONTROL.search(value) is not None


def requested_privacy(headers: Headers) -> list[str]:
    """The phone's RFC 3323 Privacy values, lower-cased, without `none` and unknown ones."""
    values: list[str] = []
    for field in headers.fields("Privacy"):
        for item in field.split(";"):
            value = item.strip().lower()
            if value in _PRIVACY_VALUES and value not in values:
                values.append(value)
    return values


def outbound_identity(
    identity: CallerIdentity, phone_headers: Headers, tag: str
) -> tuple[NameAddr, list[tuple[str, str]]]:
    """The From (with `tag`) and the identity headers of leg B's INVITE to the trunk.

    The caller of this function drops every header in IDENTITY_HEADERS that the phone
    sent and adds the returned ones instead.
    """
    asserted = identity.name_addr()
    privacy = requested_privacy(phone_headers)
    extra: list[tuple[str, str]] = []
    if _HIDE_IDENTITY.intersection(privacy):
        from_ = NameAddr(ANONYMOUS.display, ANONYMOUS.uri, {"tag": tag})
        extra.append(("P-Asserted-Identity", str(asserted)))
        if "id" not in privacy:
            privacy.append("id")
    else:
        from_ = NameAddr(asserted.display, asserted.uri, {"tag": tag})
        if identity.mode == "pai":
            extra.append(("P-Asserted-Identity", str(asserted)))
    if privacy:
        extra.append(("Privacy", ";".join(privacy)))
    return from_, extra
