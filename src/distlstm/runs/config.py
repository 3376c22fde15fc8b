"""Configurations: typed dataclasses whose fields declare their own command-line flags.

A run's configuration is a few *sections*, each a frozen dataclass (the loop's
:class:`LoopConfig`, a mode's own config). A field declares its flag next to its
default with :func:`flag`; :func:`add_section_arguments` turns a section into argparse
options and :func:`resolve_sections` builds the sections back with this precedence:

    dataclass default  <  the mode's default  <  --config FILE / the run's config.json  <  flags given

Because argparse defaults are suppressed, "a flag given" is exact: ``--steps 100`` given
on a resumed run is a change, an absent flag is not. ``config.json`` holds every section
as ``{"section": {field: value}}`` (tuples as lists); :func:`config_differences` lists
what a resumed run would change.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import re
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from distlstm._flags import option

CONFIG_FORMAT = 1


def flag(default: Any = dataclasses.MISSING, help: str = "", *, cli: str | None = None,
         type: Callable[[str], Any] | None = None, choices: Iterable[Any] | None = None,
         metavar: str | None = None, default_factory: Callable[[], Any] | None = None,
         negate: str | None = None, repeat: bool = False, path: bool = False) -> Any:
    """A dataclass field with its command-line flag.

    ``cli`` overrides the flag's name (default ``--field-name``); ``type`` parses the
    text (default: from the annotation); a ``bool`` field defaulting to True becomes
    ``--no-NAME`` (or ``negate``). ``cli=""`` keeps a field off the command line.
    ``repeat`` makes a tuple field's flag repeatable, each use adding one item.
    ``path`` marks a file name: stored absolute, so a run resumes from any directory.
    """
    meta = {"help": help, "cli": cli, "type": type, "choices": tuple(choices) if choices is not None else None,
            "metavar": metavar, "negate": negate, "repeat": repeat, "path": path}
    if default_factory is not None:
        return field(default_factory=default_factory, metadata=meta)
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class LoopConfig:
    """What the run loop decides, the same for every mode (a mode may change the defaults)."""

    steps: int = flag(1000, "steps to run: one online step over all nodes, one ES generation, one minibatch, "
                            "or one full-batch optimizer step")
    seconds: float | None = flag(None, "stop after this much training time (evaluation and checkpoints not "
                                       "counted), whichever of --steps and --seconds comes first")
    stop_at: float | None = flag(None, "stop once the evaluation metric is at or below this")
    eval_every: int = flag(100, "evaluate (and write a metrics row with the evaluation) every N steps")
    checkpoint_every: int = flag(100, "write checkpoint.pt every N steps (and always at the end)")
    seed: int = flag(0, "run seed: initial weights, data order, noise; the same seed gives the same numbers")
    progress: bool = flag(True, "hide the progress bar", negate="--no-progress")
    device: str = flag("auto", "where the run computes: auto (the GPU where there is one and the mode can use it), "
                               "cpu, or cuda (train's minibatch optimizers only: online, es and the full-batch "
                               "optimizers keep θ on the CPU; an error without a GPU)",
                       choices=("auto", "cpu", "cuda"))
    tensorboard: bool = flag(False, "also write TensorBoard event files into the run folder (needs the "
                                    "tensorboard package: pip install 'distlstm[tensorboard]')")

    def __post_init__(self) -> None:
        for name in ("steps", "eval_every", "checkpoint_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{option(name, '--' + name.replace('_', '-'))} must be at least 1, got "
                                 f"{getattr(self, name)}")
        if self.seconds is not None and not self.seconds > 0:
            raise ValueError(f"{option('seconds', '--seconds')} must be positive, got {self.seconds}")
        if not 0 <= self.seed < SEED_LIMIT:  # derived seeds (seed·1 000 003 + step) must stay within 64 bits
            raise ValueError(f"{option('seed', '--seed')} must be a whole number from 0 to {SEED_LIMIT - 1}, "
                             f"got {self.seed}")
        if self.stop_at is not None and not math.isfinite(self.stop_at):
            raise ValueError(f"{option('stop_at', '--stop-at')} must be a finite number, got {self.stop_at}")


SEED_LIMIT = 2**32


# What a resumed run may change: budgets and how it reports, never what it computes.
SAFE_TO_CHANGE = frozenset({"loop.steps", "loop.seconds", "loop.stop_at", "loop.eval_every",
                            "loop.checkpoint_every", "loop.progress", "loop.tensorboard", "loop.device"})


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _base_type(annotation: Any) -> tuple[Any, bool]:
    """(the type without ``| None``, whether None is allowed)."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return (args[0] if len(args) == 1 else annotation), True
    return annotation, False


