"""A secret value (a token, a key) typed so that printing, formatting or logging it shows a mask."""

from __future__ import annotations

import hmac

MASK = "********"


class Secret:
    """Holds a secret string; repr, str and format show MASK, reveal() gives the value to the one call that needs it."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        """The value itself: pass it straight to the library that needs it, never into a message."""
        return self._value

    def __repr__(self) -> str:
        return f"Secret('{MASK}')"

    def __str__(self) -> str:
        return MASK

    def __format__(self, spec: str) -> str:
        return MASK

    def __bool__(self) -> bool:
        return bool(self._value)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Secret):
            return NotImplemented
        # Constant time: the comparison must not tell how much of a guess was right.
        return hmac.compare_digest(self._value.encode(), other._value.encode())

    def __hash__(self) -> int:
        return hash(self._value)

    def __reduce__(self) -> tuple[object, ...]:
        # Pickling would write the value out in the clear (a cache, a queue, a crash dump).
        raise TypeError("a Secret is not pickled")
