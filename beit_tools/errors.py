"""The one error type every command reports as a single line plus a hint."""

from __future__ import annotations


class BeitToolsError(Exception):
    """A failure the user can act on: `message` says what is wrong, `hint` what to do about it."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message} ({self.hint})"
