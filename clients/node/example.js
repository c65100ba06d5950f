#!/usr/bin/env node
// @ts-check
/**
 * Runs the client's three helpers against a gateway and checks what they return:
 *
 *   node example.js HOST:PORT
 *
 * 1. A task result cached with a TTL reads back with its bytes and a TTL; a missing one is null.
 * 2. A lock taken with Lock.Hold is exclusive while held (an Acquire and a second Hold that wait
 *    briefly both fail), stays held across several renewals of a short lease, and is free again
 *    once the stream is ended; a lock released behind the holder's back is reported lost.
 * 3. A `task:` key set with a 1 s TTL is reported by KeyValue.WatchExpirations within 5 s.
 *
 * REDIS_GATEWAY_TOKEN, when set, is sent as the bearer token. Prints one line per flow and exits
 * 0 when every check passed, 1 otherwise (2 for bad usage).
 *
 * @module example
 */

import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';

import { GatewayClient, LockLostError } from './gateway.js';

/** The whole run is killed past this, so a hung stream cannot hang its caller. */
const RUN_TIMEOUT_MS = 60_000;

let counter = 0;

/**
 * A name no other run uses.
 * @param {string} label
 */
function unique(label) {
  counter += 1;
  return `node-example-${label}-${process.pid}-${Date.now().toString(36)}-${counter}`;
}

/**
 * Caches a result for a minute and reads it back with its TTL.
 * @param {GatewayClient} gateway
 */
async function taskResultCache(gateway) {
  const taskId = unique('report');
  const result = { status: 'done', rows: 42 };
  const key = await gateway.cacheTaskResult(taskId, JSON.stringify(result), 60_000);
  const cached = await gateway.getTaskResult(taskId);
  assert.ok(cached, `${key} not found right after it was cached`);
  assert.deepEqual(JSON.parse(cached.value.toString('utf8')), result);
  assert.ok(cached.ttlMs !== null && cached.ttlMs > 50_000 && cached.ttlMs <= 60_000, `TTL of ${key}: ${cached.ttlMs}`);
  assert.equal(await gateway.getTaskResult(unique('never-cached')), null);
  return `${key} read back with ${cached.ttlMs} ms to live; a missing task is null`;
}

/**
 * Holds a lock with a 600 ms lease past several renewals, checks nobody else gets it, ends the
 * stream and takes it again; then has a lock released under a holder and sees the loss.
 * @param {GatewayClient} gateway
 */
async function lockHold(gateway) {
  const name = unique('lock');
  const lock = await gateway.holdLock(name, { ttlMs: 600, owner: 'node-example' });
  assert.ok(lock.held && lock.token && lock.fencingToken > 0n, 'acquired without a token');

  const busy = await gateway.acquireLock(name, { ttlMs: 5_000, waitMs: 300 });
  assert.equal(busy.acquired, false, 'Lock.Acquire got a lock held by a Hold stream');
  await assert.rejects(
    gateway.holdLock(name, { ttlMs: 600, waitMs: 300 }),
    LockLostError,
    'a second Lock.Hold got a lock held by another',
  );

  await sleep(1_200); // two lease lengths: held only because the gateway renews it
  lock.assertHeld();
  assert.ok(lock.renewals >= 3, `only ${lock.renewals} renewals in 1.2 s of a 600 ms lease`);
  const renewals = lock.renewals;

  await lock.release();
  assert.equal(lock.held, false);
  const next = await gateway.acquireLock(name, { ttlMs: 5_000, waitMs: 2_000 });
  assert.ok(next.acquired, 'the lock was not free again after its Hold stream ended');
  assert.ok(next.fencingToken > lock.fencingToken, 'fencing tokens did not increase');
  assert.equal(await gateway.releaseLock(name, next.token), true);

  // Loss: the lease is released behind the holder's back (its token leaked); the gateway's
  // next renewal finds it gone and sends `lost`, and withLock rejects while the work still runs.
  const started = Date.now();
  await assert.rejects(
    gateway.withLock(name, { ttlMs: 600 }, async (held) => {
      assert.equal(await gateway.releaseLock(name, held.token), true);
      await sleep(5_000, undefined, { signal: held.signal });
      throw new Error('the work outlived a lost lock');
    }),
    LockLostError,
  );
  const noticed = Date.now() - started;
  assert.ok(noticed < 2_000, `the loss took ${noticed} ms to notice`);

  return `held through ${renewals} renewals of a 600 ms lease while Acquire and Hold were refused; free after release; a stolen lease reported lost in ${noticed} ms`;
}

/**
 * Watches `task:*` and sees a 1 s result expire.
 * @param {GatewayClient} gateway
 */
async function watchExpirations(gateway) {
  const watch = await gateway.watchExpirations(); // pattern task:*, EXPIRED events
  try {
    const taskId = unique('short-lived');
    const key = await gateway.cacheTaskResult(taskId, 'soon gone', 1_000);
    const setAt = Date.now();
    const event = await watch.waitFor((e) => e.type === 'expired' && e.key === key, 5_000);
    assert.equal(event.type, 'expired');
    if (event.type === 'expired') {
      assert.equal(event.kind, 'EXPIRED');
      assert.ok(event.cursor, 'an event without a cursor');
    }
    assert.equal(await gateway.getTaskResult(taskId), null);
    return `${key} (TTL 1 s) reported expired after ${Date.now() - setAt} ms`;
  } finally {
    watch.close();
  }
}

/** The flows, in the order they run. */
const FLOWS = [
  ['task result cache', taskResultCache],
  ['lock hold', lockHold],
  ['watch expirations', watchExpirations],
];

/**
 * Runs every flow against the gateway at `address`; returns the exit code.
 * @param {string} address
 * @returns {Promise<number>}
 */
async function main(address) {
  const gateway = new GatewayClient(address, { token: process.env.REDIS_GATEWAY_TOKEN });
  let failed = 0;
  try {
    await gateway.ready(10_000);
    for (const [title, flow] of FLOWS) {
      try {
        console.log(`ok   ${title}: ${await /** @type {(g: GatewayClient) => Promise<string>} */ (flow)(gateway)}`);
      } catch (err) {
        failed += 1;
        console.error(`FAIL ${title}: ${err instanceof Error ? (err.stack ?? err.message) : err}`);
      }
    }
  } finally {
    gateway.close();
  }
  return failed === 0 ? 0 : 1;
}

if (process.argv.length !== 3) {
  console.error('usage: node example.js HOST:PORT');
  process.exit(2);
}
setTimeout(() => {
  console.error(`FAIL: the example did not finish within ${RUN_TIMEOUT_MS} ms`);
  process.exit(1);
}, RUN_TIMEOUT_MS).unref();
main(process.argv[2]).then(
  (code) => process.exit(code),
  (err) => {
    console.error(`FAIL: ${err instanceof Error ? (err.stack ?? err.message) : err}`);
    process.exit(1);
  },
);
