"""Runs each use case of redis_gateway_client against a gateway and checks what happens.

Usage: python3 clients/python/example.py HOST:PORT

A bearer token, when the gateway requires one, comes from REDIS_GATEWAY_TOKEN (it needs the
read, write, session, lock and watch permissions). Each use case prints one line, "ok" or
"FAIL"; the exit status is 0 when all passed, 1 otherwise, 2 on a usage error.
"""

import os
import pathlib
import queue
import sys
import time
import uuid

import grpc

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

from redis_gateway_client import (  # noqa: E402  (after the path set-up above)
    LockLost,
    LockNotAcquired,
    SessionVersionConflict,
    connect,
    gateway_lock,
)

# How long an event may take to arrive. A key's expiry is reported when Redis removes it (its
# background cycle runs 10 times a second); a session ending within about 1.25 s, plus up to
# 3 s while a sweeper lease changes hands.
KEY_EVENT_WITHIN = 5.0
SESSION_ENDED_WITHIN = 10.0


def wait_for(events: queue.Queue, matches, within: float):
    """The first event from `events` for which `matches` is true, or None after `within` s."""
    deadline = time.monotonic() + within
    while (left := deadline - time.monotonic()) > 0:
        try:
            event = events.get(timeout=left)
        except queue.Empty:
            break
        if matches(event):
            return event
    return None


def task_cache(gateway, run):
    """Task status and result cached with TTLs, read back; a miss reads as None."""
    task = f"{run}-report"
    gateway.cache_task_status(task, "running", ttl=60)
    gateway.cache_task_result(task, {"rows": 3, "ok": True}, ttl=3600)
    status = gateway.get_task_status(task)
    assert status == "running", f"status read back as {status!r}"
    result = gateway.get_task_result(task)
    assert result == {"rows": 3, "ok": True}, f"result read back as {result!r}"
    ttl = gateway.remaining_ttl(gateway.task_key(task, "status"))
    assert ttl is not None and 50 < ttl <= 60, f"status TTL {ttl}"
    missing = gateway.get_task_status(f"{run}-never-started")
    assert missing is None, f"a task never cached has status {missing!r}"
    return f"status {status!r} (ttl {ttl:.0f} s), result {result}, unknown task -> None"


def task_expiry(gateway, run, key_events):
    """A status cached for 1 s expires, and the listener's callback hears of it."""
    task = f"{run}-short"
    key = gateway.task_key(task, "status")
    started = time.monotonic()
    gateway.cache_task_status(task, "queued", ttl=1)
    event = wait_for(key_events, lambda e: e.key == key, within=1 + KEY_EVENT_WITHIN)
    assert event is not None, f"no expiry event for {key} within {1 + KEY_EVENT_WITHIN} s"
    elapsed = time.monotonic() - started
    assert event.kind == "EXPIRED", f"event kind {event.kind}"
    assert elapsed >= 0.9, f"{key} reported expired after {elapsed:.2f} s, before its TTL"
    assert gateway.get_task_status(task) is None, f"{key} still readable after its expiry"
    return f"{key} set with a 1 s TTL, expiry callback after {elapsed:.2f} s"


def session(gateway, run):
    """Create, read (sliding the idle expiry) and update a session; a stale update fails."""
    user = f"user-{run}"
    created = gateway.create_session(user, {"role": "viewer"}, idle_timeout=1800)
    assert created.version == 1 and len(created.session_id) == 36, f"created {created}"
    read = gateway.get_session(created.session_id)
    assert read is not None and read.user_id == user, f"read {read}"
    assert read.data == {"role": "viewer"}, f"read data {read.data}"
    updated = gateway.update_session(created.session_id, set={"cart": "3"}, remove=["role"],
                                     expected_version=created.version)
    assert updated.version == 2 and updated.data == {"cart": "3"}, f"updated {updated}"
    try:
        gateway.update_session(created.session_id, set={"cart": "9"},
                               expected_version=created.version)
    except SessionVersionConflict:
        pass
    else:
        raise AssertionError("an update with a stale expected_version was applied")
    assert gateway.delete_session(created.session_id), "Delete found no session"
    return (f"created for {user}, read {read.data}, updated to {updated.data} "
            f"(version {updated.version}), stale update refused")


def session_ended(gateway, run, endings):
    """Deleting a session is reported by the listener's session-ending callback."""
    user = f"user-{run}-logout"
    created = gateway.create_session(user)
    started = time.monotonic()
    assert gateway.delete_session(created.session_id), "Delete found no session"
    ended = wait_for(endings, lambda e: e.session_id == created.session_id,
                     within=SESSION_ENDED_WITHIN)
    assert ended is not None, f"no ending for the deleted session within {SESSION_ENDED_WITHIN} s"
    elapsed = time.monotonic() - started
    assert ended.reason == "DELETED" and ended.user_id == user, f"ending {ended}"
    assert gateway.get_session(created.session_id) is None, "the deleted session still reads"
    return f"Delete of {user}'s session reported as {ended.reason} after {elapsed:.2f} s"


def lock(gateway, run):
    """gateway_lock("resource_1") is exclusive, kept past its lease while held, and free as
    soon as the block is left."""
    with gateway_lock("resource_1", ttl=1.0, wait=5, owner=f"example {run}") as held:
        assert held.held and held.fencing_token >= 1, f"entered without the lock: {held}"
        first_expiry = held.expires_at
        started = time.monotonic()
        try:
            with gateway_lock("resource_1", wait=0.5):
                raise AssertionError("a second gateway_lock entered while the first held it")
        except LockNotAcquired as err:
            refused = f"second gateway_lock refused after {time.monotonic() - started:.2f} s " \
                f"({err.reason})"
        time.sleep(1.5)     # longer than the 1 s lease: the gateway renews it meanwhile
        held.check()
        inspected = gateway.call(gateway.locks.Inspect,
                                 gateway.pb.lock_pb2.LockInspectRequest(name="resource_1"))
        assert inspected.held and inspected.fencing_token == held.fencing_token, \
            f"Inspect while held: {inspected}"
        assert held.expires_at > first_expiry, "the lease was not renewed"
    after = gateway.call(gateway.locks.Inspect,
                         gateway.pb.lock_pb2.LockInspectRequest(name="resource_1"))
    # Free, unless another client took it in the meantime: never still ours.
    assert not after.held or after.fencing_token != held.fencing_token, \
        f"still held after the block: {after}"
    with gateway_lock("resource_1", wait=5) as again:
        assert again.fencing_token > held.fencing_token, "fencing tokens did not increase"
    return (f"fence {held.fencing_token}, {refused}, held 1.5 s on a 1 s lease, "
            f"released when the block ended (next holder's fence {again.fencing_token})")


def lock_lost(gateway, run):
    """A lock whose lease is taken away is reported lost: check() and leaving the block raise."""
    name = f"resource_1:{run}"
    lost_seen = []
    try:
        with gateway_lock(name, ttl=0.6, wait=5, on_lost=lost_seen.append) as held:
            # Stand-in for a lease that runs out under a stalled holder: the token releases it
            # behind the block's back, and the gateway's next renewal finds it gone.
            gateway.call(gateway.locks.Release,
                         gateway.pb.lock_pb2.LockReleaseRequest(name=name, token=held.token))
            deadline = time.monotonic() + 5
            # The loss is marked before on_lost runs (on the stream's thread): wait for both.
            while (held.held or not lost_seen) and time.monotonic() < deadline:
                time.sleep(0.05)
            assert not held.held and lost_seen, "the loss was not noticed within 5 s"
            try:
                held.check()
            except LockLost:
                pass
            else:
                raise AssertionError("check() did not raise after the loss")
    except LockLost as err:
        return f"loss noticed ({err.reason}); check() and leaving the block raised LockLost"
    raise AssertionError("leaving the block of a lost lock did not raise LockLost")


def main(argv):
    if len(argv) != 2:
        print(f"usage: {argv[0]} HOST:PORT  (token, if needed, in REDIS_GATEWAY_TOKEN)",
              file=sys.stderr)
        return 2
    run = uuid.uuid4().hex[:12]     # keeps this run's keys and users apart from others'
    gateway = connect(argv[1], token=os.environ.get("REDIS_GATEWAY_TOKEN") or None)
    try:
        gateway.wait_ready(timeout=10)
    except grpc.FutureTimeoutError:
        print(f"FAIL connect: no gateway answered at {argv[1]} within 10 s")
        return 1
    print(f"connected to {argv[1]} (token: {'yes' if gateway.metadata else 'no'})")

    key_events, endings = queue.Queue(), queue.Queue()

    def on_task_expired(event):
        print(f"  listener: {event.key} {event.kind}")
        key_events.put(event)

    def on_session_ended(event):
        print(f"  listener: session of {event.user_id} ended, {event.reason}")
        endings.put(event)

    steps = [
        ("task cache", lambda: task_cache(gateway, run)),
        ("task expiry", lambda: task_expiry(gateway, run, key_events)),
        ("session", lambda: session(gateway, run)),
        ("session ended", lambda: session_ended(gateway, run, endings)),
        ("lock", lambda: lock(gateway, run)),
        ("lock lost", lambda: lock_lost(gateway, run)),
    ]
    failed = 0
    try:
        listener = gateway.listener(on_key_expired=on_task_expired,
                                    on_session_ended=on_session_ended).start()
    except Exception as err:
        print(f"FAIL listener: {describe(err)}")
        gateway.close()
        return 1
    print("listener subscribed to task:* expirations and session endings")
    with listener:
        for name, step in steps:
            sys.stdout.flush()
            try:
                outcome = step()
            except Exception as err:
                failed += 1
                print(f"FAIL {name}: {describe(err)}")
            else:
                print(f"ok   {name}: {outcome}")
    gateway.close()
    print(f"example: {len(steps) - failed} of {len(steps)} use cases ok")
    return 1 if failed else 0


def describe(err):
    """A one-line account of an exception, with the gRPC status when there is one."""
    if isinstance(err, grpc.RpcError) and hasattr(err, "code"):
        return f"{err.code().name} {err.details()!r}"
    return f"{type(err).__name__}: {err}"


if __name__ == "__main__":
    sys.exit(main(sys.argv))
