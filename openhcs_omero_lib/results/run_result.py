"""What a run from Python returns: its measurements as DataFrames and where they went."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pandas as pd


@dataclass
class RunResult:
    """A run's measurements (or results read back from OMERO) and where they are."""

    images: pd.DataFrame
    """one row per well, field, timepoint (and run): keys, measurements, ``error``"""
    wells: pd.DataFrame
    """per well and timepoint (and run): ``sites``, ``sites_failed``, counts summed, the rest averaged"""
    summary: dict[str, Any] = field(default_factory=dict)
    """plate, pipeline with its full spec, version, timing, errors (``results.json``)"""
    plate_id: int | None = None
    """the OMERO plate; None for a local folder"""
    attached: dict[str, list[int]] = field(default_factory=dict)
    """IDs of what the run attached (or what was read back), by kind: FileAnnotation, MapAnnotation"""
    replaced: int = 0
    """your earlier results of the pipeline that the run removed"""
    others: dict[str, int] = field(default_factory=dict)
    """other users' results of the pipeline on the plate, left in place: user name -> count"""
    files: list[str] = field(default_factory=list)
    """local files written (``out=``)"""
    source: str = "computed"
    """``computed``, or where :func:`read_results` found them: ``table`` or ``csv``"""
    owner: str = ""
    """whose results :func:`read_results` read"""

    @property
    def errors(self) -> list[dict[str, Any]]:
        return list(self.summary.get("errors", []))
