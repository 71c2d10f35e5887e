"""Reading an OMERO plate's planes through one reused RawPixelsStore."""

from __future__ import annotations

import numpy as np
import omero

from openhcs_omero_lib.omero.connection import ServerAddress, address_of, join_session, session_key
from openhcs_omero_lib.omero.plate import OmeroPlate
from openhcs_omero_lib.omero.preflight import not_ready_message
from openhcs_omero_lib.plates.layout import SiteUnit
from openhcs_omero_lib.plates.pixels import PixelSource, SourceNotReady, SourceSpec

# Largest reply asked for in one call: well under the default Ice.MessageSizeMax
# (OMERO sets 250 MB on the server, clients often less).
MAX_REPLY_BYTES = 16 * 1024 * 1024

# OMERO's pixel type names -> numpy; planes arrive big-endian.
_DTYPES = {"int8": "i1", "uint8": "u1", "int16": ">i2", "uint16": ">u2", "int32": ">i4",
           "uint32": ">u4", "float": ">f4", "double": ">f8", "bit": "u1"}


def decode_plane(buffer: bytes, dtype: str, shape: tuple[int, ...]) -> np.ndarray:
    """Bytes from RawPixelsStore -> a native-endian array of ``shape``."""
    wire = np.dtype(_DTYPES.get(dtype, dtype))
    if wire.itemsize > 1:
        wire = wire.newbyteorder(">")
    return np.frombuffer(buffer, dtype=wire).reshape(shape).astype(wire.newbyteorder("="))


class OmeroPixelSource(PixelSource):
    """Planes of an OMERO plate. Opens one RawPixelsStore on first use and keeps it,
    switching images with ``setPixelsId``; z-stacks come in one call per channel.

    In the process that owns ``conn`` it uses that connection; a worker gets a
    :class:`SourceSpec` and joins the same session by its key."""

    def __init__(self, conn, plate: OmeroPlate, *, client=None, address: ServerAddress | None = None,
                 key: str | None = None):
        self.plate = plate
        self.layout = plate.layout
        self._conn = conn
        self._client = client  # set when this source joined the session itself
        self._address = address or (address_of(conn) if conn is not None else None)
        self._key = key or (session_key(conn) if conn is not None else None)
        self._shared_client = None  # a sibling's: used, never closed
        self._store = None
        self._current: int | None = None
        self._opts = {"omero.group": str(plate.group_id)}

    @classmethod
    def from_spec(cls, spec: SourceSpec) -> OmeroPixelSource:
        address = ServerAddress(**spec.params["address"])
        client = join_session(address, spec.secret)  # type: ignore[arg-type]
        return cls(None, spec.params["plate"], client=client, address=address, key=spec.secret)

    def spec(self) -> SourceSpec:
        address = self._address
        return SourceSpec("omero", {"address": {"host": address.host, "port": address.port,
                                                "router": address.router},
                                    "plate": self.plate}, secret=self._key)

    def sibling(self) -> OmeroPixelSource:
        """A reader with a RawPixelsStore of its own on the same connection: two
        stores can each be switched to an image and read at the same time. (Never
        two requests at once on one store: OMERO returns every read in one buffer
        it reuses, so a second request can overwrite the first one's pixels.)"""
        twin = OmeroPixelSource(self._conn, self.plate, address=self._address, key=self._key)
        twin._shared_client = self._client or self._shared_client
        return twin

    def _pixels_store(self):
        if self._store is None:
            client = self._client or self._shared_client
            sf = client.getSession() if client is not None else self._conn.c.sf
            self._store = sf.createRawPixelsStore(self._opts)
        return self._store

    def _select(self, well: str, site: int, run: int | None = None):
        try:
            pixels_id = self.plate.pixels_ids[(well, site, run)]
        except KeyError:
            in_run = f" in run {run}" if run is not None else ""
            raise FileNotFoundError(f"plate {self.layout.plate_id} has no image for well {well} field {site}"
                                    f"{in_run}") from None
        store = self._pixels_store()
        if pixels_id != self._current:
            try:
                store.setPixelsId(pixels_id, True, self._opts)
            except omero.MissingPyramidException:
                # Every field would fail alike until the server has built the pyramids
                # (omero-romio PixelsService): one reason for the plate, not one per field.
                raise SourceNotReady(not_ready_message(self.plate)) from None
            self._current = pixels_id
        return store

    def _plane_bytes(self) -> int:
        y, x = self.layout.plane_shape
        return y * x * np.dtype(_DTYPES.get(self.layout.dtype, self.layout.dtype)).itemsize

    def read_plane(self, well: str, site: int, channel: int, z: int = 1, t: int = 1,
                   run: int | None = None) -> np.ndarray:
        store = self._select(well, site, run)
        if self._plane_bytes() <= MAX_REPLY_BYTES:
            buffer = store.getPlane(z - 1, channel - 1, t - 1, self._opts)
            return decode_plane(buffer, self.layout.dtype, self.layout.plane_shape)
        # A plane too large for one reply comes in bands of whole rows.
        height, width = self.layout.plane_shape
        rows = max(1, MAX_REPLY_BYTES // (self._plane_bytes() // height))
        bands = []
        for y in range(0, height, rows):
            h = min(rows, height - y)
            buffer = store.getTile(z - 1, channel - 1, t - 1, 0, y, width, h, self._opts)
            bands.append(decode_plane(buffer, self.layout.dtype, (h, width)))
        return np.concatenate(bands)

    def read_stack(self, unit: SiteUnit, channel: int) -> np.ndarray:
        if self.layout.z_planes == 1 or self._plane_bytes() * self.layout.z_planes > MAX_REPLY_BYTES:
            return super().read_stack(unit, channel)
        store = self._select(unit.well, unit.site, unit.run)
        buffer = store.getStack(channel - 1, unit.timepoint - 1, self._opts)
        return decode_plane(buffer, self.layout.dtype, (self.layout.z_planes, *self.layout.plane_shape))

    def close(self, wait: bool = True) -> None:
        """Close the store (and a session this source joined). ``wait=False`` sends the
        store's close without waiting for its answer, where nothing depends on it."""
        store, self._store = self._store, None
        if store is not None:
            try:
                store.close() if wait else store.begin_close()
            except Exception:  # the session may already be gone; nothing is left to release
                pass
        client, self._client = self._client, None
        if client is not None:
            client.closeSession()  # detached: the user's session lives on
