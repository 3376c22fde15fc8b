"""One line to standard error in one write.

Under ``torchrun`` every rank shares the terminal and Python's standard error may be
unbuffered (``PYTHONUNBUFFERED``), so ``print`` — the text, then the newline, in two
writes — lets two ranks' messages run together on one line.
"""

from __future__ import annotations

import sys
from typing import TextIO


def print_line(text: str, file: TextIO | None = None) -> None:
    """Write ``text`` and its newline to ``file`` (standard error) in one call, and flush."""
    stream = file or sys.stderr
    stream.write(text + "\n")
    stream.flush()
