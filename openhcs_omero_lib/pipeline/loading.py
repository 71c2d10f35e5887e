"""Reading pipeline specs from YAML/JSON text, with errors that name key and line."""

from __future__ import annotations

import re
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from openhcs_omero_lib.pipeline.spec import STEP_TYPES, PipelineSpec


class PipelineError(ValueError):
    """A pipeline spec that cannot be used; the message is one line for the user."""


def _node_at(root: yaml.Node, loc: tuple[Any, ...]) -> yaml.Node:
    """The deepest YAML node along a pydantic error location."""
    node = root
    for part in loc:
        if isinstance(node, yaml.MappingNode) and isinstance(part, str):
            match = next((v for k, v in node.value if getattr(k, "value", None) == part), None)
            if match is None and part in STEP_TYPES:
                continue  # pydantic names the union member (e.g. 'gaussian'); not a key
            if match is None:
                # An unexpected key: point at the key itself.
                key = next((k for k, _ in node.value if getattr(k, "value", None) == part), None)
                return key or node
            node = match
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
        else:
            # pydantic adds the union tag (e.g. 'gaussian') to the location; skip it.
            continue
    return node


def _where(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in STEP_TYPES:
            continue
        else:
            out += f".{part}" if out else str(part)
    return out or "(top level)"


def _first_error(exc: ValidationError, root: yaml.Node | None, source: str) -> str:
    err = exc.errors()[0]
    loc = tuple(err["loc"])
    msg = err["msg"]
    if err["type"] == "union_tag_invalid":
        tag = err.get("ctx", {}).get("tag")
        msg = f"unknown step '{tag}'; known steps: {', '.join(sorted(STEP_TYPES))}"
        loc = loc + ("op",)
    elif err["type"] == "extra_forbidden":
        msg = "unknown key"
    msg = msg.removeprefix("Value error, ")
    step = re.search(r"steps\[(\d+)\]", msg)
    if not loc and step:
        loc = ("steps", int(step.group(1)))
    line = ""
    if root is not None:
        line = f":{_node_at(root, loc).start_mark.line + 1}"
    where = _where(loc) if loc else ""
    return f"{source}{line}: {where + ': ' if where and not step else ''}{msg}"


def parse_spec(text: str, source: str = "<pipeline>") -> PipelineSpec:
    """A validated spec from YAML or JSON text; :class:`PipelineError` otherwise."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f":{mark.line + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise PipelineError(f"{source}{line}: not valid YAML/JSON: {problem}") from None
    if not isinstance(data, dict):
        raise PipelineError(f"{source}: a pipeline is a mapping with 'name' and 'steps', "
                            f"got {type(data).__name__}")
    try:
        return PipelineSpec.model_validate(data)
    except ValidationError as exc:
        raise PipelineError(_first_error(exc, root, source)) from None


def spec_from_dict(data: Any, source: str = "<pipeline dict>") -> PipelineSpec:
    """A validated spec from a dict built in Python; :class:`PipelineError` otherwise."""
    if not isinstance(data, dict):
        raise PipelineError(f"{source}: a pipeline is a mapping with 'name' and 'steps', got {type(data).__name__}")
    try:
        return PipelineSpec.model_validate(data)
    except ValidationError as exc:
        raise PipelineError(_first_error(exc, None, source)) from None


def load_spec(path: str | Path) -> PipelineSpec:
    path = Path(path)
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else exc
        raise PipelineError(f"cannot read pipeline {path}: {reason}") from None
    return parse_spec(text, str(path))


def preset_names() -> list[str]:
    from openhcs_omero_lib.pipeline.presets import names

    return names()


def preset_text(name: str) -> str:
    if name not in preset_names():
        raise PipelineError(f"unknown preset '{name}'; presets: {', '.join(preset_names())}")
    return resources.files("openhcs_omero_lib.pipeline.presets").joinpath(f"{name}.yaml").read_text()


def resolve_pipeline(name_or_path: str) -> tuple[PipelineSpec, str]:
    """A preset name or a spec file, and the text it came from."""
    if name_or_path in preset_names():
        text = preset_text(name_or_path)
        return parse_spec(text, f"preset {name_or_path}"), text
    path = Path(name_or_path)
    if not path.exists():
        raise PipelineError(f"'{name_or_path}' is neither a preset ({', '.join(preset_names())}) nor a file")
    return load_spec(path), path.read_text()
