"""Transport addresses of SIP peers."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Peer:
    """Where a SIP message came from or goes to: host, port and transport (udp or tcp)."""

    host: str
    port: int
    transport: str = "udp"

    @property
    def reliable(self) -> bool:
        return self.transport != "udp"

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port};transport={self.transport}"
