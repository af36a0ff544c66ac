"""HA1 values for SIP digest authentication (RFC 7616, RFC 8760).

callrec never stores a plaintext password: it keeps H(username:realm:password) for MD5
and for SHA-256, which is all a digest server needs to check a response.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

DIGEST_ALGORITHMS = ("MD5", "SHA-256")


def ha1(username: str, realm: str, password: str, algorithm: str = "MD5") -> str:
    """Hex HA1 = H(username ":" realm ":" password) for `algorithm` (MD5 or SHA-256)."""
    data = f"{username}:{realm}:{password}".encode()
    normalised = algorithm.upper()
    if normalised == "MD5":
        return hashlib.md5(data, usedforsecurity=False).hexdigest()
    if normalised == "SHA-256":
        return hashlib.sha256(data).hexdigest()
    raise ValueError(f"unsupported digest algorithm {algorithm!r}")


@dataclass(frozen=True)
class Ha1Pair:
    """The HA1 of one username/realm/password for both digest algorithms."""

    md5: str
    sha256: str


def ha1_pair(username: str, realm: str, password: str) -> Ha1Pair:
    """HA1 for MD5 and SHA-256 at once, as stored for a user or a device."""
    return Ha1Pair(
        md5=ha1(username, realm, password, "MD5"),
        sha256=ha1(username, realm, password, "SHA-256"),
    )
