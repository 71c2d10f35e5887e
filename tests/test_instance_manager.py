"""OMEROInstanceManager and ``openhcs-omero server``: probes against real sockets, logins
against the OMERO stand-in, the Docker path up to the commands it would run."""

from __future__ import annotations

import os
import re
import socket
import stat
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pytest
import yaml

from omero_fixtures import standin
from openhcs_omero_lib.omero import instance
from openhcs_omero_lib.omero.connection import OmeroConnectionError
from openhcs_omero_lib.omero.instance import (
    COMPOSE_FILE,
    STARTUP_SCRIPT,
    OmeroInstanceError,
    OMEROInstanceManager,
    compose_command,
    compose_environment,
)

REPO = Path(__file__).resolve().parents[1]
ROOT_PASSWORD = "root-pw-for-tests-7f3a"
ENV_VARS = ("OMERO_HOST", "OMERO_PORT", "OMERO_USER", "OMERO_PASSWORD", "OMERO_SESSION_KEY", "OMERO_GROUP",
            "OMERO_ROUTER", "OMERO_ROOT_PASSWORD", "OMERO_DB_PASSWORD", "OPENHCS_OMERO_SOURCE",
            "OPENHCS_OMERO_PORT", "OPENHCS_OMERO_WEB_PORT")


@pytest.fixture(autouse=True)
def isolated(monkeypatch, tmp_path):
    """No OMERO_* settings from the developer's shell, and an empty ``omero login`` store."""
    for var in ENV_VARS:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("OMERO_USERDIR", str(tmp_path / "omero-userdir"))


@pytest.fixture()
def server():
    with standin() as server:
        yield server


def manager_for(server, username=None, password=None, **kwargs) -> OMEROInstanceManager:
    return OMEROInstanceManager(server.host, server.port, username=username, password=password,
                                router=server.router, **kwargs)


# ---- sockets ---------------------------------------------------------------------------------------

