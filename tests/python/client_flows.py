"""The old in-process Python Redis helper's flows, run against the gateway from Python.

Usage: python3 tests/python/client_flows.py HOST:PORT

The stubs are generated at run time from proto/redisgateway/v1/*.proto with grpcio-tools
(into a temporary directory), so this checks the contract as any other-language client sees
it. Each flow prints one line; any failed check raises, and the script exits non-zero.
grpcio and grpcio-tools come from `scripts/install-deps.sh test` (into .tools/pip, which
tests/python_client.rs puts on PYTHONPATH).
"""

import importlib
import importlib.resources
import pathlib
import sys
import tempfile
import threading
import time
import uuid

import grpc
from google.protobuf import duration_pb2
from grpc_tools import protoc

REPO = pathlib.Path(__file__).resolve().parents[2]
PROTO_ROOT = REPO / "proto"
# Deadline of every call: generous for a shared 2-core machine, bounded so nothing hangs.
TIMEOUT_S = 10
HOUR_S = 3600
DAY_S = 24 * HOUR_S


def generate_stubs(out_dir):
    """Runs protoc (grpcio-tools) over every proto of the package into `out_dir`.

    Afterwards `redisgateway.v1.<name>_pb2` and `<name>_pb2_grpc` are importable.
    """
    well_known = importlib.resources.files("grpc_tools") / "_proto"
    protos = sorted(str(path.relative_to(PROTO_ROOT))
                    for path in (PROTO_ROOT / "redisgateway" / "v1").glob("*.proto"))
    assert protos, f"no .proto files under {PROTO_ROOT}"
    args = [
        "grpc_tools.protoc",
        f"--proto_path={PROTO_ROOT}",
        f"--proto_path={well_known}",
        f"--python_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        *protos,
    ]
    status = protoc.main(args)
    assert status == 0, f"protoc exited with {status} for {protos}"
    sys.path.insert(0, str(out_dir))


def unique(label):
    """A key name no other run uses."""
    return f"pyclient:{label}:{uuid.uuid4()}"


def duration(seconds):
    """A google.protobuf.Duration of whole seconds."""
    return duration_pb2.Duration(seconds=seconds)


def millis(milliseconds):
    """A google.protobuf.Duration of whole milliseconds."""
    return duration_pb2.Duration(seconds=milliseconds // 1000,
                                 nanos=milliseconds % 1000 * 1_000_000)


def expect_error(code, call, *args):
    """Runs `call(*args)`, which must fail with `code`; returns the status details."""
    try:
        reply = call(*args, timeout=TIMEOUT_S)
    except grpc.RpcError as err:
        assert err.code() == code, f"expected {code}, got {err.code()}: {err.details()}"
        return err.details()
    raise AssertionError(f"expected {code}, got a reply: {reply}")


class Stubs:
    """The generated modules and a stub per service, over one channel."""

    def __init__(self, channel):
        self.common = importlib.import_module("redisgateway.v1.common_pb2")
        self.kv_pb = importlib.import_module("redisgateway.v1.keyvalue_pb2")
        self.hash_pb = importlib.import_module("redisgateway.v1.hash_pb2")
        kv_grpc = importlib.import_module("redisgateway.v1.keyvalue_pb2_grpc")
        hash_grpc = importlib.import_module("redisgateway.v1.hash_pb2_grpc")
        self.session_pb = importlib.import_module("redisgateway.v1.session_pb2")
        session_grpc = importlib.import_module("redisgateway.v1.session_pb2_grpc")
        self.kv = kv_grpc.KeyValueStub(channel)
        self.hash = hash_grpc.HashStub(channel)
        self.session = session_grpc.SessionStub(channel)
        self.lock_pb = importlib.import_module("redisgateway.v1.lock_pb2")
        lock_grpc = importlib.import_module("redisgateway.v1.lock_pb2_grpc")
        self.lock = lock_grpc.LockStub(channel)

    def ttl_of(self, key):
        """KeyValue.GetTtl of `key` (a string key or a hash's name)."""
        return self.kv.GetTtl(self.kv_pb.KeyValueGetTtlRequest(key=key), timeout=TIMEOUT_S)


def kv_task_result_cache(stubs):
    """A task's result cached for an hour, read back with its TTL; a miss is found=False."""
    kv, pb = stubs.kv, stubs.kv_pb
    key = unique("task:result")
    result = b'{"ok":true,"rows":3}'
    reply = kv.Set(pb.KeyValueSetRequest(key=key, value=result, ttl=duration(HOUR_S)),
                   timeout=TIMEOUT_S)
    assert reply.applied, f"Set of {key} was not applied: {reply}"
    got = kv.Get(pb.KeyValueGetRequest(key=key, include_ttl=True), timeout=TIMEOUT_S)
    assert got.found and got.value == result, f"Get of {key} returned {got}"
    expiring = stubs.common.TtlStatus.EXPIRING
    assert got.ttl.state == expiring, f"Get include_ttl of {key} returned {got.ttl}"
    ttl = stubs.ttl_of(key)
    assert ttl.state == expiring, f"GetTtl of {key}: state {ttl.state}, expected EXPIRING"
    assert HOUR_S - 60 <= ttl.ttl.seconds <= HOUR_S, f"GetTtl of {key}: {ttl.ttl.seconds} s"
    missing = kv.Get(pb.KeyValueGetRequest(key=unique("never:set")), timeout=TIMEOUT_S)
    assert not missing.found, f"Get of a key never set returned {missing}"
    assert missing.value == b"", f"a miss carries a value: {missing.value!r}"
    return f"set/get {len(result)} bytes, ttl {ttl.ttl.seconds} s, miss found=False"


def kv_counters(stubs):
    """Counters are exact: 50 increments of 1 read back as 50."""
    kv, pb = stubs.kv, stubs.kv_pb
    key = unique("counter:page_views")
    increment = pb.KeyValueIncrementRequest(key=key, delta=1)
    values = [kv.Increment(increment, timeout=TIMEOUT_S).value for _ in range(50)]
    assert values == list(range(1, 51)), f"Increment of {key} returned {values}"
    got = kv.Get(pb.KeyValueGetRequest(key=key), timeout=TIMEOUT_S)
    assert got.found and got.value == b"50", f"counter {key} reads {got}"
    down = kv.Increment(pb.KeyValueIncrementRequest(key=key, delta=-8), timeout=TIMEOUT_S)
    assert down.value == 42, f"Increment by -8 of {key} returned {down.value}"
    return "50 increments -> 50, -8 -> 42"


def kv_compare_and_swap(stubs):
    """CompareAndSwap: create when absent, swap on the expected value, report a mismatch."""
    kv, pb = stubs.kv, stubs.kv_pb
    key = unique("config:version")
    swap = pb.KeyValueCompareAndSwapRequest
    created = kv.CompareAndSwap(swap(key=key, expect_absent=True, value=b"v1"), timeout=TIMEOUT_S)
    assert created.swapped, f"CompareAndSwap expect_absent on a new key: {created}"
    swapped = kv.CompareAndSwap(swap(key=key, expected=b"v1", value=b"v2"), timeout=TIMEOUT_S)
    assert swapped.swapped, f"CompareAndSwap v1 -> v2: {swapped}"
    stale = kv.CompareAndSwap(swap(key=key, expected=b"v1", value=b"v3"), timeout=TIMEOUT_S)
    assert not stale.swapped, f"CompareAndSwap on a stale expectation swapped: {stale}"
    assert stale.current_found and stale.current == b"v2", f"the mismatch reports {stale}"
    got = kv.Get(pb.KeyValueGetRequest(key=key), timeout=TIMEOUT_S)
    assert got.value == b"v2", f"{key} holds {got.value!r} after a refused swap"
    return "absent -> v1 -> v2, stale v1 refused (current v2)"


def kv_guarded_transaction(stubs):
    """A Transaction runs only while its guard holds: guard absent + set + incrby."""
    kv, pb = stubs.kv, stubs.kv_pb
    claim = unique("job:claimed")
    counter = unique("job:claims")
    guard, op = pb.TransactionGuard, pb.TransactionOperation
    request = pb.KeyValueTransactionRequest(
        guards=[guard(absent=guard.Absent(key=claim))],
        ops=[
            op(set=op.Set(key=claim, value=b"worker-1", ttl=duration(60))),
            op(incrby=op.IncrBy(key=counter, delta=5)),
        ],
    )
    first = kv.Transaction(request, timeout=TIMEOUT_S)
    assert first.committed, f"Transaction with an absent guard did not commit: {first}"
    results = [result.value for result in first.results]
    assert results == [1, 5], f"Transaction results {results}, expected [1, 5]"
    second = kv.Transaction(request, timeout=TIMEOUT_S)
    assert not second.committed, f"Transaction committed though {claim} exists: {second}"
    assert second.HasField("failed_guard") and second.failed_guard == 0, \
        f"failed_guard should be 0: {second}"
    got = kv.Get(pb.KeyValueGetRequest(key=counter), timeout=TIMEOUT_S)
    assert got.value == b"5", f"{counter} holds {got.value!r}: the refused Transaction ran"
    return "committed [1, 5]; rerun refused at guard 0, counter still 5"


def kv_scan_prefix(stubs):
    """Scan streams exactly the keys under a prefix, across pages."""
    kv, pb = stubs.kv, stubs.kv_pb
    prefix = unique("scan")
    keys = {f"{prefix}:item:{n}" for n in range(25)}
    entries = [pb.KeyValueEntry(key=key, value=b"x") for key in sorted(keys)]
    written = kv.SetMany(pb.KeyValueSetManyRequest(entries=entries, ttl=duration(600)),
                         timeout=TIMEOUT_S)
    assert written.applied, f"SetMany of {len(entries)} keys: {written}"
    scan = pb.KeyValueScanRequest(pattern=f"{prefix}:*", page_size=10)
    pages = list(kv.Scan(scan, timeout=TIMEOUT_S))
    seen = {key for page in pages for key in page.keys}
    assert seen == keys, f"Scan of {prefix}:* missed {keys - seen}, extra {seen - keys}"
    return f"{len(seen)} keys in {len(pages)} pages"


def kv_bad_input(stubs):
    """An empty key is INVALID_ARGUMENT, and the message names the field."""
    details = expect_error(grpc.StatusCode.INVALID_ARGUMENT, stubs.kv.Get,
                           stubs.kv_pb.KeyValueGetRequest(key=""))
    assert details.startswith("key:"), f"message should start with 'key:': {details!r}"
    return f"empty key -> INVALID_ARGUMENT {details!r}"


def hash_task_status(stubs):
    """The task-status flow: fields and a 24-hour TTL in one call, then read back."""
    hashes, pb = stubs.hash, stubs.hash_pb
    task = unique("task:status")
    fields = {"status": b"running", "progress": b"40", "updated_at": b"2026-01-05T10:00:00Z"}
    added = hashes.Set(pb.HashSetRequest(name=task, fields=fields, ttl=duration(DAY_S)),
                       timeout=TIMEOUT_S)
    assert added.added == 3, f"Hash.Set of {task} added {added.added}, expected 3"
    # The TTL came with the write: a hash's name is its key, so KeyValue.GetTtl sees it at once.
    ttl = stubs.ttl_of(task)
    assert ttl.state == stubs.common.TtlStatus.EXPIRING, f"{task} has no TTL after Set: {ttl}"
    assert DAY_S - 60 <= ttl.ttl.seconds <= DAY_S, f"{task} TTL is {ttl.ttl.seconds} s"
    status = hashes.Get(pb.HashGetRequest(name=task, field="status"), timeout=TIMEOUT_S)
    assert status.found and status.value == b"running", f"Hash.Get status: {status}"
    absent = hashes.Get(pb.HashGetRequest(name=task, field="error"), timeout=TIMEOUT_S)
    assert not absent.found, f"Hash.Get of a missing field: {absent}"
    everything = hashes.GetAll(pb.HashGetAllRequest(name=task), timeout=TIMEOUT_S)
    assert dict(everything.fields) == fields, f"Hash.GetAll: {dict(everything.fields)}"
    return f"3 fields with ttl {ttl.ttl.seconds} s, Get/GetAll read them back"


def hash_counters_and_order(stubs):
    """Hash.Increment of login_count, and GetMany answering in request order."""
    hashes, pb = stubs.hash, stubs.hash_pb
    user = unique("user")
    profile = {"email": b"ada@example.org", "plan": b"pro"}
    hashes.Set(pb.HashSetRequest(name=user, fields=profile, ttl=duration(600)), timeout=TIMEOUT_S)
    login = pb.HashIncrementRequest(name=user, field="login_count", delta=1)
    logins = [hashes.Increment(login, timeout=TIMEOUT_S).value for _ in range(3)]
    assert logins == [1, 2, 3], f"Hash.Increment login_count returned {logins}"
    wanted = ["plan", "missing", "login_count", "email"]
    many = hashes.GetMany(pb.HashGetManyRequest(name=user, fields=wanted), timeout=TIMEOUT_S)
    got = [(value.found, value.value) for value in many.values]
    expected = [(True, b"pro"), (False, b""), (True, b"3"), (True, b"ada@example.org")]
    assert got == expected, f"Hash.GetMany {wanted} returned {got}"
    return "login_count 1..3, GetMany in request order"


def hash_wrong_type(stubs):
    """Hash.Get on a key holding a string is FAILED_PRECONDITION naming the type."""
    key = unique("plain:string")
    stubs.kv.Set(stubs.kv_pb.KeyValueSetRequest(key=key, value=b"text", ttl=duration(600)),
                 timeout=TIMEOUT_S)
    details = expect_error(grpc.StatusCode.FAILED_PRECONDITION, stubs.hash.Get,
                           stubs.hash_pb.HashGetRequest(name=key, field="status"))
    assert "string" in details, f"message should name the type the key holds: {details!r}"
    return f"Hash.Get on a string -> FAILED_PRECONDITION {details!r}"


def session_login_flow(stubs):
    """The helper's session flow: create with a sliding 30-minute TTL, read with a touch,
    update, with optimistic concurrency; the id is random, not `session_{user}_{time}`."""
    sessions, pb = stubs.session, stubs.session_pb
    user = unique("user")
    created = sessions.Create(
        pb.SessionCreateRequest(user_id=user, data={"role": "viewer"},
                                idle_timeout=duration(30 * 60)),
        timeout=TIMEOUT_S)
    assert created.version == 1, f"Create: {created}"
    assert len(created.session_id) == 36 and user not in created.session_id, created.session_id
    idle_ms = created.expires_at.ToMilliseconds() - created.created_at.ToMilliseconds()
    assert idle_ms == 30 * 60 * 1000, f"idle expiry {idle_ms} ms"
    read = sessions.Get(pb.SessionGetRequest(session_id=created.session_id, touch=True),
                        timeout=TIMEOUT_S)
    assert read.user_id == user and dict(read.data) == {"role": "viewer"}, f"Get: {read}"
    updated = sessions.Update(
        pb.SessionUpdateRequest(session_id=created.session_id, set={"role": "admin"},
                                expected_version=1),
        timeout=TIMEOUT_S)
    assert updated.version == 2 and updated.data["role"] == "admin", f"Update: {updated}"
    details = expect_error(
        grpc.StatusCode.FAILED_PRECONDITION, sessions.Update,
        pb.SessionUpdateRequest(session_id=created.session_id, set={"role": "root"},
                                expected_version=1))
    assert details.startswith("expected_version:"), details
    return f"create/get/update, version {updated.version}, stale update refused"


def session_rotate_and_revoke(stubs):
    """Rotate after login kills the old id; DeleteByUser logs the user out everywhere."""
    sessions, pb = stubs.session, stubs.session_pb
    user = unique("user")
    first = sessions.Create(pb.SessionCreateRequest(user_id=user), timeout=TIMEOUT_S)
    second = sessions.Create(pb.SessionCreateRequest(user_id=user), timeout=TIMEOUT_S)
    rotated = sessions.Rotate(pb.SessionRotateRequest(session_id=first.session_id),
                              timeout=TIMEOUT_S)
    assert rotated.session_id != first.session_id, "Rotate kept the id"
    expect_error(grpc.StatusCode.NOT_FOUND, sessions.Get,
                 pb.SessionGetRequest(session_id=first.session_id))
    listed = sessions.ListByUser(pb.SessionListByUserRequest(user_id=user), timeout=TIMEOUT_S)
    ids = sorted(session.session_id for session in listed.sessions)
    assert ids == sorted([rotated.session_id, second.session_id]), f"ListByUser: {ids}"
    revoked = sessions.DeleteByUser(pb.SessionDeleteByUserRequest(user_id=user),
                                    timeout=TIMEOUT_S)
    assert revoked.deleted == 2, f"DeleteByUser: {revoked}"
    expect_error(grpc.StatusCode.NOT_FOUND, sessions.Get,
                 pb.SessionGetRequest(session_id=second.session_id))
    return "rotate killed the old id, 2 sessions listed and revoked"


def lock_acquire_release(stubs):
    """A lock taken once, refused to a second caller, guarding a Transaction that writes a key
    in the lock's slot (its hash tag), then released."""
    locks, pb, kv_pb = stubs.lock, stubs.lock_pb, stubs.kv_pb
    name = unique("lock:report")
    acquire = pb.LockAcquireRequest(name=name, ttl=duration(30), owner="python/flows")
    first = locks.Acquire(acquire, timeout=TIMEOUT_S)
    assert first.acquired and len(first.token) == 32, f"Acquire of a free lock: {first}"
    assert first.fencing_token >= 1, f"fencing token {first.fencing_token}"
    busy = locks.Acquire(acquire, timeout=TIMEOUT_S)
    assert not busy.acquired and busy.token == "", f"a second Acquire got the lock: {busy}"
    assert busy.hash_tag == first.hash_tag, f"hash tags differ: {busy.hash_tag} {first.hash_tag}"
    key = f"report:{first.hash_tag}:total"
    guard, op = kv_pb.TransactionGuard, kv_pb.TransactionOperation
    written = stubs.kv.Transaction(
        kv_pb.KeyValueTransactionRequest(
            guards=[guard(lock_held=guard.LockHeld(name=name, token=first.token))],
            ops=[op(set=op.Set(key=key, value=b"42", ttl=duration(600)))]),
        timeout=TIMEOUT_S)
    assert written.committed, f"Transaction guarded by lock_held did not commit: {written}"
    held = locks.Inspect(pb.LockInspectRequest(name=name), timeout=TIMEOUT_S)
    assert held.held and held.owner == "python/flows", f"Inspect while held: {held}"
    assert held.fencing_token == first.fencing_token, f"Inspect fencing token: {held}"
    released = locks.Release(pb.LockReleaseRequest(name=name, token=first.token),
                             timeout=TIMEOUT_S)
    assert released.released, f"Release by the holder: {released}"
    free = locks.Inspect(pb.LockInspectRequest(name=name), timeout=TIMEOUT_S)
    assert not free.held and free.owner == "", f"Inspect after Release: {free}"
    return f"fence {first.fencing_token}, busy refused, guarded write to {first.hash_tag}, released"


def lock_hold_keepalive(stubs):
    """A worker holds a lock with Hold for about a second while the gateway renews its 300 ms
    lease; nobody else gets it meanwhile, and cancelling the stream frees it at once."""
    locks, pb = stubs.lock, stubs.lock_pb
    name = unique("lock:nightly-report")
    held = threading.Event()
    events = []

    def worker():
        call = locks.Hold(pb.LockHoldRequest(name=name, ttl=millis(300), owner="worker-1"),
                          timeout=TIMEOUT_S)
        done_at = None
        for event in call:              # acquired, then renewed about every 100 ms; lost ends it
            kind = event.WhichOneof("event")
            events.append(kind)
            if kind == "acquired":
                held.set()
                done_at = time.monotonic() + 1.0        # the work takes about a second
            elif kind == "lost" or time.monotonic() >= done_at:
                break
        call.cancel()                                   # the gateway releases the lock

    thread = threading.Thread(target=worker)
    thread.start()
    assert held.wait(TIMEOUT_S), f"Hold sent no acquired event: {events}"
    other = pb.LockAcquireRequest(name=name, ttl=duration(10))
    refused = 0
    until = time.monotonic() + 0.7      # two lease lengths, well before the worker lets go
    while time.monotonic() < until:
        assert not locks.Acquire(other, timeout=TIMEOUT_S).acquired, "Acquire during Hold"
        refused += 1
        time.sleep(0.1)
    thread.join(TIMEOUT_S)
    assert not thread.is_alive(), "the worker did not let go"
    renewals = events.count("renewed")
    assert events[0] == "acquired" and renewals >= 3 and "lost" not in events, events
    other.wait_timeout.FromSeconds(1)
    taken = locks.Acquire(other, timeout=TIMEOUT_S)
    assert taken.acquired, f"Acquire within a second of the cancel: {taken}"
    locks.Release(pb.LockReleaseRequest(name=name, token=taken.token), timeout=TIMEOUT_S)
    return f"held with {renewals} renewals of a 300 ms lease, {refused} Acquires refused, " \
        "free after cancel"


# The flows, in the order they run. Each takes the Stubs and returns a one-line summary.
KEYVALUE_FLOWS = [
    kv_task_result_cache,
    kv_counters,
    kv_compare_and_swap,
    kv_guarded_transaction,
    kv_scan_prefix,
    kv_bad_input,
]
HASH_FLOWS = [
    hash_task_status,
    hash_counters_and_order,
    hash_wrong_type,
]
SESSION_FLOWS = [
    session_login_flow,
    session_rotate_and_revoke,
]
LOCK_FLOWS = [
    lock_acquire_release,
    lock_hold_keepalive,
]

FLOWS = (
    [("KeyValue", flow) for flow in KEYVALUE_FLOWS]
    + [("Hash", flow) for flow in HASH_FLOWS]
    + [("Session", flow) for flow in SESSION_FLOWS]
    + [("Lock", flow) for flow in LOCK_FLOWS]
)


def main(argv):
    """Generates the stubs and runs every flow against the gateway at argv[1]; returns the exit
    code (0 when every flow passed)."""
    if len(argv) != 2:
        print(f"usage: {argv[0]} HOST:PORT", file=sys.stderr)
        return 2
    address = argv[1]
    with tempfile.TemporaryDirectory(prefix="redisgateway-stubs-") as out_dir:
        generate_stubs(pathlib.Path(out_dir))
        with grpc.insecure_channel(address) as channel:
            grpc.channel_ready_future(channel).result(timeout=TIMEOUT_S)
            stubs = Stubs(channel)
            failed = 0
            for service, flow in FLOWS:
                try:
                    outcome = flow(stubs)
                except AssertionError as err:
                    failed += 1
                    print(f"FAIL {service} {flow.__name__}: {err}")
                except grpc.RpcError as err:
                    failed += 1
                    print(f"FAIL {service} {flow.__name__}: {err.code()} {err.details()!r}")
                else:
                    print(f"ok   {service} {flow.__name__}: {outcome}")
    print(f"client_flows: {len(FLOWS) - failed} of {len(FLOWS)} flows ok")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
