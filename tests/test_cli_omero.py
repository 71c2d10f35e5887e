"""The CLI against the OMERO stand-in: list-plates and run --omero-plate."""

from __future__ import annotations

import pandas as pd
import pytest

from openhcs_omero_lib.cli.app import main
from openhcs_omero_lib.omero.sink import results_namespace
from openhcs_omero_lib.plates.synthetic import read_ground_truth
from openhcs_omero_lib.testing import OmeroStandIn


@pytest.fixture()
def server(small_plate, monkeypatch):
    with OmeroStandIn() as server:
        server.plate_id = server.import_plate(small_plate.folder)
        monkeypatch.setenv("OMERO_USER", server.user.name)
        monkeypatch.setenv("OMERO_PASSWORD", server.password)
        for var in ("OMERO_SESSION_KEY", "OMERO_GROUP"):
            monkeypatch.delenv(var, raising=False)
        server.args = ["--host", server.host, "--port", str(server.port), "--router", server.router]
        yield server


def test_list_plates_shows_size_owner_and_group(server, capsys, small_plate):
    assert main(["list-plates", *server.args]) == 0
    out = capsys.readouterr().out.splitlines()
    row = next(line for line in out if line.split()[0] == str(server.plate_id)).split()
    cfg = small_plate.config
    assert row[4:6] == [server.user.name, server.group.name]
    assert [int(v) for v in row[1:4]] == [cfg.wells, cfg.sites, cfg.channels]
    # the password-created session was closed again
    assert server.calls["sessions.closed"] == server.calls["sessions.created"] == 1


def test_run_on_omero_plate_attaches_and_writes_locally(server, capsys, small_plate, tmp_path, monkeypatch):
    from openhcs_omero_lib.execution import executor

    # Only spawned workers here, so that both join the session (otherwise this
    # process computes too, and on a plate this small finishes before they start).
    monkeypatch.setattr(executor, "PARENT_COMPUTES", False)
    out = tmp_path / "local"
    # through RawPixelsStore, so that the workers need the session
    code = main(["run", "--omero-plate", str(server.plate_id), "--workers", "2", "--out", str(out),
                 "--no-progress", "--pixel-access", "server", *server.args])
    assert code == 0, capsys.readouterr().err
    images = pd.read_csv(out / f"plate_{server.plate_id}" / "images.csv")
    truth = read_ground_truth(small_plate.folder)
    assert len(images) == len(truth)
    for row in images.itertuples():
        expected = truth[(row.well, row.site, row.timepoint)]
        assert abs(row.nuclei_count - expected) <= max(1, 0.05 * expected)
    anns = server.store.annotations_on("Plate", server.plate_id, results_namespace("nuclei_count"))
    names = sorted(server.store.get("OriginalFile", a.getFile().getId().getValue()).getName().getValue()
                   for a in anns)
    assert names == ["nuclei_count_SMALL_fields.omero.h5", "nuclei_count_heatmap.png", "nuclei_count_images.csv",
                     "nuclei_count_results.json", "nuclei_count_wells.csv"]
    assert (out / f"plate_{server.plate_id}" / "heatmap.png").exists()
    # workers joined the session instead of logging in again
    assert server.calls["sessions.created"] == 1
    assert server.calls["sessions.joined"] == 2


def test_with_this_process_computing_too_at_most_one_worker_joins(server, capsys, small_plate, tmp_path):
    out = tmp_path / "local"
    code = main(["run", "--omero-plate", str(server.plate_id), "--workers", "2", "--out", str(out),
                 "--no-progress", *server.args])
    assert code == 0, capsys.readouterr().err
    images = pd.read_csv(out / f"plate_{server.plate_id}" / "images.csv")
    assert len(images) == len(read_ground_truth(small_plate.folder)) and (images["error"].isna()).all()
    assert server.calls["sessions.created"] == 1
    assert server.calls["sessions.joined"] <= 1
    for stateful in ("RawPixelsStore", "RawFileStore", "Table"):
        assert server.open_stateful[stateful] == 0, stateful


def test_run_on_omero_plate_saves_rois_up_to_the_cap(server, capsys):
    code = main(["run", "--omero-plate", str(server.plate_id), "--workers", "1", "--no-progress",
                 "--save-rois", "--max-rois", "3", "--heatmap", "nuclei_area_mean", *server.args])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    images = [ws.getImage().getId().getValue() for w in server.store.children("Well", "plate", server.plate_id)
              for ws in server.store.children("WellSample", "well", w.getId().getValue())]
    rois = [r for r in server.store.all("Roi") if r.getImage().getId().getValue() in images]
    assert len(rois) == 3 * len(images)  # every field of the small plate has more than 3 nuclei
    assert f"and {3 * len(images)} ROIs" in captured.out
    assert f"ROI cap of 3 per image reached on {len(images)} image(s)" in captured.err
    bad = main(["run", "--omero-plate", str(server.plate_id), "--no-progress", "--heatmap", "nope", *server.args])
    assert bad == 2 and "--heatmap: pipeline 'nuclei_count' measures no 'nope'" in capsys.readouterr().err


def test_run_on_missing_omero_plate_is_one_line(server, capsys):
    code = main(["run", "--omero-plate", "999999", "--no-progress", *server.args])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and "no Plate with ID 999999" in err[0]


def test_wrong_password_is_one_line_without_the_password(server, capsys, monkeypatch):
    monkeypatch.setenv("OMERO_PASSWORD", "not-the-password")
    code = main(["list-plates", *server.args])
    err = capsys.readouterr().err
    assert code == 2
    assert "cannot log in" in err and "not-the-password" not in err
    assert len(err.strip().splitlines()) == 1


def test_stale_session_key_is_refused_without_printing_the_key(server, capsys, monkeypatch):
    key = "5c1e2b7a-0000-4000-8000-00000000dead"
    monkeypatch.setenv("OMERO_SESSION_KEY", key)
    monkeypatch.delenv("OMERO_PASSWORD")
    code = main(["list-plates", *server.args])
    err = capsys.readouterr().err
    assert code == 2
    assert "cannot log in" in err and "Password check failed" in err
    assert key not in err


def test_group_by_name_or_id(server, capsys, monkeypatch):
    monkeypatch.setenv("OMERO_GROUP", server.group.name)
    assert main(["list-plates", *server.args]) == 0
    assert str(server.plate_id) in capsys.readouterr().out
    monkeypatch.setenv("OMERO_GROUP", str(server.group.id))
    assert main(["list-plates", *server.args]) == 0
    monkeypatch.setenv("OMERO_GROUP", "no-such-lab")
    assert main(["list-plates", *server.args]) == 2
    assert "no group named 'no-such-lab'" in capsys.readouterr().err
    assert server.calls["sessions.closed"] == server.calls["sessions.created"]
