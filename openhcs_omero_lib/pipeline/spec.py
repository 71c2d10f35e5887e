"""Pipeline specs: declarative, validated lists of whitelisted steps.

A spec (YAML or JSON) names a pipeline, says how each unit of work (one site at one
timepoint, every channel) is loaded, and lists steps. Each step is one operation of
:mod:`.ops` with typed parameters, reading named values and writing one. Values are
of three kinds: ``image`` (float planes; channels arrive as ``ch1``, ``ch2``, ...),
``mask`` (booleans) and ``labels`` (objects). Measurement steps add columns to the
unit's result row. A spec is data: nothing in it is ever executed as code.

Grouping follows OpenHCS's components: a unit groups one (well, site, timepoint);
channel and z vary inside it. With ``load.z: stack`` channels arrive as z-stacks and
every image step applies plane by plane until a ``project_z`` step reduces them.

A spec may declare ``parameters``: a few named values users can tune without editing
it (a preset's nuclear channel, object sizes, ...), each the field of a step; their
types and bounds are the step's own (see :mod:`.params`).
"""

from __future__ import annotations

import re
import types
import typing
from typing import Annotated, Any, ClassVar, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, model_validator

_NAME = r"^[A-Za-z_][A-Za-z0-9_]*$"
Name = Annotated[str, Field(pattern=_NAME, description="a value name: letters, digits, _")]
CHANNEL_RE = re.compile(r"^ch(\d+)$")
MAX_PIXELS = 1 << 31
"""Largest object or area a step can be given, in pixels (beyond any plane)."""


