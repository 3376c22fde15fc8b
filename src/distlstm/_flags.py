"""How an error message names the option that fixes it: a CLI flag or a Python argument.

The same validation code serves ``distlstm ...`` and the Python API. A user of the
command line should read ``--column``, a Python user ``column=``; ``cli.main`` runs
every command inside :func:`cli_spelling`, and messages call :func:`option`.
"""

from __future__ import annotations

import contextvars
from collections.abc import Iterator
from contextlib import contextmanager

_CLI = contextvars.ContextVar("distlstm_cli_spelling", default=False)


@contextmanager
def cli_spelling() -> Iterator[None]:
    """Within this block, :func:`option` spells options as command-line flags."""
    token = _CLI.set(True)
    try:
        yield
    finally:
        _CLI.reset(token)


def option(python: str, cli: str) -> str:
    """``cli`` (e.g. ``--column``) under the command line, else ``python=`` (e.g. ``column=``)."""
    return cli if _CLI.get() else f"{python}="


def on_cli() -> bool:
    """True inside :func:`cli_spelling` (messages may then suggest flags with no Python counterpart)."""
    return _CLI.get()


def setting(python: str, cli: str, value: object) -> str:
    """An option with its value as the user wrote it: ``--window 40`` or ``window=40``."""
    return f"{cli} {value}" if _CLI.get() else f"{python}={value!r}"
