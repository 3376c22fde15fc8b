"""The package's layers: imports point downwards only (docs/DESIGN.md draws them).

    cli → bench → experiments → modes → runs (the loop) → algorithms (online, es, bptt)
        → network | runtime → models | ops → data

A module may import its own package and any lower layer, never a higher one; the
reproductions never import the benchmarks (the reverse is allowed); only ``runtime/`` and the
torch.distributed transport touch ``torch.distributed`` (everything else talks through
the communicator). The test reads every module's imports with ``ast``, so it fails on
the first upward arrow anyone adds.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import distlstm

ROOT = Path(distlstm.__file__).parent
LAYERS = {
    "cli": 7, "__main__": 7,
    "bench": 6.5,  # benchmarks may call the reproductions' measuring code; a reproduction never imports bench
    "experiments": 6,
    "modes": 5,
    "runs": 4,
    "online": 3, "es": 3, "bptt": 3,
    "network": 2, "runtime": 2,
    "models": 1, "ops": 1,
    "timing": 5,  # side-by-side timing for reproductions and benchmarks (uses runtime.launch)
    "data": 0,
    "native": 0.5,  # building and loading the C++ loops that models and ops use
    "_flags": -1, "_checks": -1, "_argtypes": -1, "_output": -1,  # helpers every layer may use
}
MAY_USE_TORCH_DISTRIBUTED = {"runtime", "network.torch_transport"}


def package_of(module: str) -> str:
    top = module.split(".")[0]
    return "cli" if top.startswith("cli") else top  # cli.py, cli_runs.py, cli_train.py: the command line


def modules() -> list[tuple[str, Path]]:
    out = []
    for path in sorted(ROOT.rglob("*.py")):
        rel = path.relative_to(ROOT).with_suffix("")
        parts = [p for p in rel.parts if p != "__init__"]
        if parts:
            out.append((".".join(parts), path))
    return out


def imports(module: str, path: Path) -> list[str]:
    """Every module imported by ``path`` (relative imports resolved), without the ``distlstm.`` prefix for ours."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = []
    package = module.split(".")[:-1] if path.name != "__init__.py" else module.split(".")
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                found.append("distlstm." + ".".join([*base, *([node.module] if node.module else [])]))
            elif node.module:
                found.append(node.module)
                found += [f"{node.module}.{a.name}" for a in node.names if node.module == "torch"]
    return found


ALL = modules()


def test_every_module_has_a_layer():
    missing = sorted({package_of(m) for m, _ in ALL} - set(LAYERS))
    assert not missing, f"give these packages a layer in tests/test_layers.py and docs/DESIGN.md: {missing}"


@pytest.mark.parametrize(("module", "path"), ALL, ids=[m for m, _ in ALL])
def test_imports_point_downwards(module, path):
    mine = package_of(module)
    bad = []
    for name in imports(module, path):
        if name.startswith("distlstm."):
            other = package_of(name[len("distlstm."):])
            if other == mine or other not in LAYERS:
                continue
            upward = LAYERS[other] > LAYERS[mine]
            sideways = LAYERS[other] == LAYERS[mine] and {mine, other} not in ({"network", "runtime"},
                                                                             {"models", "ops"})
            if upward or sideways:
                bad.append(f"{name} ({other}, layer {LAYERS[other]})")
        elif name.startswith(("torch.distributed", "torch.nn.parallel")) and not any(
                module == allowed or module.startswith(allowed + ".") for allowed in MAY_USE_TORCH_DISTRIBUTED):
            bad.append(f"{name} (talk through runtime.comm's Communicator)")
    assert not bad, f"{module} (layer {LAYERS[mine]}) imports {bad}"
