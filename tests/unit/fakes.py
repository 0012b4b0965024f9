"""Test doubles shared by unit tests."""


class FakeClock:
    """A monotonic clock the test moves by hand: no test ever sleeps for protocol time."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds
