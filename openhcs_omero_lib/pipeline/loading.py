"""Reading pipeline specs from YAML/JSON text, with errors that name key and line."""

from __future__ import annotations

import difflib
import re
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from openhcs_omero_lib.pipeline.spec import STEP_TYPES, Load, PipelineSpec

MAX_SPEC_BYTES = 1 << 20
"""A spec is a page of text; anything larger is refused before it is parsed (a
10 MB file would hold the parser for seconds)."""
MAX_DEPTH = 16
"""Nesting a spec may have (a real one needs 4: steps, a step, a list in it)."""
MAX_NODES = 100_000
"""Values a spec may hold once its aliases are expanded (YAML anchors can make a
few lines stand for billions of values)."""


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


def _did_you_mean(word: str, choices) -> str:
    close = difflib.get_close_matches(str(word), list(choices), n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _allowed_keys(loc: tuple[Any, ...]) -> list[str]:
    """Keys the model at ``loc``'s parent accepts (a step's, load's or the spec's)."""
    step = next((part for part in loc if isinstance(part, str) and part in STEP_TYPES), None)
    if step is not None:
        return list(STEP_TYPES[step].model_fields)
    if loc[:1] == ("load",):
        return list(Load.model_fields)
    return list(PipelineSpec.model_fields)


def _first_error(exc: ValidationError, root: yaml.Node | None, source: str) -> str:
    errors = exc.errors()
    # An unknown key explains the "field required" that comes with a misspelling.
    err = next((e for e in errors if e["type"] == "extra_forbidden"), errors[0])
    loc = tuple(err["loc"])
    msg = err["msg"]
    if err["type"] == "union_tag_invalid":
        tag = err.get("ctx", {}).get("tag")
        msg = f"unknown step '{tag}'{_did_you_mean(tag, STEP_TYPES)}; known steps: {', '.join(sorted(STEP_TYPES))}"
        loc = loc + ("op",)
    elif err["type"] == "extra_forbidden":
        msg = f"unknown key{_did_you_mean(loc[-1], _allowed_keys(loc))}"
    elif err["type"] == "string_pattern_mismatch":
        msg = (f"{_shown(err.get('input'))} is not a name: use letters, digits and _, "
               "not starting with a digit")
    msg = msg.removeprefix("Value error, ")
    step = re.search(r"steps\[(\d+)\]", msg)
    if not loc and step:
        loc = ("steps", int(step.group(1)))
    line = ""
    if root is not None:
        line = f":{_node_at(root, loc).start_mark.line + 1}"
    where = _where(loc) if loc else ""
    return f"{source}{line}: {where + ': ' if where and not step else ''}{msg}"


def _shown(value: Any, limit: int = 40) -> str:
    """A value quoted for a one-line message."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 4] + "...'"


def _check_shape(root: yaml.Node, source: str) -> None:
    """Refuse a document nested deeper than :data:`MAX_DEPTH`, holding more than
    :data:`MAX_NODES` values once aliases are expanded, or repeating a key (YAML
    keeps the last, silently). Walks the composed nodes without recursion; an
    alias is the node it names, so a node's expanded size is counted once."""
    sizes: dict[int, int] = {}
    stack: list[tuple[yaml.Node, int, bool]] = [(root, 1, False)]
    while stack:
        node, depth, done = stack.pop()
        if depth > MAX_DEPTH:
            raise PipelineError(f"{source}:{node.start_mark.line + 1}: nested more than {MAX_DEPTH} levels deep")
        if isinstance(node, yaml.MappingNode):
            children = [n for pair in node.value for n in pair]
            if not done:
                keys = [k.value for k, _ in node.value if isinstance(k, yaml.ScalarNode)]
                twice = next((k for i, k in enumerate(keys) if k in keys[:i]), None)
                if twice is not None:
                    raise PipelineError(f"{source}:{node.start_mark.line + 1}: key '{twice}' is given twice")
        elif isinstance(node, yaml.SequenceNode):
            children = list(node.value)
        else:
            sizes[id(node)] = 1
            continue
        if done:
            sizes[id(node)] = 1 + sum(sizes[id(c)] for c in children)
            if sizes[id(node)] > MAX_NODES:
                raise PipelineError(f"{source}: more than {MAX_NODES} values once its aliases (*name) are "
                                    "expanded; a pipeline spec needs no aliases")
        elif id(node) not in sizes:
            stack.append((node, depth, True))
            stack.extend((c, depth + 1, False) for c in children if id(c) not in sizes)


def parse_spec(text: str, source: str = "<pipeline>") -> PipelineSpec:
    """A validated spec from YAML or JSON text; :class:`PipelineError` otherwise."""
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > MAX_SPEC_BYTES:
        raise PipelineError(f"{source}: {size} bytes; a pipeline spec is at most {MAX_SPEC_BYTES} bytes")
    if not text.strip():
        raise PipelineError(f"{source}: the pipeline spec is empty")
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        if root is not None:
            _check_shape(root, source)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f":{mark.line + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise PipelineError(f"{source}{line}: not valid YAML/JSON: {problem}") from None
    except RecursionError:  # nesting deep enough to exhaust the parser before the check
        raise PipelineError(f"{source}: nested more than {MAX_DEPTH} levels deep") from None
    if not isinstance(data, dict):
        what = {type(None): "nothing", list: "a list", str: "a string"}.get(type(data), type(data).__name__)
        raise PipelineError(f"{source}: a pipeline is a mapping with 'name' and 'steps', got {what}")
    try:
        return PipelineSpec.model_validate(data)
    except ValidationError as exc:
        # The node tree, for the line an error is on, only when there is an error.
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        raise PipelineError(_first_error(exc, root, source)) from None


def spec_from_dict(data: Any, source: str = "<pipeline dict>") -> PipelineSpec:
    """A validated spec from a dict built in Python; :class:`PipelineError` otherwise."""
    if not isinstance(data, dict):
        raise PipelineError(f"{source}: a pipeline is a mapping with 'name' and 'steps', got {type(data).__name__}")
    try:
        return PipelineSpec.model_validate(data)
    except ValidationError as exc:
        raise PipelineError(_first_error(exc, None, source)) from None


def read_spec_text(path: str | Path) -> str:
    """A spec file's text: at most :data:`MAX_SPEC_BYTES`, UTF-8."""
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            data = fh.read(MAX_SPEC_BYTES + 1)
    except OSError as exc:
        raise PipelineError(f"cannot read pipeline {path}: {exc.strerror}") from None
    if len(data) > MAX_SPEC_BYTES:
        raise PipelineError(f"{path}: more than {MAX_SPEC_BYTES} bytes; a pipeline spec is at most "
                            f"{MAX_SPEC_BYTES} bytes")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise PipelineError(f"{path}: not a text file (a pipeline spec is YAML or JSON in UTF-8)") from None


def load_spec(path: str | Path) -> PipelineSpec:
    return parse_spec(read_spec_text(path), str(path))


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
    text = read_spec_text(path)
    return parse_spec(text, str(path)), text