def flag_name(f: dataclasses.Field[Any]) -> str | None:
    """The flag of a field (``--eval-every``), or None for a field kept off the command line."""
    cli = f.metadata.get("cli")
    if cli == "":
        return None
    return cli or "--" + f.name.replace("_", "-")


def _dest(section: str, name: str) -> str:
    return f"{section}.{name}"


def add_section_arguments(parser: argparse.ArgumentParser | argparse._ArgumentGroup, section: str, cls: type,
                          defaults: Mapping[str, Any] | None = None) -> None:
    """Add one option per field of ``cls``; parsed values land under ``section.field`` (absent when not given)."""
    defaults = {**{f.name: _default(f) for f in fields(cls)}, **(defaults or {})}
    hints = _hints(cls)
    for f in fields(cls):
        name = flag_name(f)
        if name is None:
            continue
        meta = f.metadata
        kind, optional = _base_type(hints[f.name])
        shown = defaults[f.name]
        text = meta.get("help", "")
        dest = _dest(section, f.name)
        if kind is bool:
            if shown is True:
                parser.add_argument(meta.get("negate") or "--no-" + f.name.replace("_", "-"), dest=dest,
                                    action="store_false", default=argparse.SUPPRESS, help=text)
            else:
                parser.add_argument(name, dest=dest, action="store_true", default=argparse.SUPPRESS, help=text)
            continue
        parse = meta.get("type") or (kind if kind in (int, float, str) else str)
        if optional:
            parse = _optional(parse)
        if shown is not None and shown != () and not isinstance(shown, dict):
            text = f"{text} (default: {_show(shown)})"
        repeat: dict[str, Any] = {"action": "append"} if meta.get("repeat") else {}
        parser.add_argument(name, dest=dest, type=parse, choices=meta.get("choices"), default=argparse.SUPPRESS,
                            metavar=meta.get("metavar") or (None if meta.get("choices") else f.name.upper()),
                            help=text, **repeat)


