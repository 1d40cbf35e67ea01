"""The project's error type, user errors on the command line, and logging set-up for entry points.

Library code raises ``OpenMedixError`` subclasses (never ``SystemExit``: ``except Exception`` must
see them) and logs with ``logging``. Only an entry point's ``main`` turns an error into an exit code
and one line: a missing column, a typo in a recipe or a missing input is the user's to fix, and a
traceback buries the line that says how. Whoever debugs still gets the traceback: ``--debug``
(where a command has the flag) or ``OPENMEDIX_DEBUG=1`` re-raises the original exception.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator

DEBUG_ENV = "OPENMEDIX_DEBUG"


class OpenMedixError(Exception):
    """Base of every error this project raises on purpose: bad input, a bad recipe, a missing file.

    Subclasses also derive from the builtin that fits (``ValueError``, ``FileNotFoundError``...),
    so callers that catch those keep working."""


# The project's top-level packages (and ``__main__``, the module run with ``python -m``).
PACKAGES = (
    "rewards",
    "data_prep",
    "evaluation",
    "training",
    "recipes",
    "demo",
    "benchmarks",
    "vllm_tools",
    "__main__",
)


def setup_logging(main_process: bool = True, level: int = logging.INFO) -> None:
    """The project's messages to stderr: ``level`` on the main process, WARNING on the others (on 8
    ranks one copy of each message, as open-r1 does). Other libraries stay at WARNING (an HTTP client
    at INFO logs every request). Progress bars are not logging and are unaffected."""
    logging.basicConfig(format="%(message)s", level=logging.WARNING)  # no-op where handlers exist
    for name in PACKAGES:
        logging.getLogger(name).setLevel(level if main_process else logging.WARNING)


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
