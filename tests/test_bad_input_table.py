"""Bad input, counted: every case a table row, each through the entry point a user
would use, each refused with one clear message and nothing written or attached.

Entry points:

- ``cli``: the real ``openhcs-omero`` ``main`` in this process (against the OMERO
  stand-in where the case names OMERO objects); refused means exit status 2, exactly
  one line on stderr starting ``openhcs-omero: error:``, no traceback, and no new
  file in the case's working folder.
- ``script``: ``Run_HCS_Pipeline`` run over the stand-in as OMERO's Processor runs
  it (:func:`openhcs_omero_lib.testing.processor.run_script`); refused means the
  server's input validation said no, or the script's ``Message`` starts "Nothing
  attached" on one line with no ``File_Annotation`` and no traceback in its stderr.
- ``api``: the Python function behind both (``parse_spec``, ``check_plate_folder``,
  ``run_pipeline_script``); refused means the library's own error, or a failed
  outcome, with a one-line message.

For every case the stand-in's store is counted before and after (files,
annotations, links, tables): nothing may be added, and the plate's earlier results
(a complete set, attached when the module starts) must all still be there.
"""

from __future__ import annotations

import collections
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
import tifffile

from omero_fixtures import RUN_SCRIPT, created_since, snapshot, standin
from reliability import record

MISSING = 987_654_321
NAMES = "evil\n../../plate é"
"""An OMERO plate name with a line break, a path and a non-ASCII letter"""


@dataclass(frozen=True)
class Case:
    id: str
    entry: str
    """cli, script or api"""
    input: Callable[[World, Path], Any]
    """Builds what the entry point takes (argv, script inputs, a call); may add files
    to the case's folder or objects to the stand-in, before the counting starts."""
    expect: str
    """A fragment of the one message"""


# ---- the world the cases run against ------------------------------------------------------------

class World:
    """A stand-in with the plates the cases name, and a small ImageXpress folder."""

    def __init__(self, server, folder: Path, one_channel: Path, larger: Path):
        self.server, self.folder = server, folder
        self.plate = server.import_plate(folder)
        self.dataset = server.add_dataset("a dataset")
        self.screen = server.add_screen("a screen", [self.plate])
        self.empty_screen = server.add_screen("an empty screen", [])
        self.empty_plate = self._plate("EMPTY", wells=0)
        self.plate_without_images = self._plate("NO IMAGES", wells=3)
        private = server.add_group("private-lab", "rw----")
        bob = server.add_user("bob", "bob-password", [private])
        self.other_group_plate = server.import_plate(folder, owner=bob, group=private)
        read_only = server.add_group("read-only-lab", "rwr---")
        carol = server.add_user("carol", "carol-password", [read_only])
        self.read_only_plate = server.import_plate(folder, owner=carol, group=read_only)
        server.user.groups.append(read_only.id)  # alice may read carol's plate, not annotate it
        self.mixed_channels = self._mixed(folder, one_channel)
        self.mixed_sizes = self._mixed(folder, larger)
        self.oddly_named = server.import_plate(folder, name=NAMES)
        self.args = ["--host", server.host, "--port", str(server.port), "--router", server.router]

    def _plate(self, name: str, wells: int) -> int:
        import omero.model
        from omero.rtypes import rint, rstring

        store, server = self.server.store, self.server
        plate = omero.model.PlateI()
        plate.setName(rstring(name))
        plate.setRows(rint(8))
        plate.setColumns(rint(12))
        pid = store.add(plate, server.user, server.group.id).getId().getValue()
        for column in range(wells):
            well = omero.model.WellI()
            well.setRow(rint(0))
            well.setColumn(rint(column))
            well.setPlate(omero.model.PlateI(pid, False))
            store.add(well, server.user, server.group.id, {"plate": pid})
        return pid

    def _mixed(self, folder: Path, odd_folder: Path) -> int:
        """A plate of ``folder`` whose last field shows an image of ``odd_folder``'s
        plate, as after a re-import of one well with other settings."""
        import omero.model

        store = self.server.store
        pid = self.server.import_plate(folder)
        odd = self.server.import_plate(odd_folder)
        last_well = store.children("Well", "plate", pid)[-1]
        sample = store.children("WellSample", "well", last_well.getId().getValue())[-1]
        odd_well = store.children("Well", "plate", odd)[0]
        odd_image = store.children("WellSample", "well", odd_well.getId().getValue())[0].getImage()
        sample.setImage(omero.model.ImageI(odd_image.getId().getValue(), False))
        return pid

    def state(self) -> dict:
        return snapshot(self.server.store)


def _make(folder: Path, **config) -> Path:
    from openhcs_omero_lib.plates import synthetic

    synthetic.make_plate(folder, synthetic.SyntheticPlateConfig(**config))
    return folder


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    from openhcs_omero_lib.omero.script_support import run_pipeline_script

    base = tmp_path_factory.mktemp("bad-input")
    folder = _make(base / "P", wells=2, sites=2, channels=2, size=64, seed=4, name="P")
    one_channel = _make(base / "Q", wells=1, sites=1, channels=1, size=64, seed=5, name="Q")
    larger = _make(base / "R", wells=1, sites=1, channels=2, size=96, seed=6, name="R")
    with standin() as server:
        world = World(server, folder, one_channel, larger)
        with server.gateway() as conn:  # the earlier results every case must leave as they are
            earlier = run_pipeline_script(conn, {"Data_Type": "Plate", "IDs": [world.plate], "Workers": 1})
        assert earlier.ok, earlier.message
        world.earlier = snapshot(server.store)
        yield world


# ---- inputs -------------------------------------------------------------------------------------

SPEC_HEAD = "name: my_pipeline\nsteps:\n"
MEASURE = "  - {op: measure_image, images: [ch1]}\n"


def _spec(body: str) -> str:
    return SPEC_HEAD + body


def _file(tmp: Path, name: str, content: str | bytes) -> str:
    path = tmp / name
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    return str(path)


def _validate(text: str | bytes, name: str = "spec.yaml"):
    return lambda w, tmp: ["validate", _file(tmp, name, text)]


def _run_with_spec(text: str | bytes, name: str = "spec.yaml"):
    return lambda w, tmp: ["run", str(_copy_plate(w, tmp)), "--pipeline", _file(tmp, name, text),
                           "--workers", "1", "--out", str(tmp / "out"), "--no-progress"]


def _copy_plate(w: World, tmp: Path, name: str = "plate") -> Path:
    target = tmp / name
    if not target.exists():
        shutil.copytree(w.folder, target)
    return target


def _tifs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*.TIF") if "_thumb" not in p.name)


def _broken_plate(change: Callable[[Path], None], command: str = "run"):
    def build(w: World, tmp: Path) -> list[str]:
        folder = _copy_plate(w, tmp)
        change(folder)
        if command == "validate":
            return ["validate", "nuclei_count", "--plate", str(folder)]
        return ["run", str(folder), "--workers", "1", "--out", str(tmp / "out"), "--no-progress"]
    return build


def _truncate(folder: Path) -> None:
    path = _tifs(folder)[-1]
    path.write_bytes(path.read_bytes()[:2000])


def _zero(index: int):
    def change(folder: Path) -> None:
        _tifs(folder)[index].write_bytes(b"")
    return change


def _wrong_size(folder: Path) -> None:
    tifffile.imwrite(_tifs(folder)[-1], np.zeros((48, 64), np.uint16))


def _missing_wavelength(folder: Path) -> None:
    [p for p in _tifs(folder) if "_w2" in p.name][-1].unlink()


def _duplicate(folder: Path) -> None:
    path = _tifs(folder)[0]
    shutil.copy(path, path.with_name(path.stem + "F0C52ED7-1234-4A5B-9C8D-0123456789AB.TIF"))


def _htd(folder: Path, old: str, new: str) -> None:
    htd = next(folder.glob("*.HTD"))
    text = htd.read_text()
    assert old in text, (old, text)
    htd.write_text(text.replace(old, new))


def _htd_sites(folder: Path) -> None:
    _htd(folder, '"SiteSelection1", TRUE, TRUE', '"SiteSelection1", TRUE, TRUE, TRUE')


def _htd_wells(folder: Path) -> None:
    _htd(folder, '"WellsSelection2", FALSE, FALSE', '"WellsSelection2", TRUE, FALSE')


def _htd_wavelengths(folder: Path) -> None:
    _htd(folder, '"NWavelengths", 2', '"NWavelengths", 3')
    _htd(folder, '"WaveCollect2", 1', '"WaveCollect2", 1\r\n"WaveName3", "Cy5"\r\n"WaveCollect3", 1')


def _future_names(every: bool):
    """New tokens after the wavelength: on every file ("_z01_p01", whose last token
    looks like a well), or on one ("_c1", which reads as nothing)."""
    def change(folder: Path) -> None:
        for path in (_tifs(folder) if every else _tifs(folder)[-1:]):
            path.rename(path.with_name(path.stem + ("_z01_p01.TIF" if every else "_c1.TIF")))
    return change


def _script(**values):
    """Script inputs: the plate of the world unless ``IDs`` is given."""
    def build(w: World, tmp: Path) -> dict:
        from omero.rtypes import rint, rlist, rlong, rstring

        inputs = {"Data_Type": rstring("Plate"), "IDs": rlist([rlong(w.plate)]), "Workers": rint(1)}
        for key, value in values.items():
            value = value(w) if callable(value) else value
            if key == "IDs":
                inputs[key] = rlist([rlong(v) for v in value])
            elif isinstance(value, int):
                inputs[key] = rlong(value) if key == "Pipeline_File_Annotation" else rint(value)
            else:
                inputs[key] = rstring(value)
        return inputs
    return build


def _annotation(content: str | bytes, name: str = "pipeline.yaml"):
    def make(w: World) -> int:
        data = content.encode() if isinstance(content, str) else content
        return w.server.add_file_annotation(data, name, mimetype="text/yaml")
    return make


def _omero_run(plate: Callable[[World], int], *extra: str, spec: str | None = None):
    def build(w: World, tmp: Path) -> list[str]:
        argv = ["run", "--omero-plate", str(plate(w)), "--workers", "1", "--no-progress", *extra, *w.args]
        if spec is not None:
            argv += ["--pipeline", _file(tmp, "spec.yaml", spec)]
        return argv
    return build


def _call(function: Callable[[World, Path], Any]):
    return lambda w, tmp: (lambda: function(w, tmp))


def _parse(text: str):
    def call(w, tmp):
        from openhcs_omero_lib.pipeline.loading import parse_spec

        return parse_spec(text, "spec")
    return _call(call)


def _check_folder(change: Callable[[Path], None]):
    def call(w, tmp):
        from openhcs_omero_lib.plates.imagexpress import ImageXpressSource
        from openhcs_omero_lib.plates.imagexpress_check import check_plate_folder

        folder = _copy_plate(w, tmp)
        change(folder)
        with ImageXpressSource(folder) as source:
            check_plate_folder(source)
    return _call(call)


def _script_function(**params):
    def call(w, tmp):
        from openhcs_omero_lib.omero.script_support import run_pipeline_script

        values = {"Data_Type": "Plate", "IDs": [w.plate], "Workers": 1}
        values.update({k: (v(w) if callable(v) else v) for k, v in params.items()})
        with w.server.gateway() as conn:
            return run_pipeline_script(conn, values)
    return _call(call)


def _nested_flow(depth: int) -> str:
    return "[" * depth + "]" * depth


def _nested_block(depth: int) -> str:
    return SPEC_HEAD + MEASURE + "description:\n" + "".join(f"{'  ' * (i + 1)}k{i}:\n" for i in range(depth)) \
        + "  " * (depth + 1) + "end\n"


def _aliases(levels: int = 9) -> str:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x]"]
    for i in range(1, levels):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]")
    return "name: bomb\n" + "\n".join(lines) + f"\nsteps: *a{levels - 1}\n"


UNREAD = _spec("  - {op: gaussian, input: ch1, output: smooth, sigma: 1}\n"
               "  - {op: gaussian, input: ch1, output: unused, sigma: 2}\n"
               "  - {op: measure_image, images: [smooth]}\n")
CYCLE = _spec("  - {op: gaussian, input: a, output: b, sigma: 1}\n"
              "  - {op: gaussian, input: b, output: a, sigma: 1}\n"
              "  - {op: measure_image, images: [a]}\n")
PYTHON_TAG = "name: x\nsteps: !!python/object/apply:os.system ['touch {marker}']\n"


def _tag_never_runs(w: World, tmp: Path) -> list[str]:
    marker = tmp / "the-tag-ran"
    return ["validate", _file(tmp, "spec.yaml", PYTHON_TAG.format(marker=marker))]


def _ch3() -> str:
    from openhcs_omero_lib.pipeline.loading import preset_text

    return preset_text("nuclei_count").replace("input: ch1", "input: ch3")


def _out_is_a_file(w: World, tmp: Path) -> list[str]:
    _file(tmp, "results", "not a folder")
    return ["run", str(_copy_plate(w, tmp)), "--workers", "1", "--out", str(tmp / "results"), "--no-progress"]


def _out_under_a_file(w: World, tmp: Path) -> list[str]:
    _file(tmp, "notes.txt", "a file")
    return ["run", str(_copy_plate(w, tmp)), "--workers", "1", "--out", str(tmp / "notes.txt" / "out"),
            "--no-progress"]


UNWRITABLE = "/sys/openhcs-omero-reliability-out"
"""Refused to root as to anyone: sysfs takes no new folders."""


def _odd_folder_name(w: World, tmp: Path) -> list[str]:
    folder = tmp / "a plate é" / ".." / "nothing here"
    (tmp / "a plate é").mkdir()
    folder.mkdir()
    return ["run", str(folder), "--workers", "1", "--out", str(tmp / "out"), "--no-progress"]


def _ids(attr: str):
    return lambda w: [getattr(w, attr)]


