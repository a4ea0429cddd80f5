"""Typed parameter dataclasses in the PECOS style: every stage's settings are one dataclass that
can dump a full JSON skeleton, load one back strictly (unknown keys are errors), and be saved
beside a run's results as its resolved config."""

from __future__ import annotations

import dataclasses
import json
import typing
from pathlib import Path
from typing import Any, TypeVar

from typing_extensions import Self

from lever.utils.atomic import write_json_atomic

P = TypeVar("P", bound="Params")


class ParamsError(ValueError):
    """A parameter file or dict does not match the dataclass it is loaded into."""


def field(default: Any = dataclasses.MISSING, *, help: str, choices: tuple | None = None,
          parse: Any = None, **kwargs: Any) -> Any:
    """A dataclass field that documents itself: ``help`` (and ``choices``, or ``parse`` for a
    value the annotation cannot) become its command-line flag (:func:`add_arguments`)."""
    metadata = {"help": help, "choices": choices, "parse": parse}
    if default is dataclasses.MISSING:
        return dataclasses.field(metadata=metadata, **kwargs)
    return dataclasses.field(default=default, metadata=metadata, **kwargs)


@dataclasses.dataclass
class Params:
    """Base class: subclass with ``@dataclasses.dataclass`` and typed fields with defaults."""

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            out[f.name] = v.to_dict() if isinstance(v, Params) else _plain(v)
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any], *, source: str = "<dict>") -> Self:
        if not isinstance(d, dict):
            raise ParamsError(f"{source}: expected a JSON object for {cls.__name__}, got {type(d).__name__}")
        hints = typing.get_type_hints(cls)
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ParamsError(
                f"{source}: unknown field(s) {unknown} for {cls.__name__}; expected a subset of {sorted(names)}"
            )
        kwargs = {}
        for key, value in d.items():
            hint = hints.get(key)
            if isinstance(hint, type) and issubclass(hint, Params) and isinstance(value, dict):
                value = hint.from_dict(value, source=f"{source}.{key}")
            kwargs[key] = value
        return cls(**kwargs)

    def validate(self) -> Self:
        """Check the values (the types are the annotations'); subclasses with rules override it
        and raise :class:`ParamsError` naming the field and what was expected."""
        return self

    @classmethod
    def skeleton(cls) -> str:
        """A full JSON config with every default filled in, ready to edit."""
        return json.dumps(cls().to_dict(), indent=2, sort_keys=True)

    @classmethod
    def load(cls, path: str | Path) -> Self:
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ParamsError(f"{path}: parameter file not found") from None
        except json.JSONDecodeError as e:
            raise ParamsError(f"{path}: line {e.lineno}: not valid JSON ({e.msg})") from None
        return cls.from_dict(data, source=str(path))

    def save(self, path: str | Path) -> None:
        write_json_atomic(path, self.to_dict())

    def replace(self, **changes: Any) -> Self:
        """Copy with the given fields changed; ``None`` values are ignored (unset CLI flags). A
        dict given for a nested :class:`Params` field changes that part the same way."""
        out = {}
        for key, value in changes.items():
            current = getattr(self, key, None)
            if isinstance(current, Params) and isinstance(value, dict):
                value = current.replace(**value)
            if value is not None:
                out[key] = value
        return dataclasses.replace(self, **out)

    def flat_dict(self) -> dict[str, Any]:
        """:meth:`to_dict` with nested parts spelt as dotted keys (``{"lever.lam": 0.5, ...}``)."""
        out: dict[str, Any] = {}
        for key, value in self.to_dict().items():
            part = getattr(self, key)
            if isinstance(part, Params):
                out.update({f"{key}.{k}": v for k, v in part.flat_dict().items()})
            else:
                out[key] = value
        return out


def _plain(v: Any) -> Any:
    if isinstance(v, Path):
        return str(v)
    if isinstance(v, tuple):
        return list(v)
    return v


def _flag_type(hint: Any) -> Any:
    """``int``, ``float``, ``str`` or ``bool`` of a field annotation (``X | None`` is ``X``)."""
    args = [a for a in typing.get_args(hint) if a is not type(None)] or [hint]
    return args[0] if len(args) == 1 else None


def _nested(hint: Any) -> type[Params] | None:
    return hint if isinstance(hint, type) and issubclass(hint, Params) else None


def _flag_fields(cls: type[Params], skip: tuple[str, ...], prefix: str = ""):
    """``(dotted path, field, annotation)`` of every documented field of ``cls``, descending into
    nested :class:`Params` parts; ``skip`` names dotted paths (a field or a whole part)."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        path = prefix + f.name
        if path in skip:
            continue
        part = _nested(hints[f.name])
        if part is not None:
            yield from _flag_fields(part, skip, path + ".")
        elif "help" in f.metadata:
            yield path, f, hints[f.name]


def add_arguments(parser, cls: type[Params], skip: tuple[str, ...] = ()) -> None:
    """One ``--field-name`` flag per documented field of ``cls`` (see :func:`field`), unset
    (``None``) unless given, so flags override a params file only where they are used. A field of
    a nested part keeps its own name as its flag (``TrainParams.lever.lam`` is ``--lam``), so
    the names of documented fields must be unique across the parts."""
    import argparse

    for path, f, hint in _flag_fields(cls, skip):
        flag, meta = "--" + f.name.replace("_", "-"), f.metadata
        kind = meta["parse"] or _flag_type(hint)
        if kind is bool:
            parser.add_argument(flag, dest=path, action=argparse.BooleanOptionalAction,
                                default=None, help=meta["help"])
        elif kind in (int, float, str) or callable(kind):
            parser.add_argument(flag, dest=path, type=kind, choices=meta["choices"],
                                metavar=None if meta["choices"] else f.name.upper(), help=meta["help"])
        else:
            raise TypeError(f"{cls.__name__}.{path}: no flag type for {hint!r}; pass parse=")


def flag_values(args, cls: type[Params], skip: tuple[str, ...] = ()) -> dict[str, Any]:
    """The values of the flags :func:`add_arguments` made for ``cls`` (``None``: not given),
    nested like ``cls`` (``{"lever": {"lam": 0.3, ...}, ...}``; see :meth:`Params.replace`)."""
    out: dict[str, Any] = {}
    for path, _, _ in _flag_fields(cls, skip):
        *parts, name = path.split(".")
        node = out
        for part in parts:
            node = node.setdefault(part, {})
        node[name] = getattr(args, path)
    return out