class _Step(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    reads: ClassVar[dict[str, str]] = {}
    """field name -> kind of value it must name"""
    writes: ClassVar[str | None] = None
    """kind of value written to ``output``"""

    def value_refs(self) -> list[tuple[str, str, str]]:
        """``(field, value name, kind)`` of everything the step reads."""
        found = []
        for fld, kind in self.reads.items():
            value = getattr(self, fld)
            for name in (value if isinstance(value, (list, tuple)) else [value]):
                if name is not None and name != "all":
                    found.append((fld, name, kind))
        return found


class _ImageToImage(_Step):
    reads: ClassVar[dict[str, str]] = {"input": "image"}
    writes: ClassVar[str | None] = "image"
    input: Name
    output: Name


class ProjectZ(_ImageToImage):
    """Reduce a z-stack to one plane."""
    op: Literal["project_z"]
    method: Literal["max", "mean", "sum"] = "max"


class Gaussian(_ImageToImage):
    """Gaussian smoothing."""
    op: Literal["gaussian"]
    sigma: float = Field(gt=0, le=50, description="standard deviation in pixels")


class Median(_ImageToImage):
    """Median filter over a disk."""
    op: Literal["median"]
    radius: int = Field(ge=1, le=25)


class SubtractBackground(_ImageToImage):
    """Remove uneven illumination and background."""
    op: Literal["subtract_background"]
    radius: float = Field(gt=0, le=500, description="larger than the objects, in pixels")
    method: Literal["gaussian", "tophat"] = "gaussian"


class Threshold(_Step):
    """Image to foreground mask."""
    reads: ClassVar[dict[str, str]] = {"input": "image"}
    writes: ClassVar[str | None] = "mask"
    op: Literal["threshold"]
    input: Name
    output: Name
    method: Literal["otsu", "li", "triangle", "yen", "mean", "manual"] = "otsu"
    value: float | None = Field(default=None, allow_inf_nan=False, description="the level, for method: manual")
    factor: float = Field(default=1.0, gt=0, le=10, description="multiplies the computed level")

    @model_validator(mode="after")
    def _manual_needs_value(self) -> Threshold:
        if (self.method == "manual") != (self.value is not None):
            raise ValueError("'value' is required with method: manual and only then")
        return self


class _MaskToMask(_Step):
    reads: ClassVar[dict[str, str]] = {"input": "mask"}
    writes: ClassVar[str | None] = "mask"
    input: Name
    output: Name


class FillHoles(_MaskToMask):
    op: Literal["fill_holes"]


class OpenMask(_MaskToMask):
    """Morphological opening: removes thin protrusions and specks."""
    op: Literal["open"]
    radius: int = Field(ge=1, le=25)


class RemoveSmallObjects(_MaskToMask):
    op: Literal["remove_small_objects"]
    min_size: int = Field(ge=1, le=MAX_PIXELS, description="pixels")


class Label(_Step):
    """Connected components of a mask."""
    reads: ClassVar[dict[str, str]] = {"input": "mask"}
    writes: ClassVar[str | None] = "labels"
    op: Literal["label"]
    input: Name
    output: Name
    connectivity: Literal[1, 2] = 1


class WatershedSplit(_Step):
    """Objects of a mask with touching round objects split along their necks;
    seeds from the distance to the background, weighted by ``intensity`` if given."""
    reads: ClassVar[dict[str, str]] = {"input": "mask", "intensity": "image"}
    writes: ClassVar[str | None] = "labels"
    op: Literal["watershed_split"]
    input: Name
    output: Name
    intensity: Name | None = Field(default=None, description="image whose brightness marks object centres")
    min_distance: int = Field(default=4, ge=1, le=100, description="pixels between object centres")
    smoothing: float = Field(default=0.0, ge=0, le=10)


class _LabelsToLabels(_Step):
    reads: ClassVar[dict[str, str]] = {"input": "labels"}
    writes: ClassVar[str | None] = "labels"
    input: Name
    output: Name


class FilterObjects(_LabelsToLabels):
    op: Literal["filter_objects"]
    min_area: int = Field(default=0, ge=0, le=MAX_PIXELS)
    max_area: int | None = Field(default=None, ge=1, le=MAX_PIXELS)
    exclude_border: bool = False


class ExpandLabels(_LabelsToLabels):
    """Grow each object by ``distance`` pixels without merging (cell bodies)."""
    op: Literal["expand_labels"]
    distance: float = Field(gt=0, le=100)


class Ring(_LabelsToLabels):
    """A band around each object (cytoplasm next to a nucleus)."""
    op: Literal["ring"]
    distance: float = Field(gt=0, le=100)


class MeasureObjects(_Step):
    """Count objects and average their area and mean intensities.

    Adds ``<prefix>_count``, ``<prefix>_area_mean`` and, per intensity image,
    ``<prefix>_<image>_intensity_mean`` (the mean over objects of each object's
    mean intensity). ``intensity: all`` measures every loaded channel."""
    reads: ClassVar[dict[str, str]] = {"labels": "labels", "intensity": "image"}
    op: Literal["measure_objects"]
    labels: Name
    intensity: list[Name] | Literal["all"] = Field(default_factory=list)
    prefix: Name | None = None

    @property
    def column_prefix(self) -> str:
        return self.prefix or self.labels


class MeasureImage(_Step):
    """Whole-image mean and integrated intensity, inside ``mask`` when given."""
    reads: ClassVar[dict[str, str]] = {"images": "image", "mask": "mask"}
    op: Literal["measure_image"]
    images: list[Name] = Field(min_length=1)
    mask: Name | None = None


class Ratio(_Step):
    """A new column: ``numerator / denominator`` of two measured columns."""
    op: Literal["ratio"]
    numerator: Name
    denominator: Name
    output: Name


Step = Annotated[
    ProjectZ | Gaussian | Median | SubtractBackground | Threshold | FillHoles | OpenMask | RemoveSmallObjects
    | Label | WatershedSplit | FilterObjects | ExpandLabels | Ring | MeasureObjects | MeasureImage | Ratio,
    Field(discriminator="op"),
]
STEP_TYPES: dict[str, type[_Step]] = {
    t.model_fields["op"].annotation.__args__[0]: t  # type: ignore[union-attr]
    for t in Step.__origin__.__args__  # type: ignore[attr-defined]
}


class Load(BaseModel):
    """How a unit's planes become the pipeline's starting images."""
    model_config = ConfigDict(extra="forbid", frozen=True)
    channels: list[Annotated[int, Field(ge=1)]] | Literal["all"] = Field(
        default="all", description="1-based channel indices to load, or all")
    z: Literal["max", "mean", "middle", "stack"] = Field(
        default="max", description="project z on load, take the middle plane, or keep the stack")


class Parameter(BaseModel):
    """A value users may tune: ``field`` of every ``op`` step of the spec. A field
    that reads a channel (``input: ch1``) makes a channel parameter (an index or a
    channel name); otherwise the field must hold a number or a choice, and its type
    and bounds are the step's."""
    model_config = ConfigDict(extra="forbid", frozen=True)
    op: str
    field: Name
    description: str = ""
    choices: list[str | int] | None = Field(default=None, min_length=1,
                                            description="a subset of the field's choices to offer")


def tunable_type(annotation: Any) -> tuple[str, tuple[Any, ...]] | None:
    """``("integer" | "number" | "choice", choices)`` for a step field's type that a
    parameter may set (optionally None), or None when it cannot be tuned (booleans,
    names, lists)."""
    if typing.get_origin(annotation) in (Union, types.UnionType):
        members = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(members) != 1:
            return None
        annotation = members[0]
    if annotation is int:
        return "integer", ()
    if annotation is float:
        return "number", ()
    if typing.get_origin(annotation) is Literal:
        return "choice", typing.get_args(annotation)
    return None


class PipelineSpec(BaseModel):
    """A whole pipeline."""
    model_config = ConfigDict(extra="forbid", frozen=True)
    name: Name
    description: str = ""
    version: Literal[1] = 1
    load: Load = Load()
    steps: list[Step] = Field(min_length=1)
    parameters: dict[Name, Parameter] = Field(default_factory=dict,
                                              description="values users may tune (see Parameter)")

    @model_validator(mode="after")
    def _check_parameters(self) -> PipelineSpec:
        """Each parameter names a field of a step the spec has, that can be tuned."""
        for name, param in self.parameters.items():
            where = f"parameters.{name}"
            steps = [s for s in self.steps if s.op == param.op]
            if not steps:
                raise ValueError(f"{where}: the pipeline has no '{param.op}' step")
            model = type(steps[0])
            if param.field not in model.model_fields or param.field in ("op", "output"):
                fields = [f for f in model.model_fields if f not in ("op", "output")]
                raise ValueError(f"{where}: '{param.op}' has no field '{param.field}'; its fields: "
                                 f"{', '.join(fields)}")
            if param.field in model.reads:
                values = [getattr(s, param.field) for s in steps]
                if not all(isinstance(v, str) and CHANNEL_RE.match(v) for v in values):
                    raise ValueError(f"{where}: of what a step reads, only a channel (ch1, ch2, ...) can be "
                                     f"tuned, and '{param.op}' reads {values[0]!r} in '{param.field}'")
                if param.choices is not None:
                    raise ValueError(f"{where}: a channel parameter has no choices")
                continue
            kind = tunable_type(model.model_fields[param.field].annotation)
            if kind is None:
                raise ValueError(f"{where}: '{param.op}.{param.field}' is not a number or a choice")
            if param.choices is not None:
                if kind[0] != "choice" or not set(param.choices) <= set(kind[1]):
                    raise ValueError(f"{where}: choices must be some of {list(kind[1])}")
        return self

    @model_validator(mode="after")
    def _check_dataflow(self) -> PipelineSpec:
        """Every value is defined before it is read, and of the kind the step needs."""
        kinds: dict[str, str] = {}
        columns: set[str] = set()
        explicit = None if self.load.channels == "all" else set(self.load.channels)
        stacked = self.load.z == "stack"
        unread: dict[str, int] = {}  # value -> the step that wrote it, until a later step reads it
        for i, step in enumerate(self.steps):
            for fld, name, kind in step.value_refs():
                channel = CHANNEL_RE.match(name)
                if channel and int(channel.group(1)) == 0:
                    raise ValueError(f"steps[{i}] ({step.op}) reads ch0: channels are numbered from 1 (ch1, ch2, ...)")
                if name not in kinds and channel:
                    if explicit is not None and int(channel.group(1)) not in explicit:
                        raise ValueError(f"steps[{i}] ({step.op}) reads {name}, which load.channels leaves out")
                    kinds[name] = "image"
                if name not in kinds:
                    raise ValueError(f"steps[{i}] ({step.op}) reads '{name}' in '{fld}', which no earlier step "
                                     "writes (channels are ch1, ch2, ...)")
                if kinds[name] != kind:
                    raise ValueError(f"steps[{i}] ({step.op}) needs {kind} in '{fld}', but '{name}' is {kinds[name]}")
            if stacked and isinstance(step, (MeasureObjects, MeasureImage)) and not any(
                    isinstance(s, ProjectZ) for s in self.steps[:i]):
                raise ValueError(f"steps[{i}] ({step.op}) measures a z-stack: add a project_z step "
                                 "or set load.z to max, mean or middle")
            if isinstance(step, Ratio):
                for col in (step.numerator, step.denominator):
                    if col not in columns:
                        raise ValueError(f"steps[{i}] (ratio) uses column '{col}', which no earlier "
                                         f"step measures; known: {sorted(columns)}")
                columns.add(step.output)
            elif isinstance(step, MeasureObjects):
                p = step.column_prefix
                columns |= {f"{p}_count", f"{p}_area_mean"}
                if step.intensity != "all":
                    columns |= {f"{p}_{n}_intensity_mean" for n in step.intensity}
            elif isinstance(step, MeasureImage):
                for n in step.images:
                    columns |= {f"{n}_mean", f"{n}_integrated"}
            for _, name, _ in step.value_refs():
                unread.pop(name, None)
            if step.writes:
                output = step.output  # type: ignore[attr-defined]
                if output in unread:  # work for nothing: usually a misspelt name further down
                    raise ValueError(f"steps[{unread[output]}] ({self.steps[unread[output]].op}) writes '{output}', "
                                     f"which no step reads before steps[{i}] writes it again")
                kinds[output] = step.writes
                unread[output] = i
        if not columns:
            raise ValueError("the pipeline measures nothing: add a measure_objects or measure_image step")
        for name, j in unread.items():
            raise ValueError(f"steps[{j}] ({self.steps[j].op}) writes '{name}', which no later step reads: "
                             "remove the step or read its output")
        return self

    def channels_read(self) -> list[int]:
        """Channel indices the steps read, in order."""
        found = set()
        for step in self.steps:
            for _, name, _ in step.value_refs():
                match = CHANNEL_RE.match(name)
                if match:
                    found.add(int(match.group(1)))
        if self.load.channels != "all":
            found &= set(self.load.channels)
        return sorted(found)


def bind_to_plate(spec: PipelineSpec, n_channels: int, channel_names: list[str] | None = None) -> PipelineSpec:
    """The spec for a plate of ``n_channels``: ``all`` expanded to the loaded channels,
    and every channel it reads checked to exist. Raises ValueError naming the channel."""
    loaded = list(range(1, n_channels + 1)) if spec.load.channels == "all" else list(spec.load.channels)
    names = channel_names or [f"w{i}" for i in range(1, n_channels + 1)]
    have = ", ".join(f"ch{i} ({n})" for i, n in enumerate(names, start=1))
    for c in sorted(set(loaded) | set(spec.channels_read())):
        if c > n_channels:
            raise ValueError(f"pipeline '{spec.name}' reads ch{c}, but the plate has {n_channels} "
                             f"channel{'s' if n_channels != 1 else ''}: {have}")
    data = spec.model_dump()
    for step in data["steps"]:
        if step.get("op") == "measure_objects" and step.get("intensity") == "all":
            step["intensity"] = [f"ch{c}" for c in loaded]
    return PipelineSpec.model_validate(data)