@contextmanager
def listening() -> Iterator[int]:
    """A port that accepts TCP (the backlog accepts; nothing ever answers)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    try:
        yield sock.getsockname()[1]
    finally:
        sock.close()


def closed_port() -> int:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    return port


@contextmanager
def hangs_up(port: int = 0, after: float = 0.0) -> Iterator[int]:
    """From ``after`` seconds on, a port that accepts connections and closes them at once:
    TCP works, logins never do."""
    if not port:
        port = closed_port()
    stop = threading.Event()

    def serve():
        stop.wait(after)
        with socket.socket() as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(("127.0.0.1", port))
            sock.listen(8)
            sock.settimeout(0.05)
            while not stop.is_set():
                try:
                    conn, _ = sock.accept()
                    conn.close()
                except OSError:
                    pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield port
    finally:
        stop.set()
        thread.join(5)


def test_is_running_probes_the_server_port_and_web_running_the_web_port():
    with listening() as port, listening() as web_port:
        assert OMEROInstanceManager("127.0.0.1", port, web_port).is_running()
        assert OMEROInstanceManager("127.0.0.1", port, web_port).web_running()
        # each probe looks at its own port
        assert not OMEROInstanceManager("127.0.0.1", closed_port(), web_port).is_running()
        assert not OMEROInstanceManager("127.0.0.1", port, closed_port()).web_running()
    assert not OMEROInstanceManager("127.0.0.1", port, web_port).is_running()


def test_defaults_are_openhcs_ones():
    manager = OMEROInstanceManager()
    assert (manager.host, manager.port, manager.web_port) == ("localhost", 4064, 4080)


# ---- logging in ---------------------------------------------------------------------------------

def test_connect_and_get_connection_against_the_standin(server):
    manager = manager_for(server, server.user.name, server.password)
    assert manager.connect(timeout=10) is True
    conn = manager.get_connection()
    assert conn is manager.get_connection()
    assert conn.getEventContext().userName == server.user.name
    assert manager.last_error is None
    assert server.calls["sessions.created"] == 1
    manager.close()
    assert server.calls["sessions.closed"] == 1


def test_get_connection_logs_in_when_needed(server):
    manager = manager_for(server, server.user.name, server.password)
    try:
        conn = manager.get_connection()
        assert conn.getEventContext().userName == server.user.name
    finally:
        manager.close()


def test_context_manager_closes_the_connection_it_opened(server):
    with manager_for(server, server.user.name, server.password) as manager:
        key = manager.get_connection().c.getSessionId()
        assert not server.store.sessions[key].closed
    assert server.store.sessions[key].closed
    assert not manager.connected
    assert server.calls["sessions.closed"] == 1


def test_wrong_password_fails_fast_without_the_password(server):
    manager = manager_for(server, server.user.name, "not-the-password")
    started = time.monotonic()
    assert manager.connect(timeout=20) is False
    assert time.monotonic() - started < 5  # a refused login is not retried until the timeout
    assert "cannot log in" in manager.last_error and "wrong user name or password" in manager.last_error
    assert "not-the-password" not in manager.last_error
    assert "not-the-password" not in repr(manager)
    with pytest.raises(OmeroConnectionError) as raised:
        manager.get_connection()
    assert "not-the-password" not in str(raised.value)
    assert server.calls["sessions.created"] == 0


def test_wait_for_ready_logs_in_against_the_standin(server):
    with manager_for(server, server.user.name, server.password) as manager:
        assert manager.wait_for_ready(timeout=10, interval=0.1) is True
        assert manager.connected
        assert server.calls["sessions.created"] == 1


def test_wait_for_ready_is_false_on_a_closed_port_within_its_timeout():
    manager = OMEROInstanceManager("127.0.0.1", closed_port(), username="alice", password="alice-password")
    started = time.monotonic()
    assert manager.wait_for_ready(timeout=1.0, interval=0.1) is False
    assert 1.0 <= time.monotonic() - started < 3.0
    assert "nothing listening" in manager.last_error


def test_wait_for_ready_waits_for_the_port_then_for_a_login():
    # The port opens after 0.5 s but never accepts a login: past the first phase,
    # the manager keeps trying to log in until the timeout.
    with hangs_up(after=0.5) as port:
        manager = OMEROInstanceManager("127.0.0.1", port, username="alice", password="secret-pw-1")
        started = time.monotonic()
        assert manager.wait_for_ready(timeout=2.0, interval=0.1) is False
        assert 2.0 <= time.monotonic() - started < 8.0
    assert manager.last_error.startswith("cannot log in to 127.0.0.1:")
    assert "secret-pw-1" not in manager.last_error


def test_connect_without_credentials_says_so_at_once(server):
    manager = manager_for(server)
    started = time.monotonic()
    assert manager.connect(timeout=20) is False
    assert time.monotonic() - started < 2
    assert manager.last_error.startswith("no credentials")


def test_a_session_key_in_an_error_is_never_shown(server, monkeypatch):
    # OMERO names the key of a refused session ("Password check failed for '<key>'").
    key = "3f1c0b9e-5d2a-4c47-9b1e-7a6d5c4b3a21"
    monkeypatch.setenv("OMERO_SESSION_KEY", key)

    def refuse(settings):
        try:
            raise RuntimeError("server said no")
        except RuntimeError:
            raise OmeroConnectionError(f"cannot log in: Password check failed for '{key}'") from None

    monkeypatch.setattr(instance, "connect", refuse)
    manager = manager_for(server)
    assert manager.connect(timeout=0) is False
    assert key not in manager.last_error and "***" in manager.last_error


# ---- where credentials come from ----------------------------------------------------------------

def write_login_store(host: str, port: int, user: str, key: str) -> None:
    from omero.util.sessions import SessionsStore

    SessionsStore().set_current(host, user, key, props={"omero.port": str(port)})


def test_arguments_beat_the_environment(server, monkeypatch):
    monkeypatch.setenv("OMERO_USER", server.user.name)
    monkeypatch.setenv("OMERO_PASSWORD", "wrong-from-env")
    with manager_for(server, server.user.name, server.password) as manager:
        assert manager.connect(timeout=5)
    monkeypatch.setenv("OMERO_PASSWORD", server.password)
    with manager_for(server, server.user.name, "wrong-from-args") as manager:
        assert not manager.connect(timeout=5)


def test_the_environment_beats_the_login_store(server, monkeypatch):
    write_login_store(server.host, server.port, "someone", "0b7e5c1a-0000-4000-8000-000000000000")
    monkeypatch.setenv("OMERO_USER", server.user.name)
    monkeypatch.setenv("OMERO_PASSWORD", server.password)
    with manager_for(server) as manager:
        assert manager.username == server.user.name
        assert manager.connect(timeout=5)
    assert server.calls["sessions.created"] == 1 and server.calls["sessions.joined"] == 0


def test_the_login_store_is_joined_and_left_open(server):
    client = server.client()
    key = client.getSessionId()
    try:
        write_login_store(server.host, server.port, server.user.name, key)
        with manager_for(server) as manager:
            assert manager.username == server.user.name
            assert manager.connect(timeout=5)
            assert manager.get_connection().c.getSessionId() == key
        assert server.calls["sessions.joined"] == 1
        assert not server.store.sessions[key].closed  # someone's 'omero login' session survives
    finally:
        client.closeSession()


def test_a_stored_session_of_another_user_is_not_used(server):
    client = server.client()
    try:
        write_login_store(server.host, server.port, server.user.name, client.getSessionId())
        manager = manager_for(server, username="bob")
        assert manager.username == "bob"
        assert not manager.connect(timeout=0)
        assert manager.last_error.startswith("no credentials")
    finally:
        client.closeSession()


# ---- Docker Compose -----------------------------------------------------------------------------

class Recorder:
    """A runner standing in for subprocess.run: records every call, answers as told."""

    def __init__(self, answers: dict[tuple[str, ...], tuple[int, str]] | None = None):
        self.calls: list[tuple[list[str], dict]] = []
        self.answers = answers or {}

    def __call__(self, argv, **kwargs):
        self.calls.append((list(argv), kwargs))
        for prefix, (code, stderr) in self.answers.items():
            if tuple(argv[:len(prefix)]) == prefix:
                return subprocess.CompletedProcess(argv, code, "", stderr)
        return subprocess.CompletedProcess(argv, 0, "", "")

    @property
    def argvs(self) -> list[list[str]]:
        return [argv for argv, _ in self.calls]


def fake_bin(tmp_path: Path, *names: str, script: str = "#!/bin/sh\nexit 0\n") -> Path:
    folder = tmp_path / "bin"
    folder.mkdir(exist_ok=True)
    for name in names:
        path = folder / name
        path.write_text(script)
        path.chmod(0o755)
    return folder


def all_text(recorder: Recorder) -> str:
    return "\n".join(" ".join(argv) for argv in recorder.argvs)


def test_compose_command():
    up = compose_command("up", compose_file="/x/docker-compose.yml", project_name="p")
    assert up == ["docker", "compose", "-f", "/x/docker-compose.yml", "-p", "p", "up", "-d"]
    assert compose_command("down", project_name="p")[-3:] == ["-p", "p", "down"]
    assert compose_command("down", project_name="p", remove_volumes=True)[-2:] == ["down", "--volumes"]
    assert compose_command("up", base=["docker-compose"])[:3] == ["docker-compose", "-f", str(COMPOSE_FILE)]
    with pytest.raises(ValueError):
        compose_command("restart")


def test_start_runs_compose_up_with_the_shipped_file(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(fake_bin(tmp_path, "docker")))
    monkeypatch.setenv("OMERO_ROOT_PASSWORD", ROOT_PASSWORD)
    runner = Recorder()
    manager = OMEROInstanceManager("127.0.0.1", 14064, 14080, runner=runner)
    assert manager.start_via_docker_compose(wait=False) is True
    assert runner.argvs == [
        ["docker", "compose", "version"],
        ["docker", "info", "--format", "{{.ServerVersion}}"],
        ["docker", "compose", "-f", str(COMPOSE_FILE), "-p", "openhcs-omero", "up", "-d"],
    ]
    env = runner.calls[-1][1]["env"]
    assert env["OMERO_ROOT_PASSWORD"] == ROOT_PASSWORD
    assert env["OMERO_DB_PASSWORD"] == ROOT_PASSWORD  # the default, passed by environment only
    assert env["OPENHCS_OMERO_SOURCE"] == str(REPO)  # this checkout: the package is installed editable
    assert (env["OPENHCS_OMERO_PORT"], env["OPENHCS_OMERO_WEB_PORT"]) == ("14064", "14080")
    assert ROOT_PASSWORD not in all_text(runner)
    assert manager.username == "root"  # waits as the root user the new server gets


def test_start_waits_until_the_server_accepts_the_root_login(server, tmp_path, monkeypatch):
    server.add_user("root", ROOT_PASSWORD, [server.group])
    monkeypatch.setenv("PATH", str(fake_bin(tmp_path, "docker")))
    monkeypatch.setenv("OMERO_ROOT_PASSWORD", ROOT_PASSWORD)
    with manager_for(server, runner=Recorder()) as manager:
        assert manager.start_via_docker_compose(project_name="mine", timeout=10) is True
        assert manager.get_connection().getEventContext().userName == "root"


def test_start_needs_the_root_password(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(fake_bin(tmp_path, "docker")))
    runner = Recorder()
    with pytest.raises(OmeroInstanceError, match="OMERO_ROOT_PASSWORD"):
        OMEROInstanceManager(runner=runner).start_via_docker_compose()
    assert runner.calls == []


def test_start_without_docker_says_docker_is_missing(tmp_path, monkeypatch):
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    monkeypatch.setenv("OMERO_ROOT_PASSWORD", ROOT_PASSWORD)
    runner = Recorder()
    with pytest.raises(OmeroInstanceError) as raised:
        OMEROInstanceManager(runner=runner).start_via_docker_compose()
    assert "Docker is not installed" in str(raised.value) and "'docker'" in str(raised.value)
    assert ROOT_PASSWORD not in str(raised.value)
    assert runner.calls == []


def test_start_with_an_unreachable_daemon_says_so(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(fake_bin(tmp_path, "docker")))
    monkeypatch.setenv("OMERO_ROOT_PASSWORD", ROOT_PASSWORD)
    runner = Recorder({("docker", "info"): (1, "Cannot connect to the Docker daemon at unix:///var/run/docker.sock.")})
    with pytest.raises(OmeroInstanceError) as raised:
        OMEROInstanceManager(runner=runner).start_via_docker_compose()
    assert "Docker daemon is not reachable" in str(raised.value)
    assert "Cannot connect to the Docker daemon" in str(raised.value)
    assert not any("up" in argv for argv in runner.argvs)


def test_start_without_compose_plugin_uses_docker_compose(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(fake_bin(tmp_path, "docker", "docker-compose")))
    monkeypatch.setenv("OMERO_ROOT_PASSWORD", ROOT_PASSWORD)
    runner = Recorder({("docker", "compose"): (1, "docker: unknown command: docker compose")})
    OMEROInstanceManager(runner=runner).start_via_docker_compose(wait=False)
    assert runner.argvs[-1] == ["docker-compose", "-f", str(COMPOSE_FILE), "-p", "openhcs-omero", "up", "-d"]


def test_start_without_any_compose_says_compose_is_missing(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(fake_bin(tmp_path, "docker")))
    monkeypatch.setenv("OMERO_ROOT_PASSWORD", ROOT_PASSWORD)
    runner = Recorder({("docker", "compose"): (1, "docker: unknown command: docker compose")})
    with pytest.raises(OmeroInstanceError, match="Docker Compose is not installed"):
        OMEROInstanceManager(runner=runner).start_via_docker_compose()


def test_a_failing_compose_up_is_an_error_without_the_password(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(fake_bin(tmp_path, "docker")))
    monkeypatch.setenv("OMERO_ROOT_PASSWORD", ROOT_PASSWORD)
    runner = Recorder({("docker", "compose", "-f"): (1, "")})
    with pytest.raises(OmeroInstanceError) as raised:
        OMEROInstanceManager(runner=runner).start_via_docker_compose()
    assert "exit status 1" in str(raised.value) and ROOT_PASSWORD not in str(raised.value)


def test_stop_runs_compose_down_without_needing_passwords(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(fake_bin(tmp_path, "docker")))
    runner = Recorder()
    OMEROInstanceManager(runner=runner).stop_via_docker_compose(project_name="p", remove_volumes=True)
    assert runner.argvs[-1] == ["docker", "compose", "-f", str(COMPOSE_FILE), "-p", "p", "down", "--volumes"]
    env = runner.calls[-1][1]["env"]
    assert all(env[var] for var in instance.REQUIRED_BY_COMPOSE_FILE)  # compose interpolates them even for down
    OMEROInstanceManager(runner=runner).stop_via_docker_compose()
    assert runner.argvs[-1][-1] == "down"


# ---- the shipped compose file and startup script ------------------------------------------------

def compose_file() -> dict:
    return yaml.safe_load(COMPOSE_FILE.read_text())


def test_compose_file_has_the_three_services_on_official_images():
    services = compose_file()["services"]
    assert set(services) == {"database", "omero-server", "omero-web"}
    assert services["database"]["image"].startswith("postgres:")
    assert services["omero-server"]["image"] == "openmicroscopy/omero-server:5"
    assert services["omero-web"]["image"] == "openmicroscopy/omero-web-standalone:5"
    assert any(v.startswith("database:") for v in services["database"]["volumes"])
    ports = {p.rsplit(":", 1)[1] for s in services.values() for p in s.get("ports", [])}
    assert ports == {"4063", "4064", "4080"}
    for service in services.values():  # nothing overrides the images' unprivileged users
        assert "user" not in service and not service.get("privileged")


def test_compose_file_has_no_literal_password():
    services = compose_file()["services"]
    secrets = {(name, key): value for name, s in services.items() for key, value in s.get("environment", {}).items()
               if re.search("pass", key, re.IGNORECASE)}
    assert set(secrets) == {("database", "POSTGRES_PASSWORD"), ("omero-server", "CONFIG_omero_db_pass"),
                            ("omero-server", "ROOTPASS")}
    for value in secrets.values():
        assert re.fullmatch(r"\$\{OMERO_(ROOT|DB)_PASSWORD:\?[^}]+\}", value), value
    assert services["omero-server"]["environment"]["ROOTPASS"].startswith("${OMERO_ROOT_PASSWORD:?")


def test_compose_file_mounts_the_startup_script_of_the_package():
    server = compose_file()["services"]["omero-server"]
    mounts = [v.split(":") for v in server["volumes"]]
    startup = [(src, dst) for src, dst, *_ in mounts if dst.startswith("/startup/")]
    assert len(startup) == 1
    src, dst = startup[0]
    assert (COMPOSE_FILE.parent / src).resolve() == STARTUP_SCRIPT
    assert STARTUP_SCRIPT.stat().st_mode & stat.S_IXUSR  # the image runs only executables
    assert dst == "/startup/" + STARTUP_SCRIPT.name
    env = server["environment"]
    assert env["OPENHCS_OMERO_SITE"] in env["PYTHONPATH"].split(":")


def test_compose_environment_satisfies_every_required_variable():
    required = set(re.findall(r"\$\{(\w+):\?", COMPOSE_FILE.read_text()))
    assert required == set(instance.REQUIRED_BY_COMPOSE_FILE)
    up = compose_environment({"OMERO_ROOT_PASSWORD": ROOT_PASSWORD}, port=4064, web_port=4080)
    assert all(up.get(var) for var in required)
    down = compose_environment({}, port=4064, web_port=4080, for_down=True)
    assert all(down.get(var) for var in required)
    assert compose_environment({"OMERO_ROOT_PASSWORD": "a", "OMERO_DB_PASSWORD": "b"},
                               port=1, web_port=2)["OMERO_DB_PASSWORD"] == "b"


def test_the_package_ships_the_compose_file_and_the_script():
    import tomllib

    patterns = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    package = REPO / "openhcs_omero_lib"
    shipped = {p.resolve() for pattern in patterns["openhcs_omero_lib"] for p in package.glob(pattern)}
    assert {COMPOSE_FILE, STARTUP_SCRIPT} <= shipped


def run_startup_script(tmp_path: Path, **env) -> subprocess.CompletedProcess:
    site = tmp_path / "site"
    base = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "OPENHCS_OMERO_SRC": str(REPO),
            "OPENHCS_OMERO_SITE": str(site), "PYTHONPATH": str(site),
            "OPENHCS_OMERO_SERVER_PYTHON": sys.executable, "OPENHCS_OMERO_SCRIPTS_DIR": str(tmp_path / "scripts"),
            # offline: build with this Python's setuptools, install nothing from an index
            "PIP_NO_INDEX": "1", "PIP_NO_BUILD_ISOLATION": "0"}
    return subprocess.run(["bash", str(STARTUP_SCRIPT)], env={**base, **env}, cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)


def test_startup_script_installs_the_package_and_copies_the_scripts(tmp_path):
    import tomllib

    # Dependencies already in place (as after a first start): only the package is installed.
    requirements = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    site = tmp_path / "site"
    site.mkdir()
    (site / ".openhcs-omero-dependencies").write_text(
        "\n".join(r for r in requirements if not r.startswith("omero-py")))
    done = run_startup_script(tmp_path)
    assert done.returncode == 0, done.stderr
    assert (site / "openhcs_omero_lib" / "omero" / "script_support.py").is_file()
    copied = sorted(p.name for p in (tmp_path / "scripts").iterdir())
    assert copied == sorted(p.name for p in (REPO / "scripts" / "omero" / "openhcs").glob("*.py"))
    where = subprocess.run([sys.executable, "-c", "import openhcs_omero_lib; print(openhcs_omero_lib.__file__)"],
                           env={**os.environ, "PYTHONPATH": str(site)}, cwd=tmp_path, capture_output=True, text=True)
    assert Path(where.stdout.strip()).is_relative_to(site)


def test_startup_script_refuses_a_python_path_without_its_site(tmp_path):
    done = run_startup_script(tmp_path, PYTHONPATH="")
    assert done.returncode == 1 and "PYTHONPATH must contain" in done.stderr


def test_startup_script_refuses_a_folder_that_is_not_the_source(tmp_path):
    done = run_startup_script(tmp_path, OPENHCS_OMERO_SRC=str(tmp_path))
    assert done.returncode == 1 and "not an openhcs-omero source checkout" in done.stderr


# ---- openhcs-omero server ----------------------------------------------------------------------

def run_cli(argv: list[str]) -> int:
    from openhcs_omero_lib.cli.app import main

    return main(argv)


def standin_args(server) -> list[str]:
    return ["--host", server.host, "--port", str(server.port), "--router", server.router]


def test_server_status_against_the_standin(server, monkeypatch, capsys):
    monkeypatch.setenv("OMERO_USER", server.user.name)
    monkeypatch.setenv("OMERO_PASSWORD", server.password)
    with listening() as web_port:
        code = run_cli(["server", "status", *standin_args(server), "--web-port", str(web_port)])
    lines = capsys.readouterr().out.splitlines()
    assert code == 0
    assert lines == [f"server  {server.host}:{server.port}  open",
                     f"web     {server.host}:{web_port}  open",
                     f"login   {server.user.name}  ok"]
    assert server.calls["sessions.created"] == server.calls["sessions.closed"] == 1


def test_server_status_on_a_closed_port(monkeypatch, capsys):
    monkeypatch.setenv("OMERO_USER", "alice")
    monkeypatch.setenv("OMERO_PASSWORD", "pw-never-printed")
    port, web_port = closed_port(), closed_port()
    code = run_cli(["server", "status", "--host", "127.0.0.1", "--port", str(port), "--web-port", str(web_port)])
    out = capsys.readouterr().out
    assert code == 1
    assert out.splitlines() == [f"server  127.0.0.1:{port}  closed",
                                f"web     127.0.0.1:{web_port}  closed",
                                f"login   alice  failed: nothing listening on 127.0.0.1:{port}"]
    assert "pw-never-printed" not in out


FAKE_DOCKER = """#!/bin/sh
# Records its arguments (and whether it got the root password, never the password itself).
if [ -n "$OMERO_ROOT_PASSWORD" ]; then has=with-root-password; else has=without-root-password; fi
echo "$* [$has]" >> "$FAKE_DOCKER_LOG"
exit 0
"""


def test_server_start_and_stop_run_docker_compose(server, tmp_path, monkeypatch, capsys):
    server.add_user("root", ROOT_PASSWORD, [server.group])
    log = tmp_path / "docker.log"
    monkeypatch.setenv("PATH", f"{fake_bin(tmp_path, 'docker', script=FAKE_DOCKER)}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_DOCKER_LOG", str(log))
    monkeypatch.setenv("OMERO_ROOT_PASSWORD", ROOT_PASSWORD)

    assert run_cli(["server", "start", *standin_args(server), "--timeout", "10"]) == 0
    out = capsys.readouterr().out
    assert f"ready: logged in to {server.host}:{server.port} as root" in out
    assert f"compose -f {COMPOSE_FILE} -p openhcs-omero up -d [with-root-password]" in log.read_text()

    assert run_cli(["server", "stop", "--project", "mine", "--remove-volumes"]) == 0
    assert log.read_text().splitlines()[-1] == f"compose -f {COMPOSE_FILE} -p mine down --volumes [with-root-password]"
    out += capsys.readouterr().out
    assert "volumes are deleted" in out
    assert ROOT_PASSWORD not in out + log.read_text()


def test_server_start_without_root_password_is_a_user_error(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PATH", str(fake_bin(tmp_path, "docker", script=FAKE_DOCKER)))
    assert run_cli(["server", "start"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "OMERO_ROOT_PASSWORD" in err[0]


def test_server_start_without_docker_is_a_user_error(tmp_path, monkeypatch, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    monkeypatch.setenv("OMERO_ROOT_PASSWORD", ROOT_PASSWORD)
    assert run_cli(["server", "start"]) == 2
    err = capsys.readouterr().err
    assert "Docker is not installed" in err and ROOT_PASSWORD not in err


def test_the_server_command_module_does_not_import_omero():
    code = ("import sys, openhcs_omero_lib.cli.server\n"
            "print(sorted(m for m in sys.modules if m == 'Ice' or m == 'omero' or m.startswith('omero.')))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