CASES = [
    # IDs: missing, of another kind, of another group, of an empty plate, of wells without images
    Case("id-missing-cli", "cli", _omero_run(lambda w: MISSING), f"no Plate with ID {MISSING}"),
    Case("id-missing-script", "script", _script(IDs=[MISSING]), f"no Plate with ID {MISSING}"),
    Case("id-dataset-as-plate", "script", _script(IDs=_ids("dataset")), "is a Dataset, not a Plate"),
    Case("id-screen-as-plate-cli", "cli", _omero_run(lambda w: w.screen), "is a Screen, not a Plate"),
    Case("id-plate-as-screen", "script", _script(Data_Type="Screen"), "is a Plate, not a Screen"),
    Case("id-screen-without-plates", "script", _script(Data_Type="Screen", IDs=_ids("empty_screen")),
         "has no plates"),
    Case("id-other-group", "script", _script(IDs=_ids("other_group_plate")), "may not read it"),
    Case("id-other-group-cli", "cli", _omero_run(lambda w: w.other_group_plate), "may not read it"),
    Case("id-read-only-group", "script", _script(IDs=_ids("read_only_plate")), "no permission to annotate"),
    Case("id-empty-plate", "script", _script(IDs=_ids("empty_plate")), "has no images"),
    Case("id-wells-without-images-cli", "cli", _omero_run(lambda w: w.plate_without_images), "has no images"),
    Case("id-none", "api", _script_function(IDs=[]), "no IDs given"),
    # mixed channel counts or sizes across a plate
    Case("plate-mixed-channels", "script", _script(IDs=_ids("mixed_channels")), "1 channel"),
    Case("plate-mixed-sizes-cli", "cli", _omero_run(lambda w: w.mixed_sizes), "its images are not alike"),
    Case("plate-mixed-sizes-api", "api", _script_function(IDs=_ids("mixed_sizes")), "96x96 px"),
    # pipeline specs: empty, binary, huge, deep, tags, aliases, unknown keys and ops, types, ranges, flow
    Case("spec-empty", "cli", _validate(""), "is empty"),
    Case("spec-binary-cli", "cli", _run_with_spec(bytes(range(256)) * 8, "spec.bin"), "not a text file"),
    Case("spec-binary-annotation", "script", _script(Pipeline_File_Annotation=_annotation(bytes(range(256)) * 8)),
         "is not a text file"),
    Case("spec-huge-cli", "cli", _validate("name: x\ndescription: '" + "y" * 10_000_000 + "'\n"),
         "at most 1048576"),
    Case("spec-huge-annotation", "script",
         _script(Pipeline_File_Annotation=_annotation(SPEC_HEAD + MEASURE + "# " + "y" * 10_000_000 + "\n")),
         "at most 1048576"),
    Case("spec-deep-flow", "api", _parse(_nested_flow(20_000)), "nested more than 16 levels"),
    Case("spec-deep-block", "cli", _validate(_nested_block(40)), "nested more than 16 levels"),
    Case("spec-python-tag", "cli", _tag_never_runs, "could not determine a constructor"),
    Case("spec-python-tag-annotation", "script",
         _script(Pipeline_File_Annotation=_annotation("name: x\nsteps: !!python/name:os.system\n")),
         "could not determine a constructor"),
    Case("spec-aliases", "cli", _validate(_aliases()), "once its aliases"),
    Case("spec-unknown-key", "cli", _validate(SPEC_HEAD + MEASURE + "colour: blue\n"), "unknown key"),
    Case("spec-misspelled-key", "cli", _validate("name: x\nstesp:\n" + MEASURE), "did you mean 'steps'"),
    Case("spec-misspelled-op", "cli", _validate(_spec("  - {op: gausian, input: ch1, output: s, sigma: 1}\n"
                                                       "  - {op: measure_image, images: [s]}\n")),
         "unknown step 'gausian' (did you mean 'gaussian'?)"),
    Case("spec-misspelled-parameter", "cli",
         _run_with_spec(_spec("  - {op: gaussian, input: ch1, output: s, sigam: 1}\n"
                              "  - {op: measure_image, images: [s]}\n")),
         "did you mean 'sigma'"),
    Case("spec-repeated-key", "cli", _validate(_spec("  - {op: gaussian, input: ch1, output: s, sigma: 1, sigma: 2}\n"
                                                     "  - {op: measure_image, images: [s]}\n")),
         "key 'sigma' is given twice"),
    Case("spec-wrong-type", "api", _parse(_spec("  - {op: gaussian, input: ch1, output: s, sigma: wide}\n"
                                                "  - {op: measure_image, images: [s]}\n")), "valid number"),
    Case("spec-wrong-kind", "api", _parse(_spec("  - {op: threshold, input: ch1, output: m}\n"
                                                "  - {op: gaussian, input: m, output: s, sigma: 1}\n"
                                                "  - {op: measure_image, images: [s]}\n")), "needs image"),
    Case("spec-sigma-negative", "cli", _validate(_spec("  - {op: gaussian, input: ch1, output: s, sigma: -1}\n"
                                                       "  - {op: measure_image, images: [s]}\n")),
         "greater than 0"),
    Case("spec-radius-huge", "cli", _validate(_spec("  - {op: median, input: ch1, output: s, radius: 1000000000}\n"
                                                    "  - {op: measure_image, images: [s]}\n")),
         "less than or equal to 25"),
    Case("spec-threshold-nan", "cli", _validate(_spec("  - {op: threshold, input: ch1, output: m, method: manual,"
                                                      " value: .nan}\n"
                                                      "  - {op: measure_image, images: [ch1], mask: m}\n")),
         "finite number"),
    Case("spec-cycle", "cli", _validate(CYCLE), "reads 'a' in 'input', which no earlier step writes"),
    Case("spec-unread-output", "cli", _validate(UNREAD), "writes 'unused', which no later step reads"),
    Case("spec-channel-zero", "cli", _validate(_spec("  - {op: measure_image, images: [ch0]}\n")),
         "channels are numbered from 1"),
    Case("spec-measures-nothing", "api", _parse(_spec("  - {op: gaussian, input: ch1, output: s, sigma: 1}\n")),
         "measures nothing"),
    Case("spec-channel-the-plate-lacks", "script", _script(Pipeline_File_Annotation=_annotation(_ch3())),
         "reads ch3, but the plate has 2 channels"),
    Case("spec-annotation-missing", "script", _script(Pipeline_File_Annotation=MISSING),
         f"no FileAnnotation with ID {MISSING}"),
    # Workers
    Case("workers-0-cli", "cli", lambda w, tmp: ["run", str(_copy_plate(w, tmp)), "--workers", "0"],
         "--workers: must be at least 1"),
    Case("workers-million-cli", "cli", lambda w, tmp: ["run", str(_copy_plate(w, tmp)), "--workers", "1000000"],
         "--workers: at most 64"),
    Case("workers-million-omero-cli", "cli", _omero_run(lambda w: w.plate, "--workers", "1000000"),
         "--workers: at most 64"),
    Case("workers-0-script", "script", _script(Workers=0), "Workers"),
    Case("workers-million-script", "script", _script(Workers=1_000_000), "Workers"),
    # names: unicode, spaces, ../ and line breaks; output folders that are files or not writable
    Case("name-path-in-spec", "cli", _validate("name: ../../etc/evil\nsteps:\n" + MEASURE), "is not a name"),
    Case("name-unicode-space-in-spec", "cli", _validate("name: nuclëi count\nsteps:\n" + MEASURE), "is not a name"),
    Case("name-odd-plate-name", "script",
         _script(IDs=_ids("oddly_named"), Pipeline_File_Annotation=_annotation(_ch3())), "evil ../../plate é"),
    Case("name-odd-folder-name", "cli", _odd_folder_name, "not an ImageXpress plate folder"),
    Case("out-is-a-file", "cli", _out_is_a_file, "it exists and is not a folder"),
    Case("out-under-a-file", "cli", _out_under_a_file, "a part of the path is a file"),
    Case("out-not-writable", "cli", lambda w, tmp: ["run", str(_copy_plate(w, tmp)), "--workers", "1",
                                                   "--out", UNWRITABLE, "--no-progress"], "cannot write results"),
    Case("out-not-writable-omero", "cli", _omero_run(lambda w: w.plate, "--out", UNWRITABLE),
         "cannot write results"),
    # ImageXpress folders
    Case("ix-truncated-tiff", "cli", _broken_plate(_truncate), "is truncated"),
    Case("ix-truncated-tiff-api", "api", _check_folder(_truncate), "is truncated"),
    Case("ix-zero-byte-tiff", "cli", _broken_plate(_zero(-1)), "is empty (0 bytes)"),
    Case("ix-zero-byte-first-tiff", "cli", _broken_plate(_zero(0)), "is not a readable TIFF"),
    Case("ix-wrong-size-tiff", "cli", _broken_plate(_wrong_size, "validate"), "is 64x48 px"),
    Case("ix-missing-wavelength", "cli", _broken_plate(_missing_wavelength), "1 of 8 images are missing"),
    Case("ix-duplicate-files", "cli", _broken_plate(_duplicate), "are the same image"),
    Case("ix-htd-lies-about-sites", "cli", _broken_plate(_htd_sites), "lists 3 site(s) per well"),
    Case("ix-htd-lies-about-wells", "cli", _broken_plate(_htd_wells), "no images of 1 well(s) it selects (B01)"),
    Case("ix-htd-lies-about-wavelengths", "cli", _broken_plate(_htd_wavelengths, "validate"),
         "lists 3 wavelength(s)"),
    Case("ix-future-names", "cli", _broken_plate(_future_names(every=True)), "a newer MetaXpress naming"),
    Case("ix-some-future-names", "cli", _broken_plate(_future_names(every=False)),
         "whose names this version cannot read"),
]


# ---- running a case through its entry point -------------------------------------------------------

@dataclass
class Outcome:
    refused: bool
    message: str
    problems: list[str]


def _through_cli(argv: list[str], tmp: Path, capsys, monkeypatch) -> Outcome:
    from openhcs_omero_lib.cli.app import main

    work = tmp / "work"
    work.mkdir(exist_ok=True)
    monkeypatch.chdir(work)
    before = {p for p in tmp.rglob("*")}
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse refuses before main's own handling
        code = exc.code
    err = capsys.readouterr().err
    lines = err.splitlines()
    problems = []
    if code != 2:
        problems.append(f"exit status {code}")
    if len(lines) != 1 or not lines[0].startswith("openhcs-omero: error: "):
        problems.append(f"not one error line: {lines[-5:]}")
    if "Traceback" in err:
        problems.append("a traceback")
    written = sorted(str(p.relative_to(tmp)) for p in set(tmp.rglob("*")) - before)
    if written:
        problems.append(f"wrote {written}")
    return Outcome(not problems, lines[-1] if lines else "", problems)


def _through_script(inputs: dict, world: World) -> Outcome:
    from openhcs_omero_lib.testing.processor import run_script

    run = run_script(world.server, RUN_SCRIPT, inputs, timeout=120)
    if run.errors:  # the server's validation refused the inputs: the script never ran
        return Outcome(run.returncode != 0 and run.outputs == {}, " ".join(run.errors), [])
    message = run.output("Message") or ""
    problems = []
    if not message.startswith("Nothing attached: ") or "\n" in message:
        problems.append(f"not a one-line refusal: {message!r}")
    if run.output("File_Annotation") is not None:
        problems.append("a File_Annotation output")
    if "Traceback" in run.stderr:
        problems.append(f"a traceback: {run.stderr[-1500:]}")
    return Outcome(not problems, message, problems)


