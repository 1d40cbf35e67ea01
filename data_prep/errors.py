"""User errors on the command line: one line, no traceback (issue #24).

A missing column, a typo in a recipe or a missing input is the user's to fix, and a traceback buries
the one line that says how. Entry points turn such errors into ``SystemExit(one line)``; the
traceback is still there for whoever debugs: ``--debug`` (where a command has the flag) or
``OPENMEDIX_DEBUG=1`` re-raises the original exception.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

DEBUG_ENV = "OPENMEDIX_DEBUG"


def debug_enabled(flag: bool = False) -> bool:
    """True when the command's --debug flag is given or OPENMEDIX_DEBUG is set to 1 / true / yes."""
    return flag or os.environ.get(DEBUG_ENV, "").strip().lower() in ("1", "true", "yes")


def one_line(text: object) -> str:
    """The message on one line (library messages often span several); an exception without a
    message gives its type's name."""
    return " ".join(str(text).split()) or (type(text).__name__ if isinstance(text, BaseException) else "")


@contextlib.contextmanager
def user_errors(prefix: str, *types: type[BaseException], debug: bool = False) -> Iterator[None]:
    """Exit with ``prefix: message`` on one line when one of ``types`` is raised (unless debugging)."""
    try:
        yield
    except types as e:
        if debug_enabled(debug):
            raise
        raise SystemExit(f"{prefix}: {one_line(e)}") from None
