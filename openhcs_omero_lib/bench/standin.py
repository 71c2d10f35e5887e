"""The OMERO stand-in in a process of its own, driven over a local control connection.

Each measured run records its own process's peak memory, so the server's object store
must live in another process; its call counts and latency are then read and set over a
control connection (JSON messages on loopback, authenticated with a random key) that
does not go through Ice and is never counted as a round-trip.

    python -m openhcs_omero_lib.bench.standin   # what StandInProcess starts
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import threading
from multiprocessing.connection import Client, Listener
from typing import Any

KEY_ENV = "OPENHCS_BENCH_CONTROL_KEY"


# ---- the server process ---------------------------------------------------------------

def serve() -> None:
    key = bytes.fromhex(os.environ.pop(KEY_ENV))
    from openhcs_omero_lib.testing import OmeroStandIn

    stop = threading.Event()
    # Ice counts the bytes of every call, so that a run can say what it received.
    with OmeroStandIn(wire_metrics=True) as server, Listener(("127.0.0.1", 0), authkey=key) as listener:
        info = {"control": listener.address[1], "host": server.host, "port": server.port,
                "router": server.router, "user": server.user.name, "password": server.password}
        print(json.dumps(info), flush=True)

        def handle(conn) -> None:
            with conn:
                while True:
                    try:
                        request = json.loads(conn.recv_bytes())
                    except (EOFError, OSError):
                        return
                    conn.send_bytes(json.dumps(_dispatch(server, request, stop)).encode())

        def accept() -> None:
            while not stop.is_set():
                try:
                    conn = listener.accept()
                except OSError:
                    return
                threading.Thread(target=handle, args=(conn,), daemon=True).start()

        threading.Thread(target=accept, daemon=True).start()
        parent = os.getppid()
        # A driver that is killed cannot say stop: end with it rather than linger.
        while not stop.wait(1.0) and os.getppid() == parent:
            pass


def _cpu_seconds() -> float:
    times = os.times()
    return times.user + times.system


def _dispatch(server, request: dict[str, Any], stop: threading.Event) -> dict[str, Any]:
    op = request.get("op")
    if op == "import":
        # hard links into the managed repository, as `omero import --transfer=ln`: no copy of the plate
        return {"plate_id": server.import_plate(request["folder"], transfer=request.get("transfer", "ln"))}
    if op == "wire":
        return {"wire": server.wire_bytes()}
    if op == "latency":
        server.latency = float(request["seconds"])
        return {}
    if op == "calls":
        return {"calls": dict(server.calls), "cpu_seconds": _cpu_seconds()}
    if op == "stop":
        stop.set()
        return {}
    return {"error": f"unknown operation {op!r}"}


# ---- the driver's side ----------------------------------------------------------------

class Control:
    """A control connection to a running stand-in process."""

    def __init__(self, port: int, key: bytes):
        self._conn = Client(("127.0.0.1", port), authkey=key)

    def request(self, op: str, **params: Any) -> dict[str, Any]:
        self._conn.send_bytes(json.dumps({"op": op, **params}).encode())
        reply = json.loads(self._conn.recv_bytes())
        if "error" in reply:
            raise RuntimeError(f"stand-in: {reply['error']}")
        return reply

    def snapshot(self) -> dict[str, Any]:
        """The server's call counts so far and the CPU time it has used."""
        return self.request("calls")

    def close(self) -> None:
        self._conn.close()


class StandInProcess:
    """Starts the stand-in process and stops it again; ``connection`` is what a run
    process needs to log in and to reach the control connection."""

    def __init__(self, env: dict[str, str] | None = None):
        self._key = secrets.token_bytes(16)
        environ = dict(env or os.environ)
        environ[KEY_ENV] = self._key.hex()
        self._proc = subprocess.Popen([sys.executable, "-m", "openhcs_omero_lib.bench.standin"],
                                      stdout=subprocess.PIPE, env=environ, text=True)
        line = self._proc.stdout.readline()  # type: ignore[union-attr]
        if not line:
            self._proc.wait()
            raise RuntimeError(f"the stand-in process did not start (status {self._proc.returncode})")
        self.info = json.loads(line)
        self.control = Control(self.info["control"], self._key)

    @property
    def connection(self) -> dict[str, Any]:
        return {**self.info, "key": self._key.hex()}

    def import_plate(self, folder: str) -> int:
        return self.control.request("import", folder=folder)["plate_id"]

    def wire(self) -> dict[str, dict[str, int]]:
        """Per operation, the calls and bytes the server has received and sent so far."""
        return self.control.request("wire")["wire"]

    def set_latency(self, seconds: float) -> None:
        self.control.request("latency", seconds=seconds)

    def close(self) -> None:
        if self._proc.poll() is None:
            try:
                self.control.request("stop")
            except (OSError, EOFError):
                pass
            try:
                self._proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self.control.close()

    def __enter__(self) -> StandInProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def control_for(connection: dict[str, Any]) -> Control:
    """A run process's own control connection, from :attr:`StandInProcess.connection`."""
    return Control(connection["control"], bytes.fromhex(connection["key"]))


if __name__ == "__main__":
    serve()
