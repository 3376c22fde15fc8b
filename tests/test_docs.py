"""Every Python example in the README and the guides runs as written."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ["README.md", "docs/online.md", "docs/es.md", "docs/bptt.md", "docs/lm.md"]
EXAMPLES = [(doc, i, block) for doc in DOCS
            for i, block in enumerate(re.findall(r"```python\n(.*?)```", (ROOT / doc).read_text(), re.S))]


@pytest.mark.parametrize(("doc", "index", "code"), EXAMPLES, ids=[f"{d}#{i}" for d, i, _ in EXAMPLES])
def test_documented_example_runs(doc, index, code):
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert done.returncode == 0, f"{doc} example {index} failed:\n{done.stderr[-2000:]}"


def test_examples_were_found():
    assert {doc for doc, _, _ in EXAMPLES} >= {"README.md", "docs/online.md"}
