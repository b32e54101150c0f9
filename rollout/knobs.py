"""Knobs: the app setting behind a dataclass field, what it means, and its bounds, declared once.

A field declared as ``name: int = knob(default, "NAME", "meaning", minimum=...)`` is the one place
for that setting's default, bounds and description: ``check_knobs`` validates the dataclass against
the bounds, ``rollout.settings`` parses the app setting by the field's type and bounds, and
README.md's configuration table is generated from the same metadata (``python -m rollout.settings
--update-readme``; docs/design.md, "Configuration").
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import Any, TypeVar

_KEY = "knob"
T = TypeVar("T")


@dataclass(frozen=True)
class Knob:
    """An app setting that sets one dataclass field.

    ``minimum``/``maximum`` bound the value; ``zero_means`` allows 0 as well (below ``minimum`` or
    not) and says what 0 does; ``choices`` lists the values of a text knob (compared without case);
    ``percent`` marks the field that a setting shared by two fields sets when its value ends in ``%``.
    """

    setting: str
    meaning: str
    minimum: float | None = None
    maximum: float | None = None
    zero_means: str | None = None
    choices: tuple[str, ...] = ()
    percent: bool = False


def knob(default: T, setting: str, meaning: str, **bounds: Any) -> T:
    """A dataclass field with this default, declared as the knob ``setting``; ``bounds`` are the other
    fields of ``Knob``. (It runs when a class is defined, where mutation testing cannot reach it: the
    tests of the settings table and of the loader check what it declares.)"""
    return field(default=default, metadata={_KEY: Knob(setting, meaning, **bounds)})  # pragma: no mutate


@dataclass(frozen=True)
class KnobField:
    """A knob with the field it sets: the field's name, Python type name and default."""

    name: str
    type: str
    default: Any
    knob: Knob


def knob_fields(cls: type[Any]) -> tuple[KnobField, ...]:
    """The knob-carrying fields of a dataclass, in declaration order."""
    out = []
    for f in fields(cls):
        declared = f.metadata.get(_KEY)
        if isinstance(declared, Knob):
            out.append(KnobField(f.name, str(f.type), f.default, declared))
    return tuple(out)


def bound_problem(name: str, value: Any, k: Knob) -> str | None:
    """Why ``value`` is out of the knob's bounds (``name`` is what the message calls it), or None."""
    if k.choices:
        return None if value in k.choices else f"{name} must be one of {', '.join(k.choices)}"
    if isinstance(value, float) and not math.isfinite(value):
        return f"{name} must be a finite number"  # NaN passes every comparison below
    if k.zero_means is not None and value == 0:
        return None
    low = k.minimum
    high = k.maximum
    if low is not None and high is not None and not low <= value <= high:
        return f"{name} must be between {low:g} and {high:g}"
    if low is not None and value < low:
        if low == 0:
            return f"{name} must not be negative" + (f" (0 = {k.zero_means})" if k.zero_means else "")
        if k.zero_means is not None:
            return f"{name} must be 0 ({k.zero_means}) or at least {low:g}"
        return f"{name} must be at least {low:g}"
    if high is not None and value > high:
        return f"{name} must be at most {high:g}"
    return None


def check_knobs(instance: Any) -> None:
    """Raise ``ValueError`` naming every field of ``instance`` outside its knob's bounds."""
    problems = [
        problem
        for kf in knob_fields(type(instance))
        if (problem := bound_problem(kf.name, getattr(instance, kf.name), kf.knob)) is not None
    ]
    if problems:
        raise ValueError("; ".join(problems))