def _through_api(call: Callable[[], Any]) -> Outcome:
    from openhcs_omero_lib.pipeline.loading import PipelineError
    from openhcs_omero_lib.plates.imagexpress import NotAPlateError

    try:
        result = call()
    except (PipelineError, NotAPlateError) as exc:
        message = str(exc)
    else:
        if getattr(result, "ok", True):
            return Outcome(False, "", [f"accepted: {result!r}"])
        message = result.message
    problems = [] if "\n" not in message else ["a message over several lines"]
    return Outcome(not problems, message, problems)


@pytest.mark.reliability("bad_input", deadline=180)
@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_refused_cleanly(case, world, tmp_path, capsys, monkeypatch, request):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("OMERO_USER", world.server.user.name)
    monkeypatch.setenv("OMERO_PASSWORD", world.server.password)
    for var in ("OMERO_SESSION_KEY", "OMERO_GROUP", "OMERO_HOST", "OMERO_PORT"):
        monkeypatch.delenv(var, raising=False)
    given = case.input(world, tmp_path)
    before = world.state()
    if case.entry == "cli":
        outcome = _through_cli(given, tmp_path, capsys, monkeypatch)
    elif case.entry == "script":
        outcome = _through_script(given, world)
    else:
        outcome = _through_api(given)
    after = world.state()
    created = created_since(before, after)
    lost = {kind: sorted(world.earlier[kind] - after[kind]) for kind in world.earlier
            if world.earlier[kind] - after[kind]}
    record(request, lost=sum(map(len, lost.values())), orphaned=sum(map(len, created.values())))
    assert outcome.refused, f"{outcome.problems}; message: {outcome.message!r}"
    assert case.expect in outcome.message, f"expected {case.expect!r} in {outcome.message!r}"
    assert not created, f"left behind: {created}"
    assert not lost, f"earlier results lost: {lost}"
    assert not (tmp_path / "the-tag-ran").exists(), "a YAML tag ran a command"


def test_the_table_holds_at_least_forty_cases_of_every_kind_the_issue_lists():
    by_entry = collections.Counter(c.entry for c in CASES)
    assert len(CASES) >= 40 and len({c.id for c in CASES}) == len(CASES)
    assert set(by_entry) == {"cli", "script", "api"}
    prefixes = collections.Counter(c.id.split("-")[0] for c in CASES)
    assert {"id", "plate", "spec", "workers", "name", "out", "ix"} <= set(prefixes)


def test_allow_bad_files_runs_and_makes_their_fields_error_rows(world, tmp_path, capsys, monkeypatch):
    """The escape from the file check: a truncated file's field and a wrong-size
    file's field become error rows (the wrong size is not measured as if it fitted),
    the others are measured."""
    import pandas as pd

    from openhcs_omero_lib.cli.app import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    folder = _copy_plate(world, tmp_path)
    _truncate(folder)
    tifffile.imwrite(_tifs(folder)[2], np.zeros((48, 64), np.uint16))  # A01 site 2 w1
    out = tmp_path / "out"
    code = main(["run", str(folder), "--workers", "1", "--out", str(out), "--no-progress", "--allow-bad-files"])
    assert code == 0, capsys.readouterr().err
    images = pd.read_csv(out / "images.csv", keep_default_na=False)
    failed = images[images["error"] != ""]
    assert sorted(zip(failed["well"], failed["site"])) == [("A01", 2), ("A02", 2)], failed
    assert "expected a 2-D plane of (64, 64), got shape (48, 64)" in failed["error"].iloc[0]
    assert (images[images["error"] == ""]["nuclei_count"] != "").all()
