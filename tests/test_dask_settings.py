"""Who chooses the Dask cluster: the server's settings file (or ``--dask`` on the command
line), checked before anything starts; a cluster on another machine only over TLS."""

from __future__ import annotations

import textwrap

import pytest

from openhcs_omero_lib.cli.app import main
from openhcs_omero_lib.execution.backend import ProcessPool, open_backend
from openhcs_omero_lib.execution.settings import (
    CONFIG_ENV,
    SettingsError,
    dask_option,
    load_settings,
    parse_settings,
    settings_paths,
)


def _write(folder, text: str):
    path = folder / "etc" / "openhcs-omero.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


def test_the_file_is_found_where_a_script_can_see_it(tmp_path):
    """The Processor passes OMERODIR and sets OMERO_HOME (omero-py processor.py,
    make_env); the command line may also name a file."""
    server, home, own = tmp_path / "server", tmp_path / "home", tmp_path / "own.yaml"
    _write(server, "dask: {scheduler: 'local:3'}\n")
    _write(home, "dask: {scheduler: 'local:4'}\n")
    own.write_text("dask: {scheduler: 'local:5'}\n")
    assert load_settings({"OMERODIR": str(server), "OMERO_HOME": str(home)}).dask.scheduler == "local:3"
    assert load_settings({"OMERO_HOME": str(home)}).dask.scheduler == "local:4"
    assert load_settings({CONFIG_ENV: str(own), "OMERODIR": str(server)}).dask.scheduler == "local:5"
    assert load_settings({"OMERODIR": str(server)}).dask.origin == str(server / "etc" / "openhcs-omero.yaml")
    assert settings_paths({})[-1].as_posix() == "/etc/openhcs-omero.yaml"
    with pytest.raises(SettingsError, match="not a file"):
        load_settings({CONFIG_ENV: str(tmp_path / "missing.yaml")})


def test_without_a_dask_section_the_worker_processes_compute(tmp_path):
    _write(tmp_path, "# nothing set yet\n")
    settings = load_settings({"OMERODIR": str(tmp_path)})
    assert settings.dask is None
    backend = open_backend(3, settings=settings)
    assert isinstance(backend, ProcessPool) and backend.workers == 3 and backend.kind == "processes"


@pytest.mark.parametrize("text, message", [
    ("dask: {scheduler: 'local:0'}", "dask: local:N needs N between 1 and 64"),
    ("dask: {scheduler: 'local:two'}", "local:N needs N"),
    ("dask: {scheduler: 'tls://h:8786', slurm: {cores: 2}}", "either scheduler"),
    ("dask: {}", "either scheduler"),
    ("dask: {scheduler: 'local:2', chunks: 4}", "dask.chunks: Extra inputs are not permitted"),
    ("dask: {scheduler: 'local:2', chunk_size: 0}", "dask.chunk_size"),
    ("dask: {scheduler: 'tls://h:8786', tls: {ca_file: /ca.pem}}", "dask.tls.cert: Field required"),
    ("executor: dask", "executor: Extra inputs"),
    ("dask: [local]", "dask"),
    ("dask: {scheduler: 'local:2'", "not valid YAML"),
    ("- local:2", "expected a mapping"),
])
def test_a_bad_settings_file_says_which_file_and_key(text, message):
    with pytest.raises(SettingsError) as err:
        parse_settings(text, "/srv/omero/etc/openhcs-omero.yaml")
    assert str(err.value).startswith("/srv/omero/etc/openhcs-omero.yaml: ")
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_dask_option_keeps_the_files_tls_and_chunks():
    file = parse_settings("dask:\n  scheduler: tls://cluster:8786\n  chunk_size: 4\n"
                          "  tls: {ca_file: /ca.pem, cert: /c.pem, key: /k.pem}\n", "f.yaml")
    chosen = dask_option("tls://other:8786", file)
    assert (chosen.scheduler, chosen.chunk_size, chosen.tls.ca_file, chosen.origin) == \
        ("tls://other:8786", 4, "/ca.pem", "--dask")
    with pytest.raises(SettingsError, match="--dask: local:N"):
        dask_option("local:0")


