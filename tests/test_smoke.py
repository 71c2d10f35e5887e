from openhcs_omero_lib.cli.app import main


def test_pipelines_lists_presets(capsys):
    assert main(["pipelines"]) == 0
    out = capsys.readouterr().out
    assert "nuclei_count" in out and "nuclear_translocation" in out
