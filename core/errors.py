"""The one base for errors a user can act on, and the one way to make any error a one-line message.

Every user-facing error of core derives from UserError; its str() is one line that names the file or
flag and the problem. The CLI prints it after "error: " (exit code 2); the app shows it in a dialog.
No torch here: the desktop imports this before torch has loaded.
"""
from __future__ import annotations


class UserError(Exception):
    """A mistake or a bad file the user can fix; str() is one line naming the file or flag."""


class DataError(UserError):
    """A bad data set, image file or label text; str() is one line naming the file and the problem."""


def one_line(e: BaseException, limit: int = 300) -> str:
    """The first line of an error's text (its type name when it has none), at most `limit` characters."""
    text = " ".join(str(e).split("\n", 1)[0].split())
    return (text or type(e).__name__)[:limit]
