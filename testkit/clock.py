"""A fake clock for the sans-IO cores that take one (`clock: Callable[[], float]`)."""

from __future__ import annotations

__all__ = ["FakeClock"]


class FakeClock:
    """Call it for the time; it moves only when a test says so (`advance`)."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds
