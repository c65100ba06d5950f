// @ts-check
/**
 * A small Node.js client for redis-gateway, on `@grpc/grpc-js` with the contract loaded at run
 * time from `../../proto` by `@grpc/proto-loader` (no generated code).
 *
 * - {@link GatewayClient}: one channel to a gateway (plaintext or TLS), an optional bearer
 *   token sent as `authorization` metadata on every call, and a deadline on every unary call.
 * - Task results: {@link GatewayClient#cacheTaskResult} / {@link GatewayClient#getTaskResult}
 *   keep a result under `task:<id>` with a TTL (KeyValue.Set / KeyValue.Get).
 * - Locks: {@link GatewayClient#holdLock} takes a lock with Lock.Hold and resolves once the
 *   stream reports `acquired`; the gateway renews the lease while the stream is open, and
 *   {@link HeldLock#release} ends the stream, which releases the lock. A `lost` event (or the
 *   stream failing) aborts {@link HeldLock#signal}; {@link GatewayClient#withLock} runs work
 *   under a lock and rejects when the lock is lost meanwhile.
 * - Expirations: {@link GatewayClient#watchExpirations} opens KeyValue.WatchExpirations
 *   (`task:*` by default) and resolves once the stream reports `subscribed`; the returned
 *   {@link ExpiryWatch} is an async iterable of events.
 *
 * Messages use proto-loader's JavaScript shapes: camelCase field names, 64-bit integers as
 * decimal strings, enums as their names, `bytes` as Buffers, and `event` naming the oneof
 * member that is set. The helpers convert durations, timestamps and fencing tokens to
 * milliseconds, Dates and BigInts.
 *
 * @module gateway
 */

import { fileURLToPath } from 'node:url';

import grpc from '@grpc/grpc-js';
import protoLoader from '@grpc/proto-loader';

/** The directory holding `redisgateway/v1/*.proto`: the repository's `proto/`. */
export const PROTO_DIR = fileURLToPath(new URL('../../proto/', import.meta.url));

/** The key prefix of task results, and the default pattern of {@link GatewayClient#watchExpirations}. */
export const TASK_PREFIX = 'task:';

/** The deadline of a unary call unless the client or the call says otherwise, in milliseconds. */
export const DEFAULT_DEADLINE_MS = 5_000;

/** How many events an {@link ExpiryWatch} buffers before it stops reading from the stream. */
const WATCH_BUFFER = 256;

const packageDefinition = protoLoader.loadSync(
  ['keyvalue', 'hash', 'session', 'lock', 'monitor'].map((name) => `redisgateway/v1/${name}.proto`),
  {
    includeDirs: [PROTO_DIR],
    keepCase: false, // camelCase field names: waitTimeout, fencingToken, ...
    longs: String, // uint64 / int64 as decimal strings: no precision lost
    enums: String, // enum values by name: 'EXPIRED'
    defaults: true, // unset scalar fields read as their zero values
    oneofs: true, // `event: 'acquired'` names the member of a oneof that is set
  },
);

/**
 * The loaded `redisgateway.v1` package: service constructors (`KeyValue`, `Hash`, `Session`,
 * `Lock`, `Monitor`) for callers who need an RPC the helpers do not wrap.
 * @type {Record<string, grpc.ServiceClientConstructor>}
 */
// @ts-ignore: loadPackageDefinition's result is typed as nested objects of unknown shape.
export const v1 = grpc.loadPackageDefinition(packageDefinition).redisgateway.v1;

/**
 * A `google.protobuf.Duration` message.
 * @typedef {{ seconds: string | number, nanos: number }} DurationMessage
 */

/**
 * A `google.protobuf.Timestamp` message.
 * @typedef {{ seconds: string | number, nanos: number }} TimestampMessage
 */

/**
 * A `google.protobuf.Duration` of `ms` whole milliseconds (the gateway's precision).
 * @param {number} ms a non-negative whole number of milliseconds
 * @returns {DurationMessage}
 */
export function duration(ms) {
  if (!Number.isSafeInteger(ms) || ms < 0) {
    throw new RangeError(`a duration is a non-negative whole number of milliseconds, not ${ms}`);
  }
  return { seconds: String(Math.floor(ms / 1000)), nanos: (ms % 1000) * 1_000_000 };
}

/**
 * Milliseconds of a `google.protobuf.Duration`; null when it is unset.
 * @param {DurationMessage | null | undefined} message
 * @returns {number | null}
 */
export function durationMs(message) {
  return message ? Number(message.seconds) * 1000 + Math.round(message.nanos / 1_000_000) : null;
}

/**
 * A Date of a `google.protobuf.Timestamp`; null when it is unset.
 * @param {TimestampMessage | null | undefined} message
 * @returns {Date | null}
 */
export function timestampDate(message) {
  return message ? new Date(Number(message.seconds) * 1000 + Math.floor(message.nanos / 1_000_000)) : null;
}

/** The lock is not, or no longer, held: Lock.Hold reported `lost`, or its stream ended. */
export class LockLostError extends Error {
  /**
   * @param {string} name the lock's name
   * @param {string} reason why, for logs (the gateway's `lost.reason` is not meant to be parsed)
   */
  constructor(name, reason) {
    super(`lock ${JSON.stringify(name)} lost: ${reason}`);
    this.name = 'LockLostError';
    /** The lock's name. */
    this.lockName = name;
    /** Why it was lost. */
    this.reason = reason;
  }
}

/**
 * Options of a {@link GatewayClient}.
 * @typedef {object} GatewayOptions
 * @property {string} [token] bearer token, sent as `authorization: Bearer <token>` on every call
 *   (needed when the gateway runs with an auth file)
 * @property {{ rootCerts?: Buffer, privateKey?: Buffer, certChain?: Buffer }} [tls] serve the
 *   channel over TLS: PEM CA bundle to trust (default: the system's roots), and a client
 *   certificate and key for mTLS. Without it the channel is plaintext.
 * @property {number} [deadlineMs] deadline of each unary call, in milliseconds (default 5000)
 * @property {grpc.ChannelOptions} [channelOptions] extra channel options, e.g.
 *   `{ 'grpc.keepalive_time_ms': 30000 }`
 */

/**
 * Options of {@link GatewayClient#holdLock} and {@link GatewayClient#acquireLock}.
 * @typedef {object} LockOptions
 * @property {number} ttlMs lease length in milliseconds; Hold renews it about every ttl/3
 * @property {number} [waitMs] how long to wait for a busy lock (default 0: try once)
 * @property {string} [owner] a label shown by Lock.Inspect (grants nothing)
 * @property {number} [lockDelayMs] keep the lock closed this long after a lease that ran out
 *   while held
 */

/**
 * Lock.Acquire's outcome.
 * @typedef {object} AcquireResult
 * @property {boolean} acquired whether the lock was taken
 * @property {string} token the owner token (empty when not acquired); it alone releases the lock
 * @property {bigint} fencingToken increases strictly per lock name (0n when not acquired)
 * @property {Date | null} expiresAt when the lease ends unless extended
 * @property {string} hashTag the lock's Redis Cluster hash tag, e.g. `{b9ce}`
 */

/**
 * A cached task result.
 * @typedef {object} TaskResult
 * @property {Buffer} value the stored bytes
 * @property {number | null} ttlMs remaining time-to-live; null when the key does not expire
 */

/**
 * An event of an {@link ExpiryWatch}.
 * @typedef {{ type: 'expired', key: string, kind: string, observedAt: Date | null, cursor: string }
 *   | { type: 'gap', reason: string, dropped: number, cursor: string }} ExpiryEvent
 *   `expired`: a key expired (`kind` 'EXPIRED'), or was evicted or deleted when asked for.
 *   `gap`: events may be missing (`reason` 'lagged', 'reconnected', 'overloaded' or
 *   'truncated'); resume after `cursor` to recover what is still retained.
 */

/** A client of one gateway: one channel shared by the service stubs. */
export class GatewayClient {
  /** @type {grpc.Metadata} */
  #metadata;

  /**
   * @param {string} address the gateway's `host:port`
   * @param {GatewayOptions} [options]
   */
  constructor(address, options = {}) {
    const credentials = options.tls
      ? grpc.credentials.createSsl(
          options.tls.rootCerts ?? null,
          options.tls.privateKey ?? null,
          options.tls.certChain ?? null,
        )
      : grpc.credentials.createInsecure();
    /** The one channel every stub below uses. */
    this.channel = new grpc.Channel(address, credentials, options.channelOptions ?? {});
    const shared = { channelOverride: this.channel };
    /** Deadline of each unary call, in milliseconds. */
    this.deadlineMs = options.deadlineMs ?? DEFAULT_DEADLINE_MS;
    // Call credentials cannot be composed with an insecure channel, so the token goes into
    // each call's metadata: the same header over plaintext (loopback) and TLS.
    this.#metadata = new grpc.Metadata();
    if (options.token) {
      this.#metadata.set('authorization', `Bearer ${options.token}`);
    }
    /** Raw stubs, for the RPCs the helpers do not wrap: pass {@link GatewayClient#callOptions}. */
    this.keyValue = new v1.KeyValue(address, credentials, shared);
    this.hash = new v1.Hash(address, credentials, shared);
    this.session = new v1.Session(address, credentials, shared);
    this.lock = new v1.Lock(address, credentials, shared);
    this.monitor = new v1.Monitor(address, credentials, shared);
  }

  /**
   * Waits until the channel is connected.
   * @param {number} [timeoutMs]
   * @returns {Promise<void>}
   */
  ready(timeoutMs = this.deadlineMs) {
    return new Promise((resolve, reject) => {
      this.keyValue.waitForReady(Date.now() + timeoutMs, (err) => (err ? reject(err) : resolve()));
    });
  }

  /** Closes the channel; open streams end with CANCELLED. */
  close() {
    this.channel.close();
  }

  /**
   * The metadata (bearer token) and deadline of a call.
   * @param {number | null} [deadlineMs] the call's deadline; null: none (for streams)
   * @returns {[grpc.Metadata, grpc.CallOptions]}
   */
  callOptions(deadlineMs = this.deadlineMs) {
    return [this.#metadata.clone(), deadlineMs === null ? {} : { deadline: Date.now() + deadlineMs }];
  }

  /**
   * Runs a unary RPC and resolves with its response; rejects with the gRPC error
   * (`err.code`, `err.details`).
   * @param {grpc.Client} stub
   * @param {string} method
   * @param {object} request
   * @param {number} [deadlineMs]
   * @returns {Promise<any>}
   */
  unary(stub, method, request, deadlineMs = this.deadlineMs) {
    const [metadata, options] = this.callOptions(deadlineMs);
    return new Promise((resolve, reject) => {
      /** @type {any} */ (stub)[method](request, metadata, options, (/** @type {grpc.ServiceError | null} */ err, /** @type {any} */ response) =>
        err ? reject(err) : resolve(response),
      );
    });
  }

  /**
   * Caches a task's result under `task:<taskId>` for `ttlMs` milliseconds (KeyValue.Set; any
   * earlier result is replaced, TTL included).
   * @param {string} taskId
   * @param {Buffer | string} result the bytes to keep (a string is stored as UTF-8)
   * @param {number} ttlMs
   * @returns {Promise<string>} the key
   */
  async cacheTaskResult(taskId, result, ttlMs) {
    const key = TASK_PREFIX + taskId;
    const value = typeof result === 'string' ? Buffer.from(result, 'utf8') : result;
    const response = await this.unary(this.keyValue, 'Set', { key, value, ttl: duration(ttlMs) });
    if (!response.applied) {
      throw new Error(`KeyValue.Set ${key}: not applied`);
    }
    return key;
  }

  /**
   * Reads a cached task result and its remaining TTL (KeyValue.Get); null when it is missing or
   * has expired.
   * @param {string} taskId
   * @returns {Promise<TaskResult | null>}
   */
  async getTaskResult(taskId) {
    const response = await this.unary(this.keyValue, 'Get', { key: TASK_PREFIX + taskId, includeTtl: true });
    if (!response.found) {
      return null;
    }
    return { value: response.value, ttlMs: response.ttl?.state === 'EXPIRING' ? durationMs(response.ttl.ttl) : null };
  }

  /**
   * Takes a lock once with Lock.Acquire (waiting up to `waitMs` while it is busy). A busy lock
   * is not an error: `acquired` is false. Release it with {@link GatewayClient#releaseLock}.
   * @param {string} name
   * @param {LockOptions} options
   * @returns {Promise<AcquireResult>}
   */
  async acquireLock(name, { ttlMs, waitMs = 0, owner = '', lockDelayMs = 0 }) {
    const response = await this.unary(
      this.lock,
      'Acquire',
      { name, ttl: duration(ttlMs), waitTimeout: duration(waitMs), owner, lockDelay: duration(lockDelayMs) },
      waitMs + this.deadlineMs, // the wait ends at the call's deadline: leave it room
    );
    return {
      acquired: response.acquired,
      token: response.token,
      fencingToken: BigInt(response.fencingToken),
      expiresAt: timestampDate(response.expiresAt),
      hashTag: response.hashTag,
    };
  }

  /**
   * Releases a lock taken with `token` (Lock.Release); false when the token no longer held it.
   * @param {string} name
   * @param {string} token
   * @returns {Promise<boolean>}
   */
  async releaseLock(name, token) {
    return (await this.unary(this.lock, 'Release', { name, token })).released;
  }

  /**
   * Takes a lock with Lock.Hold and keeps it for as long as the stream is open: resolves with a
   * {@link HeldLock} once the stream reports `acquired`. Rejects with a {@link LockLostError}
   * when the lock stays busy past `waitMs` (the stream sends `lost`), and with the gRPC error
   * when the call fails (or nothing arrives within `waitMs` plus the client's deadline).
   *
   * The stream itself has no deadline: the gateway renews the lease about every ttl/3 while it
   * is open. Call {@link HeldLock#release} when done; until then, stop acting as the holder
   * as soon as {@link HeldLock#signal} aborts.
   * @param {string} name
   * @param {LockOptions} options
   * @returns {Promise<HeldLock>}
   */
  holdLock(name, { ttlMs, waitMs = 0, owner = '', lockDelayMs = 0 }) {
    const request = { name, ttl: duration(ttlMs), waitTimeout: duration(waitMs), owner, lockDelay: duration(lockDelayMs) };
    const [metadata, options] = this.callOptions(null);
    /** @type {grpc.ClientReadableStream<any>} */
    const call = this.lock.Hold(request, metadata, options);
    return new Promise((resolve, reject) => {
      let settled = false;
      /** @type {grpc.ServiceError | null} */
      let failure = null;
      /** @param {Error | null} err @param {HeldLock} [lock] */
      const settle = (err, lock) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        if (err) {
          call.cancel();
          reject(err);
        } else {
          resolve(/** @type {HeldLock} */ (lock));
        }
      };
      const timer = setTimeout(
        () => settle(new Error(`Lock.Hold ${JSON.stringify(name)}: no answer within ${waitMs + this.deadlineMs} ms`)),
        waitMs + this.deadlineMs,
      );
      call.on('data', (message) => {
        if (message.event === 'acquired') {
          settle(null, new HeldLock(name, call, message.acquired));
        } else if (message.event === 'lost') {
          settle(new LockLostError(name, message.lost.reason));
        }
      });
      // The error is kept for 'status', which always follows: a listener must exist, or the
      // emitted error would be thrown.
      call.on('error', (err) => {
        failure = /** @type {grpc.ServiceError} */ (err);
      });
      call.on('status', (status) => {
        settle(failure ?? new LockLostError(name, `the stream ended before acquired (${grpc.status[status.code]})`));
      });
    });
  }

  /**
   * Runs `work` while holding a lock taken with {@link GatewayClient#holdLock}, then releases
   * it. Rejects with a {@link LockLostError} as soon as the lock is lost while `work` runs
   * (`work` should watch `lock.signal` and stop: its result is ignored then).
   * @template T
   * @param {string} name
   * @param {LockOptions} options
   * @param {(lock: HeldLock) => Promise<T>} work
   * @returns {Promise<T>}
   */
  async withLock(name, options, work) {
    const lock = await this.holdLock(name, options);
    try {
      /** @type {Promise<never>} */
      const lost = new Promise((_, reject) => {
        lock.signal.addEventListener('abort', () => reject(lock.signal.reason), { once: true });
      });
      lost.catch(() => {}); // a loss after `work` finished is nobody's error
      return await Promise.race([work(lock), lost]);
    } finally {
      await lock.release();
    }
  }

  /**
   * Opens KeyValue.WatchExpirations and resolves with an {@link ExpiryWatch} once the stream
   * reports `subscribed`: from then on every matching key event is delivered, so a TTL set
   * after this resolves is reported. Rejects with the gRPC error when the call fails
   * (FAILED_PRECONDITION: Redis does not publish key events) or nothing arrives within the
   * client's deadline.
   * @param {object} [options]
   * @param {string} [options.pattern] glob over key names (default `task:*`)
   * @param {string[]} [options.kinds] 'EXPIRED' (the default), 'EVICTED', 'DELETED'
   * @param {string} [options.resumeAfter] a cursor of an earlier event: replay what came after it
   * @returns {Promise<ExpiryWatch>}
   */
  watchExpirations({ pattern = `${TASK_PREFIX}*`, kinds = ['EXPIRED'], resumeAfter = '' } = {}) {
    const [metadata, options] = this.callOptions(null);
    /** @type {grpc.ClientReadableStream<any>} */
    const call = this.keyValue.WatchExpirations({ pattern, kinds, resumeAfter }, metadata, options);
    const watch = new ExpiryWatch(call);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        watch.close();
        reject(new Error(`KeyValue.WatchExpirations: no subscribed within ${this.deadlineMs} ms`));
      }, this.deadlineMs);
      watch.subscribed.then(
        () => {
          clearTimeout(timer);
          resolve(watch);
        },
        (err) => {
          clearTimeout(timer);
          reject(err);
        },
      );
    });
  }
}

/**
 * A lock held by an open Lock.Hold stream (from {@link GatewayClient#holdLock}). The gateway
 * renews its lease about every ttl/3 until {@link HeldLock#release} ends the stream.
 */
export class HeldLock {
  /** @type {grpc.ClientReadableStream<any>} */
  #call;
  #controller = new AbortController();
  #released = false;
  /** @type {Promise<void>} */
  #closed;

  /**
   * @param {string} name
   * @param {grpc.ClientReadableStream<any>} call the Hold stream, past its `acquired` event
   * @param {{ token: string, fencingToken: string, expiresAt: TimestampMessage, hashTag: string }} acquired
   */
  constructor(name, call, acquired) {
    this.#call = call;
    /** The lock's name. */
    this.name = name;
    /** The owner token: it can also be passed to Lock.Release or Lock.Extend. */
    this.token = acquired.token;
    /** This acquisition's fencing token: send it with every write to the protected resource. */
    this.fencingToken = BigInt(acquired.fencingToken);
    /** The lock's Redis Cluster hash tag, for keys of a Transaction guarded by `lock_held`. */
    this.hashTag = acquired.hashTag;
    /** When the lease ends unless renewed, by Redis' clock. */
    this.expiresAt = timestampDate(acquired.expiresAt);
    /** How many `renewed` events have arrived. */
    this.renewals = 0;
    call.on('data', (message) => {
      if (message.event === 'renewed') {
        this.renewals += 1;
        this.expiresAt = timestampDate(message.renewed.expiresAt);
      } else if (message.event === 'lost') {
        this.#lose(message.lost.reason);
      }
    });
    this.#closed = new Promise((resolve) => {
      call.on('status', (status) => {
        this.#lose(`the stream ended (${grpc.status[status.code]}: ${status.details})`);
        resolve();
      });
    });
  }

  /**
   * Aborted, with a {@link LockLostError} as its reason, when the lock is lost: pass it to
   * work that must stop then (`fetch(url, { signal })`, `signal.throwIfAborted()`).
   * @returns {AbortSignal}
   */
  get signal() {
    return this.#controller.signal;
  }

  /** True until the lock is released or lost. */
  get held() {
    return !this.#released && !this.signal.aborted;
  }

  /** Throws a {@link LockLostError} when the lock is no longer held. */
  assertHeld() {
    this.signal.throwIfAborted();
    if (this.#released) {
      throw new LockLostError(this.name, 'released');
    }
  }

  /**
   * Releases the lock by ending the Hold stream (the gateway releases it when the client
   * cancels); resolves once the stream has closed. Safe to call more than once, and after a
   * loss.
   * @returns {Promise<void>}
   */
  release() {
    if (!this.#released && !this.signal.aborted) {
      this.#released = true;
      this.#call.cancel();
    }
    return this.#closed;
  }

  /** @param {string} reason */
  #lose(reason) {
    if (!this.#released && !this.signal.aborted) {
      this.#controller.abort(new LockLostError(this.name, reason));
    }
  }
}

/**
 * An open KeyValue.WatchExpirations stream (from {@link GatewayClient#watchExpirations}): an
 * async iterable of {@link ExpiryEvent}s that ends when {@link ExpiryWatch#close} is called, and
 * throws the gRPC error when the stream fails.
 * @implements {AsyncIterableIterator<ExpiryEvent>}
 */
export class ExpiryWatch {
  /** @type {grpc.ClientReadableStream<any>} */
  #call;
  /** @type {ExpiryEvent[]} */
  #buffer = [];
  /** @type {((value: void) => void) | null} */
  #wake = null;
  #closed = false;
  /** @type {Error | null} */
  #failure = null;
  #ended = false;

