"""Where a server is: what a worker process needs to join a session, without importing
omero-py's client until it does."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ServerAddress:
    """Where a server is, as a worker needs it to join a session."""

    host: str
    port: int = 4064
    router: str | None = None
    """``Ice.Default.Router``, when not the standard one for host and port"""

    def new_client(self):
        """A new ``omero.client`` for this address (not yet joined to a session)."""
        import omero.clients  # a third of a second: only when a client is made

        pmap = [f"--Ice.Default.Router={self.router}"] if self.router else None
        return omero.client(host=self.host, port=self.port, pmap=pmap)
