"""The error types every command reports as a single line plus a hint."""

from __future__ import annotations


class BeitToolsError(Exception):
    """A failure the user can act on: `message` says what is wrong, `hint` what to do about it."""

    exit_code = 1

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message} ({self.hint})"


class UsageError(BeitToolsError):
    """The command line asked for something that does not exist (an unknown name): exit 2, like Click's errors."""

    exit_code = 2