  /** @param {grpc.ClientReadableStream<any>} call */
  constructor(call) {
    this.#call = call;
    /** The cursor of the latest message: pass it as `resumeAfter` to continue after it. */
    this.cursor = '';
    /** @type {(cursor: string) => void} */
    let subscribed = () => {};
    /** @type {(err: Error) => void} */
    let failed = () => {};
    /** Resolves with the cursor of `subscribed`; rejects when the stream fails first. */
    this.subscribed = new Promise((resolve, reject) => {
      subscribed = resolve;
      failed = reject;
    });
    this.subscribed.catch(() => {}); // also reported by next()
    call.on('data', (message) => {
      if (message.event === 'subscribed') {
        this.cursor = message.subscribed.cursor;
        subscribed(this.cursor);
        return;
      }
      /** @type {ExpiryEvent} */
      let event;
      if (message.event === 'expired') {
        const { key, kind, observedAt, cursor } = message.expired;
        event = { type: 'expired', key, kind, observedAt: timestampDate(observedAt), cursor };
      } else if (message.event === 'gap') {
        const { reason, dropped, cursor } = message.gap;
        event = { type: 'gap', reason, dropped: Number(dropped), cursor };
      } else {
        return; // a message kind newer than this client
      }
      this.#buffer.push(event);
      if (this.#buffer.length >= WATCH_BUFFER) {
        call.pause(); // the gateway reports what a slow reader misses as a gap
      }
      this.#notify();
    });
    call.on('error', (err) => {
      if (!this.#closed) {
        this.#failure = err;
      }
    });
    call.on('status', () => {
      this.#ended = true;
      failed(this.#failure ?? new Error('KeyValue.WatchExpirations ended before subscribed'));
      this.#notify();
    });
  }

  #notify() {
    const wake = this.#wake;
    this.#wake = null;
    wake?.();
  }

  /**
   * The next event; `done` once the watch is closed or the stream ended. Rejects with the gRPC
   * error when the stream failed. One reader at a time.
   * @returns {Promise<IteratorResult<ExpiryEvent, undefined>>}
   */
  async next() {
    const result = await this.#take(Infinity);
    return /** @type {IteratorResult<ExpiryEvent, undefined>} */ (result);
  }

  /**
   * Closes the watch when a `for await` loop stops early.
   * @returns {Promise<IteratorResult<ExpiryEvent, undefined>>}
   */
  async return() {
    this.close();
    return { done: true, value: undefined };
  }

  [Symbol.asyncIterator]() {
    return this;
  }

  /**
   * Reads events until one satisfies `predicate` and resolves with it; rejects when none does
   * within `timeoutMs`, or the stream ends first. Events read meanwhile are passed over.
   * @param {(event: ExpiryEvent) => boolean} predicate
   * @param {number} timeoutMs
   * @returns {Promise<ExpiryEvent>}
   */
  async waitFor(predicate, timeoutMs) {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const result = await this.#take(deadline);
      if (result === null) {
        throw new Error(`no matching key event within ${timeoutMs} ms`);
      }
      if (result.done) {
        throw new Error('the watch ended before a matching key event');
      }
      if (predicate(result.value)) {
        return result.value;
      }
    }
  }

  /**
   * The next event, `done`, or null when `deadline` (a `Date.now()` value) passes first.
   * @param {number} deadline
   * @returns {Promise<IteratorResult<ExpiryEvent, undefined> | null>}
   */
  async #take(deadline) {
    for (;;) {
      const event = this.#buffer.shift();
      if (event) {
        if (this.#buffer.length < WATCH_BUFFER / 2) {
          this.#call.resume();
        }
        this.cursor = event.cursor;
        return { done: false, value: event };
      }
      if (this.#failure) {
        throw this.#failure;
      }
      if (this.#closed || this.#ended) {
        return { done: true, value: undefined };
      }
      const remaining = deadline - Date.now();
      if (remaining <= 0) {
        return null;
      }
      /** @type {NodeJS.Timeout | undefined} */
      let timer;
      await new Promise((resolve) => {
        this.#wake = resolve;
        if (Number.isFinite(remaining)) {
          timer = setTimeout(resolve, remaining);
        }
      });
      clearTimeout(timer);
      this.#wake = null;
    }
  }

  /** Ends the stream (cancels the call); iteration then finishes. */
  close() {
    if (!this.#closed) {
      this.#closed = true;
      this.#call.cancel();
      this.#notify();
    }
  }
}
