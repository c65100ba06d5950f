"""A small Python client for redis-gateway, covering what services used a Redis helper for.

Copy this file into a service (with the protos, or with stubs generated from them) and use:

- ``Gateway``: one gRPC channel to the gateway, an optional bearer token sent as
  ``authorization`` metadata, and a deadline on every call (``timeout``, 5 s by default).
- Task cache: ``cache_task_status`` / ``get_task_status`` and ``cache_task_result`` /
  ``get_task_result`` keep short-lived task state under ``task:<id>:status`` and
  ``task:<id>:result`` with a TTL (KeyValue.Set with ``ttl``, KeyValue.Get).
- Sessions: ``create_session``, ``get_session`` (sliding the idle expiry),
  ``update_session`` (optionally with optimistic concurrency) and ``delete_session``.
- Locks: ``gateway_lock("resource_1")`` (or ``Gateway.lock``) is a context manager over
  Lock.Hold. It enters once the gateway reports the lock acquired, the gateway renews the lease
  while the block runs, and leaving the block releases the lock and closes the stream. If the
  lock is lost meanwhile, ``HeldLock.check()`` raises ``LockLost``, and so does leaving the block.
- ``EventListener``: runs callbacks for key expirations under a glob pattern (``task:*`` by
  default; KeyValue.WatchExpirations) and for session endings (Session.WatchEnded), reconnecting
  with the last cursor so nothing is missed while the gateway retains it.

Stubs are generated at run time from ``proto/redisgateway/v1/*.proto`` (two directories up
from this file, or ``REDIS_GATEWAY_PROTO_DIR``) with grpcio-tools into a cache directory keyed
by the protos' content (``$XDG_CACHE_HOME/redis-gateway/python-stubs``, ``~/.cache/...``, or
``REDIS_GATEWAY_STUB_CACHE``), so they are generated once per proto change and never written
next to the sources. A service that generates stubs at build time instead points
``REDIS_GATEWAY_STUBS`` at them (or puts them on ``sys.path``), and nothing is generated.

Needs grpcio and grpcio-tools (which brings protobuf); nothing else.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import importlib
import importlib.metadata
import importlib.resources
import json
import logging
import os
import pathlib
import shutil
import sys
import tempfile
import threading
import time
import types
from typing import Any, Callable, Iterable, Mapping, Optional

import grpc
from google.protobuf import duration_pb2

__all__ = [
    "DEFAULT_TIMEOUT",
    "EventListener",
    "Gateway",
    "GatewayError",
    "HeldLock",
    "KeyEvent",
    "LockError",
    "LockLost",
    "LockNotAcquired",
    "Session",
    "SessionEnded",
    "SessionNotFound",
    "SessionVersionConflict",
    "connect",
    "gateway_lock",
    "glob_prefix",
    "load_stubs",
    "set_default_gateway",
]

log = logging.getLogger("redis_gateway_client")

#: Deadline of every unary call, in seconds, unless the Gateway is given another.
DEFAULT_TIMEOUT = 5.0
#: The protos, when this file sits in the gateway's repository at clients/python/.
DEFAULT_PROTO_DIR = pathlib.Path(__file__).resolve().parents[2] / "proto"
_SERVICES = ("common", "keyvalue", "hash", "session", "lock", "monitor")


# --- stubs -----------------------------------------------------------------------------------


def _cache_root() -> pathlib.Path:
    explicit = os.environ.get("REDIS_GATEWAY_STUB_CACHE")
    if explicit:
        return pathlib.Path(explicit)
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = pathlib.Path(xdg) if xdg else pathlib.Path.home() / ".cache"
    return base / "redis-gateway" / "python-stubs"


def _proto_files(proto_root: pathlib.Path) -> list[str]:
    return sorted(path.relative_to(proto_root).as_posix()
                  for path in (proto_root / "redisgateway" / "v1").glob("*.proto"))


def _stub_key(proto_root: pathlib.Path, protos: list[str]) -> str:
    """A name for one generation: the protos' content and the generator's versions."""
    digest = hashlib.sha256()
    for name in ("grpcio-tools", "protobuf"):
        digest.update(f"{name}={importlib.metadata.version(name)}\n".encode())
    for relative in protos:
        digest.update(relative.encode() + b"\0")
        digest.update((proto_root / relative).read_bytes() + b"\0")
    return digest.hexdigest()[:24]


def _generate(proto_root: pathlib.Path, protos: list[str], out_dir: pathlib.Path) -> None:
    from grpc_tools import protoc  # only needed when generating

    well_known = importlib.resources.files("grpc_tools") / "_proto"
    status = protoc.main([
        "grpc_tools.protoc",
        f"--proto_path={proto_root}",
        f"--proto_path={well_known}",
        f"--python_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        *protos,
    ])
    if status != 0:
        raise GatewayError(f"protoc exited with {status} generating stubs from {proto_root}")


def _generated_dir(proto_root: pathlib.Path, cache_root: pathlib.Path) -> pathlib.Path:
    """The cache directory holding stubs for these protos, generating them on first use.

    Generation goes to a fresh directory that is then renamed into place, so processes that
    start together never import a half-written tree.
    """
    protos = _proto_files(proto_root)
    if not protos:
        raise GatewayError(f"no .proto files under {proto_root / 'redisgateway' / 'v1'}")
    final = cache_root / _stub_key(proto_root, protos)
    if (final / "redisgateway" / "v1" / "lock_pb2_grpc.py").is_file():
        return final
    try:
        cache_root.mkdir(parents=True, exist_ok=True)
    except OSError:  # no writable home: a per-user directory under the temporary one
        cache_root = pathlib.Path(tempfile.gettempdir()) / f"redis-gateway-stubs-{os.getuid()}"
        cache_root.mkdir(mode=0o700, parents=True, exist_ok=True)
        final = cache_root / final.name
        if (final / "redisgateway" / "v1" / "lock_pb2_grpc.py").is_file():
            return final
    scratch = pathlib.Path(tempfile.mkdtemp(prefix=".generating-", dir=cache_root))
    try:
        _generate(proto_root, protos, scratch)
        try:
            scratch.rename(final)
        except OSError:  # another process got there first
            if not final.is_dir():
                raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return final


_stubs_lock = threading.Lock()
_stubs: Optional[types.SimpleNamespace] = None


def load_stubs(proto_dir: Optional[os.PathLike] = None,
               stub_dir: Optional[os.PathLike] = None) -> types.SimpleNamespace:
    """Imports the generated modules, generating them first when needed.

    Returns a namespace with ``keyvalue_pb2``, ``keyvalue_pb2_grpc``, ``session_pb2``, ... for
    each service. ``stub_dir`` (or ``REDIS_GATEWAY_STUBS``) names already generated stubs;
    otherwise the protos at ``proto_dir`` (or ``REDIS_GATEWAY_PROTO_DIR``, or ../../proto) are
    compiled into the cache. Without either, the stubs must already be importable.
    The first call decides; later calls return the same modules.
    """
    global _stubs
    with _stubs_lock:
        if _stubs is not None:
            return _stubs
        stub_dir = stub_dir or os.environ.get("REDIS_GATEWAY_STUBS")
        proto_root = pathlib.Path(proto_dir or os.environ.get("REDIS_GATEWAY_PROTO_DIR")
                                  or DEFAULT_PROTO_DIR)
        if stub_dir:
            path = pathlib.Path(stub_dir)
        elif (proto_root / "redisgateway" / "v1").is_dir():
            path = _generated_dir(proto_root, _cache_root())
        else:
            path = None  # use whatever `redisgateway.v1` is importable already
        if path is not None and str(path) not in sys.path:
            sys.path.insert(0, str(path))
        modules = {}
        try:
            for service in _SERVICES:
                modules[f"{service}_pb2"] = importlib.import_module(
                    f"redisgateway.v1.{service}_pb2")
                if service != "common":
                    modules[f"{service}_pb2_grpc"] = importlib.import_module(
                        f"redisgateway.v1.{service}_pb2_grpc")
        except ModuleNotFoundError as err:
            raise GatewayError(
                f"cannot import the generated stubs ({err}): set REDIS_GATEWAY_PROTO_DIR to "
                "the gateway's proto/ directory, or REDIS_GATEWAY_STUBS to generated stubs"
            ) from err
        _stubs = types.SimpleNamespace(**modules)
        return _stubs


# --- values and errors -----------------------------------------------------------------------


class GatewayError(Exception):
    """An outcome this client reports as an exception (gRPC failures stay grpc.RpcError)."""


class SessionNotFound(GatewayError, KeyError):
    """The session is unknown, expired, deleted or rotated away."""


class SessionVersionConflict(GatewayError):
    """Update's expected_version no longer matched: someone else wrote the session first."""


class LockError(GatewayError):
    """A lock could not be taken or kept."""

    def __init__(self, name: str, reason: str):
        super().__init__(f"lock {name!r}: {reason}")
        self.name = name
        self.reason = reason


class LockNotAcquired(LockError):
    """The lock stayed busy for the whole wait."""


class LockLost(LockError):
    """The lock was held but is not any more: stop acting as its holder."""


def _duration(seconds: float) -> duration_pb2.Duration:
    value = duration_pb2.Duration()
    value.FromNanoseconds(round(seconds * 1e9))
    return value


def _time(timestamp) -> Optional[datetime.datetime]:
    if not timestamp.seconds and not timestamp.nanos:
        return None
    return timestamp.ToDatetime(tzinfo=datetime.timezone.utc)


def _bytes(value: bytes | str) -> bytes:
    return value.encode() if isinstance(value, str) else bytes(value)


def glob_prefix(prefix: str) -> str:
    """A WatchExpirations/Scan glob matching every key that starts with ``prefix``."""
    escaped = "".join("\\" + c if c in "*?[]\\" else c for c in prefix)
    return escaped + "*"


@dataclasses.dataclass(frozen=True)
class Session:
    """A user session as the gateway returned it."""
    session_id: str
    user_id: str
    data: dict[str, str]
    created_at: Optional[datetime.datetime]
    last_accessed_at: Optional[datetime.datetime]
    expires_at: Optional[datetime.datetime]
    version: int

    @classmethod
    def _from(cls, info) -> "Session":
        return cls(info.session_id, info.user_id, dict(info.data), _time(info.created_at),
                   _time(info.last_accessed_at), _time(info.expires_at), info.version)


@dataclasses.dataclass(frozen=True)
class KeyEvent:
    """A key that expired (or, when asked for, was evicted or deleted)."""
    key: str
    kind: str  # "EXPIRED", "EVICTED" or "DELETED"
    observed_at: Optional[datetime.datetime]
    cursor: str


@dataclasses.dataclass(frozen=True)
class SessionEnded:
    """A session that ended; delivered at least once (deduplicate on id and reason)."""
    session_id: str
    user_id: str
    reason: str  # "EXPIRED", "DELETED", "ROTATED" or "REVOKED"
    ended_at: Optional[datetime.datetime]
    cursor: str


# --- the gateway -----------------------------------------------------------------------------


class Gateway:
    """A channel to redis-gateway with the helpers on top.

    ``target`` is ``host:port``. ``token``, when given, goes with every call as
    ``authorization: Bearer <token>``; use ``credentials`` (``grpc.ssl_channel_credentials``)
    to keep it off plaintext networks. Every unary call has a deadline of ``timeout`` seconds.
    Failures the gateway reports (UNAVAILABLE, PERMISSION_DENIED, ...) raise ``grpc.RpcError``.
    Thread-safe: share one Gateway per process.
    """

    def __init__(self, target: str, *, token: Optional[str] = None,
                 timeout: float = DEFAULT_TIMEOUT,
                 credentials: Optional[grpc.ChannelCredentials] = None,
                 options: Iterable[tuple[str, Any]] = ()):
        self.target = target
        self.timeout = timeout
        self.pb = load_stubs()
        options = list(options)
        if credentials is not None:
            self._channel = grpc.secure_channel(target, credentials, options)
        else:
            self._channel = grpc.insecure_channel(target, options)
        self.metadata: tuple[tuple[str, str], ...] = (
            (("authorization", f"Bearer {token}"),) if token else ())
        self.keyvalue = self.pb.keyvalue_pb2_grpc.KeyValueStub(self._channel)
        self.hash = self.pb.hash_pb2_grpc.HashStub(self._channel)
        self.sessions = self.pb.session_pb2_grpc.SessionStub(self._channel)
        self.locks = self.pb.lock_pb2_grpc.LockStub(self._channel)
        self.monitor = self.pb.monitor_pb2_grpc.MonitorStub(self._channel)

    def __enter__(self) -> "Gateway":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Closes the channel (open streams end with CANCELLED)."""
        self._channel.close()

    def wait_ready(self, timeout: Optional[float] = None) -> None:
        """Waits until the channel is connected; raises grpc.FutureTimeoutError if not."""
        grpc.channel_ready_future(self._channel).result(timeout=timeout or self.timeout)

    def call(self, method, request, timeout: Optional[float] = None):
        """Runs a unary RPC with this gateway's deadline and metadata."""
        return method(request, timeout=timeout or self.timeout, metadata=self.metadata)

    def stream(self, method, request, timeout: float):
        """Opens a server stream with a deadline of ``timeout`` seconds."""
        return method(request, timeout=timeout, metadata=self.metadata)

    # KeyValue ---------------------------------------------------------------------------------

    def set(self, key: str, value: bytes | str, ttl: Optional[float] = None) -> None:
        """Stores ``value`` under ``key``, expiring after ``ttl`` seconds (None: never)."""
        kv = self.pb.keyvalue_pb2
        request = kv.KeyValueSetRequest(key=key, value=_bytes(value))
        if ttl is not None:
            request.ttl.CopyFrom(_duration(ttl))
        self.call(self.keyvalue.Set, request)

    def get(self, key: str) -> Optional[bytes]:
        """The bytes under ``key``, or None when it is missing or expired."""
        reply = self.call(self.keyvalue.Get, self.pb.keyvalue_pb2.KeyValueGetRequest(key=key))
        return reply.value if reply.found else None

    def remaining_ttl(self, key: str) -> Optional[float]:
        """Seconds until ``key`` expires; None when it is missing or does not expire."""
        reply = self.call(self.keyvalue.GetTtl,
                          self.pb.keyvalue_pb2.KeyValueGetTtlRequest(key=key))
        if reply.state != self.pb.common_pb2.TtlStatus.EXPIRING:
            return None
        return reply.ttl.ToNanoseconds() / 1e9

    def delete(self, *keys: str) -> int:
        """Deletes keys; returns how many existed."""
        reply = self.call(self.keyvalue.Delete,
                          self.pb.keyvalue_pb2.KeyValueDeleteRequest(keys=list(keys)))
        return reply.deleted

    # Task cache -------------------------------------------------------------------------------

    @staticmethod
    def task_key(task_id: str, part: str) -> str:
        """Where a task's ``status`` or ``result`` is kept: ``task:<id>:<part>``."""
        return f"task:{task_id}:{part}"

    def cache_task_status(self, task_id: str, status: str, ttl: float = 3600.0) -> None:
        """Records a task's status (e.g. "running", "done") for ``ttl`` seconds."""
        self.set(self.task_key(task_id, "status"), status, ttl=ttl)

    def get_task_status(self, task_id: str) -> Optional[str]:
        """The task's cached status, or None once it expired (or was never set)."""
        value = self.get(self.task_key(task_id, "status"))
        return None if value is None else value.decode()

    def cache_task_result(self, task_id: str, result: Any, ttl: float = 86400.0) -> None:
        """Caches a task's result (anything ``json.dumps`` takes) for ``ttl`` seconds."""
        self.set(self.task_key(task_id, "result"), json.dumps(result, separators=(",", ":")),
                 ttl=ttl)

    def get_task_result(self, task_id: str, default: Any = None) -> Any:
        """The task's cached result, decoded; ``default`` when it is not cached."""
        value = self.get(self.task_key(task_id, "result"))
        return default if value is None else json.loads(value)

    # Sessions ---------------------------------------------------------------------------------

    def create_session(self, user_id: str, data: Optional[Mapping[str, str]] = None, *,
                       idle_timeout: Optional[float] = 1800.0,
                       absolute_timeout: Optional[float] = None) -> Session:
        """Logs ``user_id`` in: a session with a random id that expires ``idle_timeout``
        seconds after its last access (None: the gateway's default), and never later than
        ``absolute_timeout`` after creation when given."""
        pb = self.pb.session_pb2
        request = pb.SessionCreateRequest(user_id=user_id, data=dict(data or {}))
        if idle_timeout is not None:
            request.idle_timeout.CopyFrom(_duration(idle_timeout))
        if absolute_timeout is not None:
            request.absolute_timeout.CopyFrom(_duration(absolute_timeout))
        return Session._from(self.call(self.sessions.Create, request))

    def get_session(self, session_id: str, *, touch: bool = True) -> Optional[Session]:
        """The session, sliding its idle expiry when ``touch``; None when it is gone."""
        request = self.pb.session_pb2.SessionGetRequest(session_id=session_id, touch=touch)
        try:
            return Session._from(self.call(self.sessions.Get, request))
        except grpc.RpcError as err:
            if err.code() == grpc.StatusCode.NOT_FOUND:
                return None
            raise

    def update_session(self, session_id: str, set: Optional[Mapping[str, str]] = None,
                       remove: Iterable[str] = (), *,
                       expected_version: Optional[int] = None) -> Session:
        """Removes then sets data entries in one atomic step, sliding the idle expiry.

        With ``expected_version`` the update applies only if nobody wrote the session since
        that version (raises SessionVersionConflict otherwise). Raises SessionNotFound when
        the session is gone; an expired session is never recreated.
        """
        request = self.pb.session_pb2.SessionUpdateRequest(
            session_id=session_id, set=dict(set or {}), remove=list(remove))
        if expected_version is not None:
            request.expected_version = expected_version
        try:
            return Session._from(self.call(self.sessions.Update, request))
        except grpc.RpcError as err:
            if err.code() == grpc.StatusCode.NOT_FOUND:
                raise SessionNotFound(session_id) from None
            if err.code() == grpc.StatusCode.FAILED_PRECONDITION and expected_version is not None:
                raise SessionVersionConflict(err.details()) from None
            raise

    def delete_session(self, session_id: str) -> bool:
        """Logs the session out; False when it was already gone."""
        reply = self.call(self.sessions.Delete,
                          self.pb.session_pb2.SessionDeleteRequest(session_id=session_id))
        return reply.deleted

    # Locks ------------------------------------------------------------------------------------

    def lock(self, name: str, *, ttl: float = 10.0, wait: float = 10.0, owner: str = "",
             max_hold: float = 600.0,
             on_lost: Optional[Callable[["HeldLock"], None]] = None) -> "HeldLock":
        """A context manager holding lock ``name`` for the duration of a ``with`` block.

        ``wait``: how long to wait for a busy lock (0: try once) before LockNotAcquired.
        ``ttl``: the lease the gateway renews about every ttl/3 while the block runs; if this
        process dies the lock frees itself within ``ttl``. ``max_hold``: the stream's
        deadline after acquisition; a block running longer loses the lock. ``owner``: a label
        shown by Lock.Inspect. ``on_lost`` runs (on a background thread) if the lock is lost.
        """
        return HeldLock(self, name, ttl=ttl, wait=wait, owner=owner, max_hold=max_hold,
                        on_lost=on_lost)

    # Watches ----------------------------------------------------------------------------------

    def listener(self, **kwargs) -> "EventListener":
        """An EventListener over this gateway; see EventListener for the arguments."""
        return EventListener(self, **kwargs)


# --- locks -----------------------------------------------------------------------------------


class HeldLock:
    """Lock.Hold as a context manager; get one from ``Gateway.lock`` or ``gateway_lock``.

    Entering opens the Hold stream and blocks until its first event: ``acquired`` enters the
    block (``token``, ``fencing_token`` and ``hash_tag`` are then set), ``lost`` raises
    LockNotAcquired. A background thread follows the renewals; a ``lost`` event, or the stream
    failing, marks the lock lost. Leaving the block releases the lock with Lock.Release (so it
    is free when the block is left) and cancels the stream (which alone would also release it).
    Leaving raises LockLost if the lock was lost during the block; long blocks should call
    ``check()`` between steps, and pass ``fencing_token`` to the storage they write.
    """

    def __init__(self, gateway: Gateway, name: str, *, ttl: float, wait: float, owner: str,
                 max_hold: float, on_lost: Optional[Callable[["HeldLock"], None]]):
        self.gateway = gateway
        self.name = name
        self.token = ""
        self.fencing_token = 0
        self.hash_tag = ""
        self.expires_at: Optional[datetime.datetime] = None
        self.lost_reason: Optional[str] = None
        self._ttl, self._wait, self._owner = ttl, wait, owner
        self._max_hold = max_hold
        self._on_lost = on_lost
        self._call = None
        self._thread: Optional[threading.Thread] = None
        self._closing = False
        self._lost = threading.Event()

    @property
    def held(self) -> bool:
        """True while the lock is held by this block."""
        return bool(self.token) and not self._lost.is_set() and not self._closing

    def check(self) -> None:
        """Raises LockLost if the lock is no longer held."""
        if self._lost.is_set():
            raise LockLost(self.name, self.lost_reason or "lost")

    def __enter__(self) -> "HeldLock":
        if self._call is not None:
            raise RuntimeError("a HeldLock is entered once; call gateway.lock() again")
        pb = self.gateway.pb.lock_pb2
        request = pb.LockHoldRequest(name=self.name, ttl=_duration(self._ttl), owner=self._owner)
        if self._wait > 0:
            request.wait_timeout.CopyFrom(_duration(self._wait))
        # The deadline covers the wait and then the hold; the gateway never waits past it.
        self._call = self.gateway.stream(self.gateway.locks.Hold, request,
                                         timeout=self._wait + self._max_hold)
        try:
            first = next(self._call)
        except StopIteration:
            raise LockNotAcquired(self.name, "the stream ended before the lock was taken") \
                from None
        except grpc.RpcError as err:
            self._call.cancel()
            if err.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
                raise LockNotAcquired(self.name, "the deadline passed while waiting") from None
            raise
        event = first.WhichOneof("event")
        if event != "acquired":
            self._call.cancel()
            reason = first.lost.reason if event == "lost" else f"unexpected {event} event"
            raise LockNotAcquired(self.name, reason)
        self.token = first.acquired.token
        self.fencing_token = first.acquired.fencing_token
        self.hash_tag = first.acquired.hash_tag
        self.expires_at = _time(first.acquired.expires_at)
        self._thread = threading.Thread(target=self._follow, name=f"lock {self.name}",
                                        daemon=True)
        self._thread.start()
        return self

    def _follow(self) -> None:
        """Reads the rest of the stream: renewals until `lost` or the end."""
        try:
            for event in self._call:
                kind = event.WhichOneof("event")
                if kind == "renewed":
                    self.expires_at = _time(event.renewed.expires_at)
                elif kind == "lost":
                    self._mark_lost(event.lost.reason)
                    return
            self._mark_lost("the gateway ended the stream")
        except grpc.RpcError as err:
            if err.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
                self._mark_lost(f"held longer than max_hold ({self._max_hold} s)")
            else:
                self._mark_lost(f"the stream failed: {err.code().name} {err.details()}")

    def _mark_lost(self, reason: str) -> None:
        if self._closing or self._lost.is_set():
            return
        self.lost_reason = reason
        self._lost.set()
        log.warning("lock %r lost: %s", self.name, reason)
        if self._on_lost is not None:
            try:
                self._on_lost(self)
            except Exception:  # a callback's failure must not hide the loss
                log.exception("on_lost callback for lock %r failed", self.name)

    def __exit__(self, exc_type, exc, tb) -> bool:
        lost_before = self._lost.is_set()
        self._closing = True
        released = None
        if not lost_before:
            pb = self.gateway.pb.lock_pb2
            try:
                released = self.gateway.call(
                    self.gateway.locks.Release,
                    pb.LockReleaseRequest(name=self.name, token=self.token)).released
            except grpc.RpcError as err:  # closing the stream releases it too
                log.warning("Release of lock %r failed (%s); closing the stream releases it",
                            self.name, err.code().name)
        self._call.cancel()
        if self._thread is not None:
            self._thread.join(timeout=self.gateway.timeout)
        if not lost_before and released is False:
            self.lost_reason = "the lease had expired or was taken before the block ended"
            lost_before = True
        if lost_before:
            error = LockLost(self.name, self.lost_reason or "lost")
            if exc is None:
                raise error
            exc.add_note(str(error))
        return False


_default_gateway: Optional[Gateway] = None


def set_default_gateway(gateway: Optional[Gateway]) -> None:
    """Makes ``gateway`` the one ``gateway_lock`` uses when it is given none."""
    global _default_gateway
    _default_gateway = gateway


def connect(target: Optional[str] = None, *, token: Optional[str] = None,
            **kwargs) -> Gateway:
    """Opens a Gateway and makes it the default.

    ``target`` defaults to ``REDIS_GATEWAY_ADDR`` (else 127.0.0.1:50051) and ``token`` to
    ``REDIS_GATEWAY_TOKEN``; other arguments go to Gateway.
    """
    gateway = Gateway(target or os.environ.get("REDIS_GATEWAY_ADDR", "127.0.0.1:50051"),
                      token=token if token is not None else os.environ.get("REDIS_GATEWAY_TOKEN"),
                      **kwargs)
    set_default_gateway(gateway)
    return gateway


def gateway_lock(name: str, *, gateway: Optional[Gateway] = None, **kwargs) -> HeldLock:
    """``with gateway_lock("resource_1"):`` holds the lock for the block (see Gateway.lock).

    Uses the default gateway (``connect`` or ``set_default_gateway``) unless given one.
    """
    gateway = gateway or _default_gateway
    if gateway is None:
        raise RuntimeError("no gateway: call connect() or set_default_gateway() first")
    return gateway.lock(name, **kwargs)


# --- watches ---------------------------------------------------------------------------------


class EventListener:
    """Runs callbacks for key expirations and session endings, each on its own thread.

    ``on_key_expired(KeyEvent)`` gets the events of keys matching ``key_pattern`` (a glob, by
    default every ``task:`` key; see ``glob_prefix``), of the ``kinds`` asked for ("EXPIRED",
    "EVICTED", "DELETED"). ``on_session_ended(SessionEnded)`` gets every session ending.
    ``on_gap(stream, reason, dropped)`` hears when events may have been missed. Callbacks run
    on the listener's threads: keep them short, or hand the work off. An exception in one is
    logged and the listener goes on.

    ``start()`` returns once every stream is subscribed, so a TTL set afterwards is reported.
    Each stream has a deadline of ``stream_timeout`` seconds; when it ends (or the gateway is
    briefly unreachable) the listener opens it again with ``resume_after`` set to the last
    cursor, and the gateway replays what was missed while it still retains it.
    """

    def __init__(self, gateway: Gateway, *,
                 on_key_expired: Optional[Callable[[KeyEvent], None]] = None,
                 key_pattern: str = glob_prefix("task:"),
                 kinds: Iterable[str] = ("EXPIRED",),
                 on_session_ended: Optional[Callable[[SessionEnded], None]] = None,
                 on_gap: Optional[Callable[[str, str, int], None]] = None,
                 stream_timeout: float = 300.0):
        if on_key_expired is None and on_session_ended is None:
            raise ValueError("give on_key_expired, on_session_ended or both")
        self.gateway = gateway
        self._stream_timeout = stream_timeout
        self._on_gap = on_gap
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._calls: dict[str, Any] = {}
        self._threads: list[threading.Thread] = []
        self._subscribed: dict[str, threading.Event] = {}
        #: The error that stopped a stream for good (bad pattern, missing permission, ...).
        self.errors: dict[str, grpc.RpcError] = {}
        self._watches = []
        pb = gateway.pb
        if on_key_expired is not None:
            kv = pb.keyvalue_pb2
            kind_values = [kv.KeyEventKind.Value(kind) for kind in kinds]

            def key_request(cursor):
                return kv.KeyValueWatchExpirationsRequest(
                    pattern=key_pattern, kinds=kind_values, resume_after=cursor)

            def key_event(message):
                event = message.expired
                on_key_expired(KeyEvent(event.key, kv.KeyEventKind.Name(event.kind),
                                        _time(event.observed_at), event.cursor))

            self._watches.append(("keys", gateway.keyvalue.WatchExpirations, key_request,
                                  "expired", key_event))
        if on_session_ended is not None:
            sp = pb.session_pb2

            def session_request(cursor):
                return sp.SessionWatchEndedRequest(resume_after=cursor)

            def session_event(message):
                ended = message.ended
                reason = sp.SessionEndReason.Name(ended.reason).removeprefix(
                    "SESSION_END_REASON_")
                on_session_ended(SessionEnded(ended.session_id, ended.user_id, reason,
                                              _time(ended.ended_at), ended.cursor))

            self._watches.append(("sessions", gateway.sessions.WatchEnded, session_request,
                                  "ended", session_event))

    def __enter__(self) -> "EventListener":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self, timeout: Optional[float] = None) -> "EventListener":
        """Opens the streams; returns once each is subscribed (raises if one fails first).

        Calling it again (or entering a started listener with ``with``) does nothing.
        """
        if self._threads:
            return self
        for watch in self._watches:
            self._subscribed[watch[0]] = threading.Event()
            thread = threading.Thread(target=self._run, args=watch, daemon=True,
                                      name=f"watch {watch[0]}")
            self._threads.append(thread)
            thread.start()
        deadline = time.monotonic() + (timeout or self.gateway.timeout * 2)
        for stream, subscribed in self._subscribed.items():
            if not subscribed.wait(max(0.0, deadline - time.monotonic())):
                self.stop()
                raise GatewayError(f"the {stream} watch did not subscribe in time")
            if stream in self.errors:
                error = self.errors[stream]
                self.stop()
                raise error
        return self

    def stop(self) -> None:
        """Closes the streams and waits for the threads."""
        self._stop.set()
        with self._lock:
            calls = list(self._calls.values())
        for call in calls:
            call.cancel()
        for thread in self._threads:
            thread.join(timeout=self.gateway.timeout)

    def _run(self, stream, method, request, event_field, deliver) -> None:
        cursor = ""
        backoff = 0.0
        while not self._stop.is_set():
            try:
                call = self.gateway.stream(method, request(cursor), timeout=self._stream_timeout)
            except ValueError:  # the channel was closed
                log.info("%s watch: the channel is closed", stream)
                self._subscribed[stream].set()
                return
            with self._lock:
                self._calls[stream] = call
            if self._stop.is_set():  # stop() ran before the call was registered
                call.cancel()
                break
            try:
                for message in call:
                    kind = message.WhichOneof("event")
                    if kind == "subscribed":
                        # On a resumed stream the replay follows; keep the older cursor.
                        cursor = cursor or message.subscribed.cursor
                        backoff = 0.0
                        self._subscribed[stream].set()
                    elif kind == event_field:
                        cursor = getattr(message, event_field).cursor
                        self._deliver(stream, deliver, message)
                    elif kind == "gap":
                        cursor = message.gap.cursor or cursor
                        log.warning("%s watch: events may be missing (%s, %d dropped)", stream,
                                    message.gap.reason, message.gap.dropped)
                        if self._on_gap is not None:
                            self._deliver(stream, lambda m: self._on_gap(
                                stream, m.gap.reason, m.gap.dropped), message)
            except grpc.RpcError as err:
                if self._stop.is_set() or err.code() == grpc.StatusCode.CANCELLED:
                    break  # stop(), or the channel was closed
                if err.code() not in (grpc.StatusCode.DEADLINE_EXCEEDED,
                                      grpc.StatusCode.UNAVAILABLE):
                    log.error("%s watch failed: %s %s", stream, err.code().name, err.details())
                    self.errors[stream] = err
                    self._subscribed[stream].set()  # wake start()
                    return
                if err.code() != grpc.StatusCode.DEADLINE_EXCEEDED:
                    backoff = min(max(backoff * 2, 0.2), 5.0)
            else:  # the gateway closed the stream (draining): open it again
                backoff = min(max(backoff * 2, 0.2), 5.0)
            self._stop.wait(backoff)

    def _deliver(self, stream, deliver, message) -> None:
        try:
            deliver(message)
        except Exception:
            log.exception("%s watch: a callback failed", stream)
