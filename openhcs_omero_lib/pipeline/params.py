"""Tuning a pipeline without writing YAML: the values its ``parameters`` declare.

A spec's ``parameters`` (see :class:`~.spec.Parameter`) name a few fields of its
steps, such as the nuclei preset's ``nuclear_channel`` (the input of its
``subtract_background`` step) or ``min_nucleus_size`` (``remove_small_objects.min_size``).
:func:`tune` sets them and returns a new, fully validated spec. A value is checked
against the step's own schema (the same types, bounds and rules as a spec file), so
a bad value fails here, before any plate is read; a channel given by name is
resolved against the plate's channel names.

The same parameters are the Python API's keyword arguments, the CLI's ``--set
key=value`` and the optional parameters of the ``Run_HCS_Pipeline`` dialog.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from annotated_types import Ge, Gt, Le, Lt
from pydantic import ValidationError

from openhcs_omero_lib.pipeline.loading import PipelineError
from openhcs_omero_lib.pipeline.spec import CHANNEL_RE, STEP_TYPES, PipelineSpec, tunable_type

_CHANNEL_TEXT = re.compile(r"^(?:ch|w)?(\d+)$", re.IGNORECASE)


@dataclass(frozen=True)
class ParameterInfo:
    """What a parameter accepts and what the spec holds now."""

    name: str
    kind: str
    """``channel`` (an index or a name), ``integer``, ``number`` or ``choice``"""
    default: Any
    """the value the spec holds (a channel's index); None: not set"""
    description: str = ""
    minimum: float | None = None
    maximum: float | None = None
    exclusive_minimum: bool = False
    exclusive_maximum: bool = False
    choices: tuple[Any, ...] = ()
    optional: bool = False
    """whether None (no value) is allowed"""
    target: str = ""
    """``op.field`` it sets"""


def describe(spec: PipelineSpec) -> dict[str, ParameterInfo]:
    """The spec's tunable parameters, by name, in declaration order."""
    out = {}
    for name, param in spec.parameters.items():
        step = next(s for s in spec.steps if s.op == param.op)
        model = type(step)
        field = model.model_fields[param.field]
        current = getattr(step, param.field)
        target = f"{param.op}.{param.field}"
        if param.field in model.reads:
            index = int(CHANNEL_RE.match(current).group(1))  # type: ignore[union-attr]
            out[name] = ParameterInfo(name, "channel", index, param.description, minimum=1, target=target)
            continue
        kind, choices = tunable_type(field.annotation)  # type: ignore[misc]
        low = high = None
        low_open = high_open = False
        for bound in field.metadata:
            if isinstance(bound, Ge):
                low = bound.ge
            elif isinstance(bound, Gt):
                low, low_open = bound.gt, True
            elif isinstance(bound, Le):
                high = bound.le
            elif isinstance(bound, Lt):
                high, high_open = bound.lt, True
        out[name] = ParameterInfo(name, kind, current, param.description, low, high, low_open, high_open,
                                  tuple(param.choices or choices), optional=not field.is_required()
                                  and field.default is None, target=target)
    return out


def check_values(spec: PipelineSpec, values: Mapping[str, Any]) -> dict[str, Any]:
    """``values`` checked against the spec's parameters, without a plate: unknown
    names, wrong types and values out of bounds raise :class:`PipelineError`. Returns
    them normalised (numbers from text; a channel as its index, or as a name to be
    resolved against a plate's channels)."""
    infos = describe(spec)
    unknown = [k for k in values if k not in infos]
    if unknown:
        have = ", ".join(infos) if infos else "none"
        raise PipelineError(f"pipeline '{spec.name}' has no parameter {', '.join(map(repr, unknown))}; "
                            f"its parameters: {have}")
    checked = {}
    for name, value in values.items():
        info = infos[name]
        if info.kind == "channel":
            checked[name] = _channel_value(spec, name, value)
        else:
            checked[name] = _step_value(spec, info, name, value)
    return checked


def tune(spec: PipelineSpec, values: Mapping[str, Any],
         channel_names: Sequence[str] | None = None) -> PipelineSpec:
    """A copy of ``spec`` with ``values`` set (``{}``: the spec itself). A channel may
    be given by index (``2``, ``"2"``, ``"ch2"``) or, with the plate's
    ``channel_names``, by name (case-insensitive). Raises :class:`PipelineError`."""
    if not values:
        return spec
    checked = check_values(spec, values)
    data = spec.model_dump()
    for name, value in checked.items():
        param = spec.parameters[name]
        if describe(spec)[name].kind == "channel":
            index = _channel_index(spec, name, value, channel_names)
            value = f"ch{index}"
            if data["load"]["channels"] != "all" and index not in data["load"]["channels"]:
                data["load"]["channels"] = sorted(data["load"]["channels"] + [index])
        for step in data["steps"]:
            if step["op"] == param.op:
                step[param.field] = value
    try:
        return PipelineSpec.model_validate(data)
    except ValidationError as exc:
        message = exc.errors()[0]["msg"].removeprefix("Value error, ")
        settings = ", ".join(f"{k}={v!r}" for k, v in checked.items())
        raise PipelineError(f"pipeline '{spec.name}' with {settings}: {message}") from None


def parse_assignments(items: Sequence[str]) -> dict[str, str]:
    """``["key=value", ...]`` (the CLI's ``--set``) as a dict; raises PipelineError."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise PipelineError(f"--set takes key=value, got {item!r}")
        out[key.strip()] = value.strip()
    return out


def _channel_value(spec: PipelineSpec, name: str, value: Any) -> int | str:
    """A channel's index, or its name (text that is not an index)."""
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise PipelineError(f"pipeline '{spec.name}': parameter {name}={value!r}: a channel is an index "
                            "(1, 2, ...) or a channel name")
    if isinstance(value, str):
        text = value.strip()
        if not text:
            raise PipelineError(f"pipeline '{spec.name}': parameter {name} is empty")
        match = _CHANNEL_TEXT.match(text)
        if not match:
            return text
        value = int(match.group(1))
    if value < 1:
        raise PipelineError(f"pipeline '{spec.name}': parameter {name}={value}: channels are numbered from 1")
    return value


def _channel_index(spec: PipelineSpec, name: str, value: int | str,
                   channel_names: Sequence[str] | None) -> int:
    if channel_names is not None:
        have = ", ".join(f"{i} ({n})" for i, n in enumerate(channel_names, start=1))
        if isinstance(value, int) and value > len(channel_names):
            raise PipelineError(f"pipeline '{spec.name}': parameter {name}={value}: the plate has "
                                f"{len(channel_names)} channel{'s' if len(channel_names) != 1 else ''}: {have}")
    if isinstance(value, int):
        return value
    if channel_names is None:
        raise PipelineError(f"pipeline '{spec.name}': parameter {name}={value!r} names a channel; "
                            "names are looked up on a plate (give the channel's index here)")
    found = [i for i, n in enumerate(channel_names, start=1) if n.lower() == value.lower()]
    if len(found) != 1:
        why = "no channel" if not found else f"{len(found)} channels"
        raise PipelineError(f"pipeline '{spec.name}': parameter {name}={value!r}: the plate has {why} of "
                            f"that name; its channels: {have}")
    return found[0]


def _step_value(spec: PipelineSpec, info: ParameterInfo, name: str, value: Any) -> Any:
    """The value as the step's schema reads it (text becomes a number)."""
    param = spec.parameters[name]
    if isinstance(value, bool):
        raise PipelineError(f"pipeline '{spec.name}': parameter {name}={value!r}: expected "
                            f"{'one of ' + ', '.join(map(str, info.choices)) if info.choices else 'a ' + info.kind}")
    if info.kind == "choice" and isinstance(value, str) and all(isinstance(c, int) for c in info.choices):
        value = int(value) if value.strip().lstrip("-").isdigit() else value
    if info.choices and value not in info.choices:
        raise PipelineError(f"pipeline '{spec.name}': parameter {name}={value!r}: choose one of "
                            f"{', '.join(map(str, info.choices))}")
    step = next(s for s in spec.steps if s.op == param.op)
    model = STEP_TYPES[param.op]
    try:
        checked = model.model_validate({**step.model_dump(), param.field: value})
    except ValidationError as exc:
        error = next((e for e in exc.errors() if e["loc"][:1] == (param.field,)), exc.errors()[0])
        message = error["msg"].removeprefix("Value error, ")
        raise PipelineError(f"pipeline '{spec.name}': parameter {name}={value!r}: {message}") from None
    return getattr(checked, param.field)


__all__ = ["ParameterInfo", "check_values", "describe", "parse_assignments", "tune"]
