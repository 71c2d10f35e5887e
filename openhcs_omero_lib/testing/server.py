"""An in-memory OMERO server on loopback, for tests without a real server.

:class:`OmeroStandIn` replaces only OMERO's server side: a Glacier2 router and the
services (query, update, raw pixels, raw file, tables, sessions, admin, delete
commands) as Ice servants on ``127.0.0.1``. Clients are real ``omero.client`` and
``BlitzGateway`` objects talking real Ice, so the adapter, omero-py and worker
processes joining a session by its key all run their production code paths. It
counts calls per service method (``calls``), can add latency to every call, and can
make chosen calls fail.

    with OmeroStandIn() as server:
        plate_id = server.import_plate("path/to/imagexpress/folder")
        conn = server.gateway()           # logged in as server.user
        ...
        server.calls["RawPixelsStore.getPlane"]
"""

from __future__ import annotations

import collections
import contextlib
import os
import shutil
import tempfile
import threading
import time
import uuid as uuidlib
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import Ice
import omero
import omero.clients
import omero.model
import omero.rtypes
from omero.rtypes import rint, rlong, rstring

from openhcs_omero_lib.plates.imagexpress import ImageXpressSource, read_layout
from openhcs_omero_lib.testing import acl
from openhcs_omero_lib.testing.repository import (
    RepositoryInfo,
    add_fileset,
    copy_into_repository,
    new_repositories,
    template_folder,
)
from openhcs_omero_lib.testing.services import RouterServant, ServiceFactoryService
from openhcs_omero_lib.testing.store import Group, Session, Store, User, class_name


class OmeroStandIn:
    """See the module docstring. ``latency`` is added to every service call, in seconds;
    with ``wire_metrics`` Ice counts the bytes of every call (:meth:`wire_bytes`)."""

    def __init__(self, latency: float = 0.0, user: str = "alice", password: str = "alice-password", *,
                 tables_enabled: bool = True, pyramid_threshold: int = 3192 * 3192, wire_metrics: bool = False,
                 data_dir: str | os.PathLike | None = None):
        self.store = Store()
        self.tables_enabled = tables_enabled
        """Whether OMERO.tables runs (SharedResources.areTablesEnabled)"""
        self.pyramid_threshold = pyramid_threshold
        """Planes of more pixels than this need a pyramid (the server's
        omero.pixeldata.max_plane_width x max_plane_height, 3192 x 3192 by default);
        :meth:`import_plate` leaves their pyramids to be built (:meth:`build_pyramids`)"""
        self.pyramids_pending: set[int] = set()
        """Pixels IDs whose pyramid is not built yet: setPixelsId raises MissingPyramidException"""
        self.latency = latency
        self.calls: collections.Counter[str] = collections.Counter()
        self._injected: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._in_flight: dict[int, int] = {}
        self._connections: dict[str, ServiceFactoryService] = {}
        self._connection_objects: dict[str, Any] = {}
        self._servants: dict[Any, Any] = {}  # Ice identity -> servant, while it is on the adapter
        self.group: Group = self.store.add_group("lab", "rwra--")
        self.user: User = self.store.add_user(user, password, [self.group])
        self.password = password
        # The server's data folder (omero.data.dir) holds the managed repository, where
        # imports put their files; a temporary one, removed on close, unless given.
        self._own_data = data_dir is None
        base = Path(tempfile.mkdtemp(prefix="omero-standin-") if data_dir is None else data_dir)
        self.data_dir = base / "OMERO" if data_dir is None else base
        self.repositories: list[RepositoryInfo] = new_repositories(
            self.store.next_id, self.data_dir, (base if data_dir is None else self.data_dir) / "lib" / "scripts")
        """The repositories ``SharedResources.repositories()`` describes, the managed one last"""
        self.tables_repo_id = self.repositories[0].id
        self._sources: list[ImageXpressSource] = []
        self.open_stateful: collections.Counter[str] = collections.Counter()
        self.scripts: dict[int, str] = {}
        """Official scripts: OriginalFile ID -> text"""
        self.jobs: dict[int, Any] = {}
        """Script jobs started through IScript.runScript: job ID -> JobProcess"""
        self.processor_available = True
        self.cancel_job_signals = False
        """Whether JobHandle.cancelJob also signals the script (see script_service)"""
        self.scripts_timeout = 3600.0
        """``omero.scripts.timeout`` in seconds: the longest a job's session lives"""
        self.processor_check_seconds = 60.0
        """How often the Processor checks its processes (omero-py omero.util.Resources)"""
        self.shutdown_wait = 6.0
        """Seconds between the SIGTERMs of a shutdown, before SIGKILL (processor.py ProcessI.shutdown)"""
        self._closes_with: dict[str, list[Callable[[], None]]] = collections.defaultdict(list)

        self.communicator = Ice.initialize([
            "--Ice.ThreadPool.Server.Size=4", "--Ice.ThreadPool.Server.SizeMax=64",
            "--Ice.MessageSizeMax=262144", "--Ice.Warn.Connections=0",
        ] + (_WIRE_METRICS if wire_metrics else []))
        # Objects sent by clients (links, annotations) must arrive as omero.model.*I.
        from omero import ObjectFactoryRegistrar

        ObjectFactoryRegistrar.registerObjectFactory(self.communicator, None)
        for of in list(omero.rtypes.ObjectFactories.values()):
            of.register(self.communicator)
        self.adapter = self.communicator.createObjectAdapterWithEndpoints("OmeroStandIn", "tcp -h 127.0.0.1 -p 0")
        self.adapter.add(RouterServant(self), Ice.Identity("router", "OMERO.Glacier2"))
        self.adapter.activate()
        self.host = "127.0.0.1"
        self.port = self.adapter.getEndpoints()[0].getInfo().port

    # ---- lifecycle --------------------------------------------------------------------------

    @property
    def router(self) -> str:
        """The ``Ice.Default.Router`` a client needs (plain TCP: no SSL on loopback)."""
        return f"OMERO.Glacier2/router:tcp -p {self.port} -h {self.host}"

    @property
    def managed_repository(self) -> Path:
        """The managed repository's root, as ``omero fs repos`` would show it."""
        return next(r.folder for r in self.repositories if r.managed)

    def close(self) -> None:
        for source in self._sources:
            source.close()
        self.communicator.destroy()
        if self._own_data:
            shutil.rmtree(self.data_dir.parent, ignore_errors=True)

    def __enter__(self) -> OmeroStandIn:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- clients ----------------------------------------------------------------------------

    def client_properties(self) -> dict[str, str]:
        return {"omero.host": self.host, "omero.port": str(self.port), "Ice.Default.Router": self.router}

    def client(self, user: str | None = None, password: str | None = None) -> omero.client:
        """A real ``omero.client`` logged in to the stand-in."""
        c = omero.client(host=self.host, port=self.port,
                         pmap=[f"--Ice.Default.Router={self.router}"])
        c.createSession(user or self.user.name, password or self.password)
        return c

    def gateway(self, user: str | None = None, password: str | None = None):
        from omero.gateway import BlitzGateway

        return BlitzGateway(client_obj=self.client(user, password))

    # ---- what the router and services call ------------------------------------------------

    def create_session(self, username: str, password: str, current) -> Any:
        with self._lock:
            existing = self.store.sessions.get(username)
            if existing is not None and username == password:
                if existing.closed:
                    raise omero.RemovedSessionException(message="session is closed")
                session = existing
                self.calls["sessions.joined"] += 1
            else:
                user = self.store.users.get(username)
                if user is None or user.password != password:
                    import Glacier2
                    if username == password:  # joining a session that is gone: the server quotes the key
                        raise Glacier2.PermissionDeniedException(reason=f"Password check failed for '{username}'")
                    raise Glacier2.PermissionDeniedException(reason="wrong user name or password")
                session = Session(str(uuidlib.uuid4()), user, user.default_group)
                self.store.sessions[session.uuid] = session
                self.calls["sessions.created"] += 1
            session.connections += 1
        sf = ServiceFactoryService(self, session)
        prx = self.adapter.add(sf, Ice.Identity(session.uuid, "sf-" + str(uuidlib.uuid4())))
        self._connections[current.con.toString()] = sf
        self._connection_objects[current.con.toString()] = current.con
        import Glacier2
        return Glacier2.SessionPrx.uncheckedCast(prx)

    def destroy_connection(self, connection) -> None:
        self._connection_objects.pop(connection.toString(), None)
        sf = self._connections.pop(connection.toString(), None)
        if sf is not None:
            self.end_connection(sf)

    def end_connection(self, sf: ServiceFactoryService) -> None:
        with self._lock:
            if sf.closed:
                return
            sf.closed = True
            session = sf.session
            session.connections -= 1
            if sf.detached or session.connections > 0:
                return
            session.closed = True
            self.calls["sessions.closed"] += 1
        self.session_ended(session)

    def closes_with(self, session: Session, close: Callable[[], None]) -> None:
        """Call ``close`` when ``session`` ends (a servant it holds, such as a job's
        InteractiveProcessor: omero-blitz omero/cmd/SessionI.java, cleanServants)."""
        with self._lock:
            self._closes_with[session.uuid].append(close)

    def session_ended(self, session: Session) -> None:
        """What the server does when a session ends: the servants it holds are cleaned
        (:meth:`closes_with`), and its service factories are destroyed, each closing
        the stateful services it made (omero-blitz ServiceFactoryI.doDestroy calls
        CloseableServant.close), so stores a killed process left open go with it."""
        with self._lock:
            closers = self._closes_with.pop(session.uuid, [])
            left = [(ident, s) for ident, s in self._servants.items() if s.session is session]
            for ident, _ in left:
                del self._servants[ident]
        for close in closers:
            close()
        for ident, servant in left:
            self.open_stateful[type(servant).service_name] -= 1
            with contextlib.suppress(Ice.NotRegisteredException, Ice.ObjectAdapterDeactivatedException):
                self.adapter.remove(ident)

    def add_servant(self, cls, session: Session, prx_type, **attrs):
        servant = cls(self, session)
        for key, value in attrs.items():
            setattr(servant, key, value)
        ident = Ice.Identity(str(uuidlib.uuid4()), cls.service_name)
        prx = self.adapter.add(servant, ident)
        with self._lock:
            self._servants[ident] = servant
        self.open_stateful[cls.service_name] += 1
        return prx_type.uncheckedCast(prx)

    def servant_of(self, prx):
        return self.adapter.find(prx.ice_getIdentity())

    def remove_servant(self, current) -> None:
        with self._lock:
            servant = self._servants.pop(current.id, None)
        if servant is not None:
            self.adapter.remove(current.id)
            self.open_stateful[type(servant).service_name] -= 1

    @contextlib.contextmanager
    def in_flight(self, servant):
        """Around one call to ``servant``: counts ``<service>.overlapping`` when
        another call to it is still in flight."""
        with self._lock:
            busy = self._in_flight.get(id(servant), 0)
            self._in_flight[id(servant)] = busy + 1
            if busy:
                self.calls[f"{servant.service_name}.overlapping"] += 1
        try:
            yield
        finally:
            with self._lock:
                self._in_flight[id(servant)] -= 1

    def _before_call(self, key: str, session: Session, current) -> None:
        with self._lock:
            self.calls[key] += 1
            injected = None
            for rule in self._injected:
                if rule["key"] == key:
                    if rule["skip"] > 0:
                        rule["skip"] -= 1
                    elif rule["times"] != 0:
                        rule["times"] -= 1
                        injected = rule["error"]
                    break
        if self.latency:
            time.sleep(self.latency)
        if session.closed:
            raise omero.RemovedSessionException(message="the session was closed")
        if callable(injected):
            injected = injected()  # may hold the call first; None lets it through
        if injected is not None:
            raise injected

    # ---- test controls ----------------------------------------------------------------------

    def fail(self, key: str, error: Exception | Callable[[], Exception], *, after: int = 0, times: int = -1) -> None:
        """Make calls of ``key`` (``"IUpdate.saveAndReturnObject"``) raise ``error``,
        after letting ``after`` calls through, ``times`` times (-1: always). A
        callable ``error`` is called in the server's thread when the call comes (it
        may wait, to hold the call) and returns the error to raise, or None to let
        the call go on."""
        with self._lock:
            self._injected.append({"key": key, "error": error, "skip": after, "times": times})

    def remove_session(self, session: Session) -> None:
        """End ``session`` as an administrator or the session's timeout does on a
        server: every later call in it raises RemovedSessionException, its services
        close, and the connections of its clients are dropped."""
        with self._lock:
            session.closed = True
            self.calls["sessions.closed"] += 1
            dropped = [self._connection_objects.pop(key) for key, sf in list(self._connections.items())
                       if sf.session is session and key in self._connection_objects]
        self.session_ended(session)
        for connection in dropped:
            with contextlib.suppress(Ice.Exception):
                connection.close(True)

    def clear_failures(self) -> None:
        with self._lock:
            self._injected.clear()

    def wire_bytes(self) -> dict[str, dict[str, int]]:
        """Per operation name (``saveAndReturnIds``), what the server received so far:
        ``calls``, ``request_bytes`` (the requests' encoded parameters) and
        ``reply_bytes``, as Ice's own dispatch metrics count them (IceMX)."""
        import IceMX

        admin = IceMX.MetricsAdminPrx.checkedCast(self.communicator.getAdmin(), "Metrics")
        views, _ = admin.getMetricsView("Wire")
        return {m.id: {"calls": m.total, "request_bytes": m.size, "reply_bytes": m.replySize}
                for m in views.get("Dispatch", [])}

    def reset_counts(self) -> None:
        with self._lock:
            self.calls.clear()

    def session_of(self, client: omero.client) -> Session:
        return self.store.sessions[client.getSessionId()]

    # ---- content ----------------------------------------------------------------------------

    def add_group(self, name: str, permissions: str = "rw----") -> Group:
        return self.store.add_group(name, permissions)

    def add_user(self, name: str, password: str, groups: list[Group]) -> User:
        return self.store.add_user(name, password, groups)

    def _owner_group(self, owner: User | None, group: Group | None) -> tuple[User, int]:
        owner = owner or self.user
        return owner, (group.id if group else owner.default_group)

    def import_plate(self, folder: str | os.PathLike | Sequence[tuple[str, str | os.PathLike]], *,
                     name: str | None = None, owner: User | None = None, group: Group | None = None,
                     missing: Iterable[tuple] = (), transfer: str = "upload") -> int:
        """Create Plate, Wells, WellSamples, Images, Pixels and Channels for an
        ImageXpress folder; pixels are read from its files on demand.

        ``folder`` may instead be a list of ``(run name, folder)``: a plate imaged in
        several runs, one PlateAcquisition per run, whose folders have the same wells
        and fields. As an import of such a plate does, every well lists the fields of
        all runs, run after run (run ``r``'s field ``s`` at index ``r * sites + s - 1``).
        ``missing`` names fields the plate lacks, as ``(well, site)`` (or ``(run name,
        well, site)`` with runs): they leave gaps in their wells' lists, and the other
        fields keep their index.

        As an import does, the plate's files (its ``.HTD`` and images) go into a new
        folder of the managed repository (:attr:`managed_repository`), copied, or
        hard-linked with ``transfer="ln"``; one Fileset lists them and holds every
        image, and RawPixelsStore reads the planes from them there."""
        runs = [(None, folder)] if isinstance(folder, (str, os.PathLike)) else list(folder)
        layouts = [read_layout(f)[0] for _, f in runs]  # a folder that is not a plate: nothing made
        layout = layouts[0]
        for (run_name, f), other in zip(runs, layouts):
            if (other.well_names, other.sites, other.channels, other.z_planes, other.timepoints,
                    other.plane_shape, other.dtype) != (layout.well_names, layout.sites, layout.channels,
                                                       layout.z_planes, layout.timepoints, layout.plane_shape,
                                                       layout.dtype):
                raise ValueError(f"run {run_name!r} ({f}) is not laid out as the first run")
        owner, gid = self._owner_group(owner, group)
        root = self.managed_repository
        template = template_folder(root, owner.name, owner.id)
        repo_files, client_paths, copies = [], [], []
        for index, (_, f) in enumerate(runs):
            here = Path(f).resolve()
            # one folder per run in the import's folder, as Bio-Formats keeps them apart
            kept = here.name if len(runs) == 1 else f"{index + 1}_{here.name}"
            copied = copy_into_repository(here, root / template / kept, transfer)
            copies.append(root / template / kept)
            repo_files += [f"{template}{kept}/{c.as_posix()}" for c in copied]
            client_paths += [str(here / c).lstrip("/") for c in copied]
        fileset_id = add_fileset(self.store, root, template, repo_files, client_paths, owner, gid)
        sources = [ImageXpressSource(c) for c in copies]
        self._sources.extend(sources)
        gaps = {tuple(m) if runs[0][0] is not None else (None, *m) for m in missing}
        add = self.store.add
        plate = omero.model.PlateI()
        plate.setName(rstring(name or layout.name))
        plate.setRows(rint(layout.rows))
        plate.setColumns(rint(layout.columns))
        plate = add(plate, owner, gid)
        pid = plate.getId().getValue()
        acquisitions = {}
        for run_name, _ in runs:
            if run_name is None:
                continue
            acquisition = omero.model.PlateAcquisitionI()
            acquisition.setName(rstring(run_name))
            acquisition.setPlate(omero.model.PlateI(pid, False))
            acquisitions[run_name] = add(acquisition, owner, gid, {"plate": pid}).getId().getValue()
        ptype = omero.model.PixelsTypeI()
        ptype.setValue(rstring(layout.dtype))
        for well in layout.wells:
            w = omero.model.WellI()
            w.setRow(rint(well.row - 1))
            w.setColumn(rint(well.column - 1))
            w.setPlate(omero.model.PlateI(pid, False))
            w = add(w, owner, gid, {"plate": pid})
            for run_index, ((run_name, _), source) in enumerate(zip(runs, sources)):
                for site in range(1, layout.sites + 1):
                    if (run_name, well.name, site) in gaps:
                        continue
                    image = omero.model.ImageI()
                    label = f" {run_name}" if run_name is not None else ""
                    image.setName(rstring(f"{layout.name}{label} {well.name} field {site}"))
                    image.setFileset(omero.model.FilesetI(fileset_id, False))
                    image = add(image, owner, gid, {"fileset": fileset_id})
                    iid = image.getId().getValue()
                    px = omero.model.PixelsI()
                    px.setImage(omero.model.ImageI(iid, False))
                    px.setSizeX(rint(layout.plane_shape[1]))
                    px.setSizeY(rint(layout.plane_shape[0]))
                    px.setSizeZ(rint(layout.z_planes))
                    px.setSizeC(rint(len(layout.channels)))
                    px.setSizeT(rint(layout.timepoints))
                    px.setPixelsType(ptype)
                    if layout.pixel_size_um:
                        px.setPhysicalSizeX(omero.model.LengthI(layout.pixel_size_um, "MICROMETER"))
                        px.setPhysicalSizeY(omero.model.LengthI(layout.pixel_size_um, "MICROMETER"))
                    px.setDimensionOrder(omero.model.DimensionOrderI(1, False))
                    px = add(px, owner, gid, {"image": iid})
                    for channel in layout.channels:
                        lc = omero.model.LogicalChannelI()
                        lc.setName(rstring(channel.name))
                        if channel.emission_wavelength:
                            lc.setEmissionWave(omero.model.LengthI(channel.emission_wavelength, "NANOMETER"))
                        lc = add(lc, owner, gid)
                        ch = omero.model.ChannelI()
                        ch.setPixels(omero.model.PixelsI(px.getId().getValue(), False))
                        ch.setLogicalChannel(omero.model.LogicalChannelI(lc.getId().getValue(), False))
                        add(ch, owner, gid, {"pixels": px.getId().getValue()})
                    self.store.pixels_data[px.getId().getValue()] = _plane_reader(source, well.name, site)
                    if layout.plane_shape[0] * layout.plane_shape[1] > self.pyramid_threshold:
                        self.pyramids_pending.add(px.getId().getValue())
                    ws = omero.model.WellSampleI()
                    ws.setWell(omero.model.WellI(w.getId().getValue(), False))
                    ws.setImage(omero.model.ImageI(iid, False))
                    if run_name is not None:
                        ws.setPlateAcquisition(omero.model.PlateAcquisitionI(acquisitions[run_name], False))
                    add(ws, owner, gid, {"well": w.getId().getValue()},
                        index=run_index * layout.sites + site - 1)
        return pid

    def build_pyramids(self, pixels_ids: set[int] | None = None) -> None:
        """Finish building the pyramids of ``pixels_ids`` (default: every one pending),
        as the server's PixelData service does in the background after an import."""
        if pixels_ids is None:
            self.pyramids_pending.clear()
        else:
            self.pyramids_pending -= set(pixels_ids)

    def add_dataset(self, name: str, *, owner: User | None = None, group: Group | None = None) -> int:
        owner, gid = self._owner_group(owner, group)
        ds = omero.model.DatasetI()
        ds.setName(rstring(name))
        return self.store.add(ds, owner, gid).getId().getValue()

    def add_screen(self, name: str, plate_ids: list[int], *, owner: User | None = None,
                   group: Group | None = None) -> int:
        owner, gid = self._owner_group(owner, group)
        screen = omero.model.ScreenI()
        screen.setName(rstring(name))
        sid = self.store.add(screen, owner, gid).getId().getValue()
        for pid in plate_ids:
            link = omero.model.ScreenPlateLinkI()
            link.setParent(omero.model.ScreenI(sid, False))
            link.setChild(omero.model.PlateI(pid, False))
            self.store.add(link, owner, gid, {"parent": sid})
        return sid

    def add_file_annotation(self, data: bytes, name: str, *, mimetype: str = "text/plain",
                            ns: str | None = None, owner: User | None = None,
                            group: Group | None = None) -> int:
        """A FileAnnotation as a user would upload one (e.g. a pipeline spec)."""
        owner, gid = self._owner_group(owner, group)
        ofile = omero.model.OriginalFileI()
        ofile.setName(rstring(name))
        ofile.setPath(rstring("/"))
        ofile.setMimetype(rstring(mimetype))
        ofile.setSize(rlong(len(data)))
        ofile = self.store.add(ofile, owner, gid)
        self.store.files[ofile.getId().getValue()] = bytearray(data)
        ann = omero.model.FileAnnotationI()
        ann.setFile(omero.model.OriginalFileI(ofile.getId().getValue(), False))
        if ns:
            ann.setNs(rstring(ns))
        return self.store.add(ann, owner, gid).getId().getValue()

    def install_script(self, path: str | os.PathLike, folder: str = "/omero/openhcs/") -> int:
        """Register a script as an official one under ``folder`` (as the server finds
        scripts under ``lib/scripts``); returns its OriginalFile ID."""
        text = Path(path).read_text()
        ofile = omero.model.OriginalFileI()
        ofile.setName(rstring(Path(path).name))
        ofile.setPath(rstring(folder))
        ofile.setMimetype(rstring("text/x-python"))
        ofile.setSize(rlong(len(text.encode())))
        ofile = self.store.add(ofile, self.user, self.group.id)
        self.store.files[ofile.getId().getValue()] = bytearray(text.encode())
        self.scripts[ofile.getId().getValue()] = text
        return ofile.getId().getValue()

    def delete_graph(self, targets: dict[str, list[int]], session: Session) -> dict[str, list[int]]:
        """Delete annotations (with their links and files) as Delete2 does."""
        store = self.store
        deleted: dict[str, list[int]] = collections.defaultdict(list)
        with store.lock:
            for kind, ids in targets.items():
                for oid in ids:
                    obj = store.get(kind, oid)
                    if obj is None:
                        continue
                    if not acl.allowed(store, obj, session.user, "w"):  # BasicACLVoter: DELETE needs WRITE
                        raise omero.SecurityViolation(message=f"may not delete {kind}:{oid}")
                    for link_kind in list(store.objects):
                        if not link_kind.endswith("AnnotationLink"):
                            continue
                        for link in list(store.all(link_kind)):
                            if class_name(link.getChild()) == kind and link.getChild().getId().getValue() == oid:
                                store.remove(link_kind, link.getId().getValue())
                                deleted[link_kind].append(link.getId().getValue())
                    store.remove(kind, oid)
                    deleted[kind].append(oid)
                    if kind == "OriginalFile":
                        store.files.pop(oid, None)
                        store.tables.pop(oid, None)
                    if kind == "FileAnnotation" and obj.getFile() is not None:
                        fid = obj.getFile().getId().getValue()
                        store.remove("OriginalFile", fid)
                        store.files.pop(fid, None)
                        store.tables.pop(fid, None)
                        deleted["OriginalFile"].append(fid)
        return dict(deleted)


# Ice's metrics of dispatched requests by operation, read through the admin facet on loopback.
_WIRE_METRICS = ["--Ice.Admin.Enabled=1", "--Ice.Admin.Endpoints=tcp -h 127.0.0.1",
                 "--Ice.Admin.InstanceName=omero-standin", "--IceMX.Metrics.Wire.GroupBy=operation",
                 "--IceMX.Metrics.Wire.Map.Dispatch.GroupBy=operation",
                 # An operation's figures once none of its calls is in flight: Ice keeps only 10
                 # such by default, so totals of a run of many operations would lose some.
                 "--IceMX.Metrics.Wire.RetainDetached=100000",
                 "--IceMX.Metrics.Wire.Map.Dispatch.RetainDetached=100000"]


def _plane_reader(source: ImageXpressSource, well: str, site: int):
    def read(z: int, c: int, t: int):
        return source.read_plane(well, site, c + 1, z + 1, t + 1)
    return read


__all__ = ["OmeroStandIn", "Path"]
