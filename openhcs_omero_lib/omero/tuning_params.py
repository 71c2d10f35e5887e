"""The presets' tunable parameters as optional parameters of ``Run_HCS_Pipeline``.

Every parameter a preset declares (:mod:`..pipeline.params`) becomes one optional
dialog parameter, named in the dialog's style (``nuclear_channel`` ->
``Nuclear_Channel``) and grouped under the pipeline choice: a parameter left empty
keeps the pipeline's own value, one that is set applies to the pipeline chosen (a
preset, or a spec file that declares a parameter of that name). Types and bounds are
the steps': a whole number is a ``Long``, a real number a ``Float``, a choice a
``String`` with its values, a channel a ``String`` (its index or its name).
The script checks every value again before anything is read.

Building them reads the presets (YAML, pydantic): about 0.15 s more when the server
parses the script's parameters, which it does once and caches.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

import omero.scripts as scripts
from omero.rtypes import rfloat, rlong, rstring

from openhcs_omero_lib.pipeline.loading import PipelineError, parse_spec, preset_names, preset_text
from openhcs_omero_lib.pipeline.params import ParameterInfo, describe

MAX_CHILDREN = 8
"""Parameters fit under the pipeline choice as ``3.2`` .. ``3.9``: OMERO.web sorts
groupings as text, so ``3.10`` would come before ``3.2``."""


@dataclass(frozen=True)
class DialogParameter:
    info: ParameterInfo
    defaults: dict[str, Any] = field(default_factory=dict)
    """preset name -> its value"""

    @property
    def key(self) -> str:
        return dialog_name(self.info.name)


def dialog_name(name: str) -> str:
    """``nuclear_channel`` -> ``Nuclear_Channel``"""
    return "_".join(word.capitalize() for word in name.split("_"))


def preset_parameters() -> dict[str, DialogParameter]:
    """Every preset's parameters, by name; a name two presets declare differently
    (another kind, bounds or choices) is an error of the presets."""
    found: dict[str, DialogParameter] = {}
    for preset in preset_names():
        for name, info in describe(parse_spec(preset_text(preset), f"preset {preset}")).items():
            known = found.get(name)
            if known is None:
                found[name] = DialogParameter(info, {preset: info.default})
                continue
            if _shape(known.info) != _shape(info):
                raise PipelineError(f"presets declare parameter '{name}' differently: {_shape(known.info)} "
                                    f"and {_shape(info)} ({preset})")
            known.defaults[preset] = info.default
    if len(found) > MAX_CHILDREN:
        raise PipelineError(f"the presets declare {len(found)} parameters; the dialog has room for {MAX_CHILDREN}")
    return found


def _shape(info: ParameterInfo) -> tuple:
    return (info.kind, info.minimum, info.maximum, info.exclusive_minimum, info.exclusive_maximum, info.choices)


def dialog_params(grouping: str) -> list[Any]:
    """The optional dialog parameters, grouped ``<grouping>.2`` onwards (``.1`` is the
    pipeline file)."""
    return [_param(p, f"{grouping}.{i}") for i, p in enumerate(preset_parameters().values(), start=2)]


def _param(p: DialogParameter, grouping: str) -> Any:
    info = p.info
    defaults = sorted(set(map(_text, p.defaults.values())))
    if len(defaults) == 1:
        default = f"default {defaults[0]}"
    else:
        default = "default " + ", ".join(f"{_text(v)} ({preset})" for preset, v in p.defaults.items())
    description = f"{info.description[:1].upper()}{info.description[1:]}; {default}; empty: the pipeline's own."
    common = dict(optional=True, grouping=grouping)
    if info.kind == "channel":
        return scripts.String(p.key, description=f"{description} A channel index (1, 2, ...) or name.", **common)
    if info.kind == "choice":
        # OMERO.web's drop-down has no empty entry of its own and always posts one of
        # the values (omero-web webclient/templates/webclient/scripts/include_param.html):
        # an empty first value, the default, is what leaves the pipeline's own choice.
        return scripts.String(p.key, description=description, default="",
                              values=[rstring("")] + [rstring(str(c)) for c in info.choices], **common)
    bounds = {}
    if info.minimum is not None and not info.exclusive_minimum:
        bounds["min"] = info.minimum
    if info.maximum is not None and not info.exclusive_maximum:
        bounds["max"] = info.maximum
    if info.kind == "integer":
        return scripts.Long(p.key, description=description, **{k: int(v) for k, v in bounds.items()}, **common)
    return scripts.Float(p.key, description=description, **{k: float(v) for k, v in bounds.items()}, **common)


def _text(value: Any) -> str:
    return "none" if value is None else str(value)


def values_from_inputs(inputs: Mapping[str, Any]) -> dict[str, Any]:
    """The tuning the script received: ``{parameter name: value}`` of the dialog
    parameters that were set."""
    out = {}
    for name, param in preset_parameters().items():
        value = inputs.get(param.key)
        if value is None or value == "":
            continue
        if isinstance(value, float):
            # a script's Float travels as a 32-bit float: 1.3 arrives as 1.2999999523
            value = float(f"{value:.7g}")
        out[name] = value
    return out


def inputs_from_values(values: Mapping[str, Any]) -> dict[str, Any]:
    """Script inputs (rtypes) for ``{parameter name: value}``, e.g. from ``launch --set``.
    Only the dialog's parameters can be sent; a value of the wrong type raises
    :class:`PipelineError` (the script checks it against the pipeline)."""
    params = preset_parameters()
    unknown = [k for k in values if k not in params]
    if unknown:
        raise PipelineError(f"the Run_HCS_Pipeline dialog has no parameter {', '.join(map(repr, unknown))}; "
                            f"it has: {', '.join(params)}")
    out = {}
    for name, value in values.items():
        info = params[name].info
        try:
            if info.kind in ("channel", "choice"):
                out[params[name].key] = rstring(str(value))
            elif info.kind == "integer":
                out[params[name].key] = rlong(int(value))
            else:
                out[params[name].key] = rfloat(float(value))
        except (TypeError, ValueError):
            raise PipelineError(f"parameter {name}={value!r}: expected {_an(info.kind)}") from None
    return out


def _an(kind: str) -> str:
    return {"integer": "a whole number", "number": "a number", "choice": "one of its choices"}.get(kind, kind)


__all__ = ["DialogParameter", "dialog_name", "dialog_params", "inputs_from_values", "preset_parameters",
           "values_from_inputs"]