@pytest.mark.parametrize("address", ["tcp://192.0.2.10:8786", "192.0.2.10:8786", "ucx://192.0.2.10:8786"])
def test_a_remote_cluster_without_tls_is_refused_before_connecting(address):
    """The session key would cross the network in the clear; 192.0.2.0/24 is a
    documentation network: nothing answers there, and nothing is tried."""
    from openhcs_omero_lib.execution.dask_backend import DaskBackend

    with pytest.raises(SettingsError, match="not encrypted; use a tls:// address"):
        DaskBackend.open(dask_option(address))


def test_loopback_and_tls_addresses_and_explicit_consent_pass_the_check():
    from openhcs_omero_lib.execution.dask_backend import check_encryption
    from openhcs_omero_lib.execution.settings import DaskSettings

    for address in ("tcp://127.0.0.1:8786", "tcp://localhost:8786", "tls://192.0.2.10:8786", "local:2"):
        check_encryption(DaskSettings(scheduler=address))
    check_encryption(DaskSettings(scheduler="tcp://192.0.2.10:8786", allow_unencrypted=True))
    with pytest.raises(SettingsError, match="SLURM workers run on other machines"):
        check_encryption(DaskSettings(slurm={"cores": 2}))
    check_encryption(DaskSettings(slurm={"cores": 2, "security": True}))


def test_cli_refuses_an_unencrypted_remote_scheduler_in_one_line(small_plate, tmp_path, capsys):
    out = tmp_path / "out"
    code = main(["run", str(small_plate.folder), "--dask", "tcp://192.0.2.10:8786", "--out", str(out),
                 "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert err[-1].startswith("openhcs-omero: error: --dask: the scheduler tcp://192.0.2.10:8786 is on another")
    assert not out.exists()


def test_cli_refuses_a_bad_settings_file(small_plate, tmp_path, capsys, monkeypatch):
    bad = tmp_path / "settings.yaml"
    bad.write_text("dask: {scheduler: 'local:2', workers: 3}\n")
    monkeypatch.setenv(CONFIG_ENV, str(bad))
    code = main(["run", str(small_plate.folder), "--out", str(tmp_path / "out"), "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert err[-1] == f"openhcs-omero: error: {bad}: dask.workers: Extra inputs are not permitted"
    assert not (tmp_path / "out").exists()


def test_slurm_settings_make_the_job_script(tmp_path):
    """The settings that matter on a batch cluster reach SLURM's job script; nothing
    is submitted until a run scales the cluster."""
    from openhcs_omero_lib.execution.dask_backend import slurm_cluster

    settings = parse_settings(textwrap.dedent("""\
        dask:
          slurm:
            jobs: 4
            cores: 8
            processes: 8
            memory: 32GB
            walltime: "00:50:00"
            queue: hcs
            account: imaging
            python: /opt/omero/server/venv3/bin/python
            security: true
            shared_temp_directory: %s
        """) % tmp_path, "slurm.yaml").dask
    cluster = slurm_cluster(settings)
    try:
        script = cluster.job_script()
        assert cluster.scheduler.allowed_failures == 1
    finally:
        cluster.close()
    assert "#SBATCH -t 00:50:00" in script
    assert "#SBATCH -p hcs" in script and "#SBATCH -A imaging" in script
    assert "#SBATCH --cpus-per-task=8" in script and "#SBATCH --mem=30G" in script
    assert "/opt/omero/server/venv3/bin/python -m distributed.cli.dask_worker tls://" in script
    assert "--nthreads 1" in script and "--nworkers 8" in script and "--tls-ca-file" in script


def test_unknown_slurm_settings_are_refused():
    from openhcs_omero_lib.execution.dask_backend import slurm_cluster

    settings = parse_settings("dask: {slurm: {cores: 2, memory: 4GB, gpus: 1}}", "slurm.yaml").dask
    with pytest.raises(SettingsError, match="^slurm.yaml: slurm: .*gpus"):
        slurm_cluster(settings)