def _optional(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    def parse_or_none(text: str) -> Any:
        return None if text.strip().lower() in ("none", "off") else parse(text)

    parse_or_none.__name__ = getattr(parse, "__name__", "value")
    return parse_or_none


class Described(int):
    """An int default that ``--help`` shows as a phrase (``--steps``' "the whole stream", not 1000000000)."""

    text: str

    def __new__(cls, value: int, text: str) -> Described:
        out = super().__new__(cls, value)
        out.text = text
        return out


def _show(value: Any) -> str:
    if isinstance(value, Described):
        return value.text
    if isinstance(value, tuple | list):
        return ",".join(str(v) for v in value)
    return str(value)


def _default(f: dataclasses.Field[Any]) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None


def given_values(args: argparse.Namespace, section: str) -> dict[str, Any]:
    """The flags of ``section`` the user actually gave, by field name."""
    prefix = section + "."
    return {k[len(prefix):]: tuple(v) if isinstance(v, list) else v  # a repeated flag's items
            for k, v in vars(args).items() if k.startswith(prefix)}


def to_jsonable(value: Any) -> Any:
    """A section (or value) as plain JSON data: dataclasses as dicts, tuples as lists."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_jsonable(getattr(value, f.name)) for f in fields(value)}
    if isinstance(value, tuple | list):
        return [to_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    return value


def from_jsonable(cls: type, values: Mapping[str, Any], where: str) -> dict[str, Any]:
    """Field values for ``cls`` from JSON data: lists back to tuples; unknown keys are an error naming ``where``."""
    names = {f.name: f for f in fields(cls)}
    unknown = sorted(set(values) - set(names))
    if unknown:
        raise ValueError(f"{where}: unknown setting(s) {unknown}; known: {sorted(names)}")
    hints = _hints(cls)
    out = {}
    for k, v in values.items():
        kind, _ = _base_type(hints[k])
        out[k] = _tuples(v) if isinstance(v, list) and typing.get_origin(kind) is tuple else v
    return out


def _tuples(value: Any) -> Any:
    return tuple(_tuples(v) for v in value) if isinstance(value, list) else value


def build_section(cls: type, *layers: Mapping[str, Any]) -> Any:
    """``cls`` from its defaults overridden by each mapping of ``layers`` in turn."""
    merged: dict[str, Any] = {}
    for layer in layers:
        merged.update(layer)
    return cls(**merged)


def resolve_sections(sections: Mapping[str, type], args: argparse.Namespace, *,
                     mode_defaults: Mapping[str, Mapping[str, Any]] | None = None,
                     stored: Mapping[str, Mapping[str, Any]] | None = None, where: str = "config") -> dict[str, Any]:
    """Every section of a command: defaults < mode defaults < ``stored`` (a config file) < flags given."""
    stored = stored or {}
    unknown = sorted(set(stored) - set(sections) - {"format", "mode", "command"})
    if unknown:
        raise ValueError(f"{where}: unknown section(s) {unknown}; expected {sorted(sections)}")
    out = {}
    for name, cls in sections.items():
        plain = {k: int(v) if isinstance(v, Described) else v for k, v in (mode_defaults or {}).get(name, {}).items()}
        from_file = _absolute(cls, from_jsonable(cls, stored.get(name, {}), f"{where} [{name}]"))
        given = _absolute(cls, given_values(args, name))
        try:
            out[name] = build_section(cls, plain, from_file, given)
        except (ValueError, TypeError) as err:
            note = file_source_note(str(err), name, {k: v for k, v in from_file.items() if k not in given}, where)
            if note is None:
                raise
            raise type(err)(f"{err}; {note}") from None
    return out


def file_source_note(message: str, section: str, from_file: Mapping[str, Any], where: str) -> str | None:
    """``'c.json sets it: "online": {"hidden": -3}'`` when an error ``message`` names a setting (by field or by
    flag, e.g. ``walk_steps`` or ``--walk-steps``) whose value came from the config file ``where``; else None.

    A check that says "fix --hidden" cannot know the value was not given as that flag.
    """
    named = {}
    for key, value in from_file.items():
        flag = "--" + key.replace("_", "-")
        if re.search(rf"(?<![\w-]){re.escape(key)}(?![\w-])", message) or re.search(
                rf"{re.escape(flag)}(?![\w-])", message):
            named[key] = value
    if not named:
        return None
    return f'{where} sets it: "{section}": {json.dumps(named, default=repr, ensure_ascii=False)}'


def _absolute(cls: type, values: Mapping[str, Any]) -> dict[str, Any]:
    """File names of ``path`` fields made absolute (relative to the working directory)."""
    paths = {f.name for f in fields(cls) if f.metadata.get("path")}
    return {k: str(Path(v).expanduser().resolve()) if k in paths and isinstance(v, str) and v else v
            for k, v in values.items()}


def config_document(command: str, mode: str, sections: Mapping[str, Any]) -> dict[str, Any]:
    """What ``config.json`` holds: the format, the command and mode, and every resolved section."""
    return {"format": CONFIG_FORMAT, "command": command, "mode": mode,
            **{name: to_jsonable(section) for name, section in sections.items()}}


def read_config_file(path: str | Path) -> dict[str, Any]:
    """A config file (``config.json`` of a run, or one written by hand in the same shape)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no config file at {path}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON: {err}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object of sections, got {type(data).__name__}")
    if data.get("format", CONFIG_FORMAT) > CONFIG_FORMAT:
        raise ValueError(f"{path} has config format {data['format']}, newer than this distlstm reads "
                         f"({CONFIG_FORMAT}); upgrade distlstm")
    return data


def config_differences(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, tuple[Any, Any]]:
    """``section.field`` → (old, new) for every setting that differs between two config documents.

    A setting that ``old`` does not have (a flag added after that run was written) is no
    difference: the run was made with the behaviour the new setting's default keeps.
    """
    diff = {}
    for section, values in new.items():
        if not isinstance(values, dict):
            continue
        before = old.get(section, {})
        for k, v in values.items():
            if k in before and before[k] != v:
                diff[f"{section}.{k}"] = (before.get(k), v)
    return diff
