/**
 * An etcd v3 client over etcd's JSON gateway (`POST /v3/...`, keys and
 * values in base64, int64 fields as strings): key-value ranges, puts,
 * deletes and transactions, leases (grant, revoke, keep-alive, time to
 * live), authentication with a user and password (the token goes in the
 * `Authorization` header), plain HTTP or HTTPS with a CA and a client
 * certificate. The streaming watch is {@linkcode EtcdWatch} in
 * `etcd_watch.ts`; why `fetch` is the transport: `etcd_http.ts`.
 *
 * Every call has a deadline (`timeoutMs`, else the client's) and takes an
 * AbortSignal. Several endpoints: a call goes to the endpoint that answered
 * last, and moves on to the next when an endpoint cannot be reached, does
 * not answer within `attemptTimeoutMs`, or answers that it has no leader or
 * timed out; it gives up at its deadline. A write may so be sent twice (the
 * first may have been applied before its answer was lost): callers make
 * their writes idempotent (a transaction whose comparison the repeat fails,
 * a put of the same value).
 *
 * Every request carries `Grpc-Metadata-hasleader: true`: an etcd member cut
 * off from its cluster's leader refuses at once (and ends its watches)
 * rather than serving stale data or a watch that never fires.
 *
 * The password, the client key and the token are registered as secrets
 * (`src/secrets.ts`): they never reach a log line, the output or a result.
 *
 * @module
 */
import { VmsnapError } from "../errors.ts";
import { addSecret } from "../secrets.ts";
import {
  b64,
  closeTls,
  type EtcdTls,
  pause,
  type Posted,
  postJson,
  prefixEnd,
  unb64,
} from "./etcd_http.ts";
import { checkEtcdTls } from "./etcd_tls.ts";
import { ETCD_ATTEMPT_TIMEOUT_MS, ETCD_REQUEST_TIMEOUT_MS } from "../defaults.ts";

/** How to reach etcd. */
export interface EtcdClientOptions {
  /** `http://host:port` or `https://host:port`, tried in this order first. */
  endpoints: string[];
  /** PEM texts (an `https` endpoint without them is checked against the system's CAs). */
  tls?: EtcdTls;
  /** etcd user (when etcd's authentication is enabled). */
  username?: string;
  /** Its password. */
  password?: string;
  /** A call's deadline when it gives none (ms). */
  timeoutMs?: number;
  /** The longest one attempt on one endpoint may take before the next is tried (ms; several endpoints). */
  attemptTimeoutMs?: number;
}

/** A call's own deadline and cancellation. */
export interface CallOptions {
  signal?: AbortSignal;
  /** Milliseconds from now (else the client's `timeoutMs`). */
  timeoutMs?: number;
}

/** A key-value pair as stored, with its revisions. */
export interface Kv {
  key: string;
  value: string;
  createRevision: number;
  modRevision: number;
  version: number;
  /** The lease it is attached to, "0" for none (a decimal int64: lease IDs exceed 2^53). */
  lease: string;
}

/** One comparison of a transaction. */
export interface Compare {
  key: string;
  target: "create" | "mod" | "version" | "value" | "lease";
  op: "=" | "!=" | ">" | "<";
  /** A revision or version (number), a value (string) or a lease ID (string). */
  value: number | string;
}

/** One operation of a transaction. */
export type Op =
  | { put: { key: string; value: string; lease?: string } }
  | { range: { key: string; prefix?: boolean } }
  | { delete: { key: string; prefix?: boolean } }
  | { txn: { compare: Compare[]; success: Op[]; failure?: Op[] } };

/** What a transaction did. */
export interface TxnResult {
  succeeded: boolean;
  /** The store's revision after it. */
  revision: number;
  /** One per operation of the branch taken: a range's keys in `kvs`, a nested transaction's result in `txn`. */
  responses: OpResult[];
}

/** What one operation of a transaction gave. */
export interface OpResult {
  kvs?: Kv[];
  txn?: { succeeded: boolean; responses: OpResult[] };
}

/** What went wrong talking to etcd, with etcd's gRPC code when etcd answered. */
export class EtcdError extends VmsnapError {
  /** etcd's gRPC status code, when etcd answered with an error. */
  readonly grpcCode?: number;
  /** The endpoint that answered (or failed) last. */
  readonly endpoint?: string;

  /** @see VmsnapError */
  constructor(
    code: ConstructorParameters<typeof VmsnapError>[0],
    message: string,
    options: { cause?: unknown; grpcCode?: number; endpoint?: string } = {},
  ) {
    super(code, message, { cause: options.cause });
    this.name = "EtcdError";
    if (options.grpcCode !== undefined) this.grpcCode = options.grpcCode;
    if (options.endpoint !== undefined) this.endpoint = options.endpoint;
  }
}

/** gRPC codes after which the next endpoint may do better: Unavailable, DeadlineExceeded, ResourceExhausted. */
const RETRY_ELSEWHERE = new Set([14, 4, 8]);
const UNAUTHENTICATED = 16;
const PERMISSION_DENIED = 7;

interface GatewayError {
  error?: string;
  message?: string;
  code?: number;
}

/**
 * An etcd v3 client (see the module doc).
 *
 * @example
 * ```ts
 * import { EtcdClient } from "./etcd.ts";
 * const etcd = new EtcdClient({ endpoints: ["http://127.0.0.1:2379"] });
 * await etcd.put("/vmsnap/demo", "hello", { timeoutMs: 1000 });
 * const { kvs } = await etcd.range("/vmsnap/", { prefix: true });
 * console.log(kvs.map((kv) => `${kv.key}=${kv.value}`));
 * ```
 */
export class EtcdClient {
  /** The endpoints, in the order given. */
  readonly endpoints: readonly string[];
  /** HTTP requests sent (each attempt counts; a stream counts once). */
  requests = 0;
  readonly #tls?: EtcdTls;
  readonly #username?: string;
  readonly #password?: string;
  readonly #timeoutMs: number;
  readonly #attemptTimeoutMs: number;
  #preferred = 0;
  #token?: string;
  #authenticating?: Promise<void>;
  /** False once etcd said its authentication is off (a username was given anyway). */
  #authEnabled = true;

  constructor(options: EtcdClientOptions) {
    if (options.endpoints.length === 0) {
      throw new EtcdError("GroupEtcdUnreachable", "no etcd endpoint is configured.");
    }
    for (const endpoint of options.endpoints) checkEndpoint(endpoint);
    if (options.tls) checkEtcdTls(options.tls);
    this.endpoints = [...options.endpoints];
    this.#tls = options.tls;
    this.#username = options.username;
    this.#password = options.password;
    this.#timeoutMs = options.timeoutMs ?? ETCD_REQUEST_TIMEOUT_MS;
    this.#attemptTimeoutMs = options.attemptTimeoutMs ?? ETCD_ATTEMPT_TIMEOUT_MS;
    if (options.password) addSecret(options.password);
    if (options.tls?.key) addSecret(options.tls.key.trim());
  }

  /** The endpoint that answered last (where the next call goes first). */
  get endpoint(): string {
    return this.endpoints[this.#preferred];
  }

  /** Whether a user is configured and etcd's authentication is on (known after the first call). */
  get authenticated(): boolean {
    return this.#username !== undefined && this.#authEnabled;
  }

  /**
   * Releases what the client holds open beyond its calls (Deno's TLS HTTP
   * client). Calls after it open it again.
   *
   * @example
   * ```ts
   * import { EtcdClient } from "./etcd.ts";
   * new EtcdClient({ endpoints: ["http://127.0.0.1:2379"] }).close();
   * ```
   */
  close(): void {
    closeTls(this.#tls);
  }

  /**
   * The keys from `key` (one key; every key under it with `prefix`).
   *
   * @example
   * ```ts
   * import { EtcdClient } from "./etcd.ts";
   * const etcd = new EtcdClient({ endpoints: ["http://127.0.0.1:2379"] });
   * const { kvs, revision } = await etcd.range("/vmsnap/groups/shop/", { prefix: true });
   * ```
   */
  async range(
    key: string,
    options: CallOptions & { prefix?: boolean; keysOnly?: boolean; revision?: number } = {},
  ): Promise<{ kvs: Kv[]; revision: number; count: number }> {
    const body: Record<string, unknown> = { key: b64(key) };
    if (options.prefix) body.range_end = prefixEnd(key);
    if (options.keysOnly) body.keys_only = true;
    if (options.revision) body.revision = String(options.revision);
    const answer = await this.call<RangeAnswer>("/v3/kv/range", body, options);
    return {
      kvs: (answer.kvs ?? []).map(toKv),
      revision: revisionOf(answer),
      count: Number(answer.count ?? 0),
    };
  }

  /**
   * Writes one key (attached to a lease when given).
   *
   * @example
   * ```ts
   * import { EtcdClient } from "./etcd.ts";
   * const etcd = new EtcdClient({ endpoints: ["http://127.0.0.1:2379"] });
   * const { revision } = await etcd.put("/vmsnap/demo", "1");
   * ```
   */
  async put(
    key: string,
    value: string,
    options: CallOptions & { lease?: string } = {},
  ): Promise<{ revision: number }> {
    const body: Record<string, unknown> = { key: b64(key), value: b64(value) };
    if (options.lease && options.lease !== "0") body.lease = options.lease;
    return { revision: revisionOf(await this.call<Answer>("/v3/kv/put", body, options)) };
  }

  /**
   * Deletes one key, or every key under it with `prefix`.
   *
   * @example
   * ```ts
   * import { EtcdClient } from "./etcd.ts";
   * const etcd = new EtcdClient({ endpoints: ["http://127.0.0.1:2379"] });
   * await etcd.deleteRange("/vmsnap/demo/", { prefix: true });
   * ```
   */
  async deleteRange(
    key: string,
    options: CallOptions & { prefix?: boolean } = {},
  ): Promise<{ revision: number; deleted: number }> {
    const body: Record<string, unknown> = { key: b64(key) };
    if (options.prefix) body.range_end = prefixEnd(key);
    const answer = await this.call<Answer & { deleted?: string }>(
      "/v3/kv/deleterange",
      body,
      options,
    );
    return { revision: revisionOf(answer), deleted: Number(answer.deleted ?? 0) };
  }

  /**
   * A transaction: when every comparison holds, the `success` operations,
   * else the `failure` ones, atomically. An operation may be a transaction
   * itself (etcd 3.3 and later), its comparison made at the same revision.
   *
   * @example
   * ```ts
   * import { EtcdClient } from "./etcd.ts";
   * const etcd = new EtcdClient({ endpoints: ["http://127.0.0.1:2379"] });
   * const created = await etcd.txn({
   *   compare: [{ key: "/vmsnap/lock", target: "create", op: "=", value: 0 }],
   *   success: [{ put: { key: "/vmsnap/lock", value: "me" } }],
   * });
   * console.log(created.succeeded);
   * ```
   */
  async txn(
    txn: { compare: Compare[]; success: Op[]; failure?: Op[] },
    options: CallOptions = {},
  ): Promise<TxnResult> {
    const answer = await this.call<TxnAnswer>("/v3/kv/txn", encodeTxn(txn), options);
    return {
      succeeded: answer.succeeded === true,
      revision: revisionOf(answer),
      responses: (answer.responses ?? []).map(decodeOpResult),
    };
  }

  /**
   * A new lease of `ttlSeconds` (etcd raises a TTL below its minimum, about 2 s).
   *
   * @example
   * ```ts
   * import { EtcdClient } from "./etcd.ts";
   * const etcd = new EtcdClient({ endpoints: ["http://127.0.0.1:2379"] });
   * const { id, ttl } = await etcd.leaseGrant(5);
   * ```
   */
  async leaseGrant(ttlSeconds: number, options: CallOptions = {}): Promise<LeaseGranted> {
    const answer = await this.call<Answer & { ID?: string; TTL?: string; error?: string }>(
      "/v3/lease/grant",
      { TTL: String(Math.ceil(ttlSeconds)) },
      options,
    );
    if (answer.error || !answer.ID) {
      throw new EtcdError("GroupEtcdError", `etcd granted no lease: ${answer.error ?? "no ID"}.`);
    }
    return { id: answer.ID, ttl: Number(answer.TTL ?? 0) };
  }

  /**
   * Revokes a lease: every key attached to it is deleted. A lease that no
   * longer exists is not an error.
   *
   * @example
   * ```ts
   * import { EtcdClient } from "./etcd.ts";
   * const etcd = new EtcdClient({ endpoints: ["http://127.0.0.1:2379"] });
   * const lease = await etcd.leaseGrant(5);
   * await etcd.leaseRevoke(lease.id);
   * ```
   */
  async leaseRevoke(id: string, options: CallOptions = {}): Promise<void> {
    try {
      await this.call("/v3/lease/revoke", { ID: id }, options);
    } catch (error) {
      if (error instanceof EtcdError && /lease not found/.test(error.message)) return;
      throw error;
    }
  }

  /**
   * Refreshes leases, several in one request: each lease's new TTL in
   * seconds, 0 for a lease that has expired or never existed.
   *
   * @example
   * ```ts
   * import { EtcdClient } from "./etcd.ts";
   * const etcd = new EtcdClient({ endpoints: ["http://127.0.0.1:2379"] });
   * const lease = await etcd.leaseGrant(5);
   * const ttls = await etcd.leaseKeepAlive([lease.id]);
   * console.log(ttls.get(lease.id)); // 5
   * ```
   */
  async leaseKeepAlive(ids: string[], options: CallOptions = {}): Promise<Map<string, number>> {
    const body = ids.map((id) => JSON.stringify({ ID: id })).join("\n");
    const ttls = new Map<string, number>(ids.map((id) => [id, 0]));
    await this.call("/v3/lease/keepalive", body, options, (object) => {
      const result = (object as { result?: { ID?: string; TTL?: string } }).result;
      if (result?.ID && ttls.has(result.ID)) ttls.set(result.ID, Number(result.TTL ?? 0));
    });
    return ttls;
  }

  /**
   * A lease's remaining and granted TTL in seconds (-1 when it has expired),
   * and with `keys` the keys attached to it.
   *
   * @example
   * ```ts
   * import { EtcdClient } from "./etcd.ts";
   * const etcd = new EtcdClient({ endpoints: ["http://127.0.0.1:2379"] });
   * const lease = await etcd.leaseGrant(5);
   * const { ttl, grantedTtl } = await etcd.leaseTimeToLive(lease.id);
   * ```
   */
  async leaseTimeToLive(
    id: string,
    options: CallOptions & { keys?: boolean } = {},
  ): Promise<{ ttl: number; grantedTtl: number; keys: string[] }> {
    const answer = await this.call<Answer & { TTL?: string; grantedTTL?: string; keys?: string[] }>(
      "/v3/lease/timetolive",
      { ID: id, keys: options.keys === true },
      options,
    );
    return {
      ttl: Number(answer.TTL ?? -1),
      grantedTtl: Number(answer.grantedTTL ?? 0),
      keys: (answer.keys ?? []).map(unb64),
    };
  }

  /**
   * One endpoint's status (no failover): its member ID, the leader's, its
   * version.
   *
   * @example
   * ```ts
   * import { EtcdClient } from "./etcd.ts";
   * const etcd = new EtcdClient({ endpoints: ["http://127.0.0.1:2379"] });
   * const s = await etcd.status(etcd.endpoints[0]);
   * console.log(s.memberId === s.leader ? "leader" : "follower", s.version);
   * ```
   */
  async status(
    endpoint: string,
    options: CallOptions = {},
  ): Promise<{ memberId: string; leader: string; version: string }> {
    const answer = await this.call<Answer & { leader?: string; version?: string }>(
      "/v3/maintenance/status",
      {},
      { ...options, only: endpoint },
    );
    return {
      memberId: answer.header?.member_id ?? "",
      leader: answer.leader ?? "",
      version: answer.version ?? "",
    };
  }

  /**
   * Opens a stream request (a watch) on the first endpoint that takes it,
   * within the call's deadline; the stream itself has no deadline (the
   * signal ends it). The caller reads and closes the body.
   *
   * @example
   * ```ts
   * import { EtcdClient } from "./etcd.ts";
   * const etcd = new EtcdClient({ endpoints: ["http://127.0.0.1:2379"] });
   * const { posted, endpoint } = await etcd.openStream("/v3/watch",
   *   { create_request: { key: "Zm9v" } }, { signal: new AbortController().signal });
   * ```
   */
  async openStream(
    path: string,
    body: unknown,
    options: CallOptions & { signal: AbortSignal },
  ): Promise<{ posted: Posted; endpoint: string }> {
    let opened: { posted: Posted; endpoint: string } | undefined;
    await this.call(path, body, {
      ...options,
      stream: (posted, endpoint) => {
        opened = { posted, endpoint };
      },
    });
    return opened!;
  }

  /**
   * One call with failover, authentication and the deadline: the answer's
   * JSON object, or each object of a streamed answer given to `onObject`.
   */
  async call<T = unknown>(
    path: string,
    body: unknown,
    options: CallOptions & {
      only?: string;
      stream?: (posted: Posted, endpoint: string) => void;
    } = {},
    onObject?: (object: unknown) => void,
  ): Promise<T> {
    const deadline = performance.now() + (options.timeoutMs ?? this.#timeoutMs);
    if (path !== "/v3/auth/authenticate") await this.#ensureToken(options.signal, deadline);
    const order = options.only ? [options.only] : this.#endpointOrder();
    let lastError: unknown;
    let reauthenticated = false;
    for (let attempt = 0;; attempt++) {
      options.signal?.throwIfAborted();
      const remaining = deadline - performance.now();
      if (remaining <= 0) break;
      const endpoint = order[attempt % order.length];
      if (attempt > 0 && attempt % order.length === 0) {
        await pause(Math.min(100 * (attempt / order.length), 500, remaining), options.signal);
      }
      try {
        const answer = await this.#attempt<T>({
          endpoint,
          path,
          body,
          signal: options.signal,
          // The attempt timeout is for moving on to another endpoint: with none, the whole deadline.
          budgetMs: options.stream || order.length === 1
            ? remaining
            : Math.min(remaining, this.#attemptTimeoutMs),
          stream: options.stream,
          onObject,
        });
        this.#preferred = Math.max(0, this.endpoints.indexOf(endpoint));
        return answer;
      } catch (error) {
        if (options.signal?.aborted) throw options.signal.reason;
        lastError = error;
        if (!(error instanceof EtcdError) || retryElsewhere(error)) continue;
        const renew = path !== "/v3/auth/authenticate" && !reauthenticated;
        if (error.grpcCode === UNAUTHENTICATED && this.#username && renew) {
          reauthenticated = true;
          this.#token = undefined;
          await this.#ensureToken(options.signal, deadline);
          attempt--;
          continue;
        }
        throw error;
      }
    }
    throw unreachable(path, order, options.timeoutMs ?? this.#timeoutMs, lastError);
  }

  /** The endpoints, the one that answered last first. */
  #endpointOrder(): string[] {
    const n = this.endpoints.length;
    return Array.from({ length: n }, (_, i) => this.endpoints[(this.#preferred + i) % n]);
  }

  /** One request to one endpoint within its budget. */
  async #attempt<T>(a: {
    endpoint: string;
    path: string;
    body: unknown;
    signal?: AbortSignal;
    budgetMs: number;
    stream?: (posted: Posted, endpoint: string) => void;
    onObject?: (object: unknown) => void;
  }): Promise<T> {
    const timeout = new AbortController();
    const timer = setTimeout(
      () => timeout.abort(new Error(`no answer within ${Math.round(a.budgetMs)} ms`)),
      a.budgetMs,
    );
    const signal = a.signal ? AbortSignal.any([a.signal, timeout.signal]) : timeout.signal;
    try {
      this.requests++;
      const posted = await postJson({
        endpoint: a.endpoint,
        path: a.path,
        body: a.body,
        signal,
        headers: this.#headers(a.path),
        tls: this.#tls,
      });
      if (posted.status !== 200) throw answeredError(a.endpoint, a.path, await posted.text());
      if (a.stream) {
        a.stream(posted, a.endpoint);
        return undefined as T;
      }
      const text = await posted.text();
      if (a.onObject) return parseObjects(text, a.endpoint, a.onObject) as T;
      return JSON.parse(text) as T;
    } catch (error) {
      if (error instanceof EtcdError || a.signal?.aborted) throw error;
      throw new EtcdError(
        "GroupEtcdUnreachable",
        `${a.endpoint}: ${describe(timeout.signal.aborted ? timeout.signal.reason : error)}`,
        { cause: error, endpoint: a.endpoint },
      );
    } finally {
      clearTimeout(timer);
    }
  }

  #headers(path: string): Record<string, string> {
    const headers: Record<string, string> = { "Grpc-Metadata-hasleader": "true" };
    if (this.#token && path !== "/v3/auth/authenticate") headers.Authorization = this.#token;
    return headers;
  }

  /** Authenticates once (single flight) when a user is configured and no token is held. */
  async #ensureToken(signal: AbortSignal | undefined, deadline: number): Promise<void> {
    if (!this.#username || !this.#authEnabled || this.#token) return;
    this.#authenticating ??= this.#authenticate(signal, deadline).finally(() => {
      this.#authenticating = undefined;
    });
    await this.#authenticating;
  }

  async #authenticate(signal: AbortSignal | undefined, deadline: number): Promise<void> {
    try {
      const answer = await this.call<{ token?: string }>(
        "/v3/auth/authenticate",
        { name: this.#username, password: this.#password ?? "" },
        { signal, timeoutMs: Math.max(1, deadline - performance.now()) },
      );
      if (!answer.token) throw new EtcdError("GroupEtcdAuthFailed", "etcd returned no token.");
      addSecret(answer.token);
      this.#token = answer.token;
    } catch (error) {
      if (error instanceof EtcdError && /authentication is not enabled/.test(error.message)) {
        this.#authEnabled = false;
        return;
      }
      throw error;
    }
  }
}

/** A lease just granted. */
export interface LeaseGranted {
  /** Its ID (a decimal int64 as text). */
  id: string;
  /** Its TTL in seconds as etcd granted it. */
  ttl: number;
}

interface Header {
  revision?: string;
  member_id?: string;
}
interface Answer {
  header?: Header;
}
interface KvJson {
  key?: string;
  value?: string;
  create_revision?: string;
  mod_revision?: string;
  version?: string;
  lease?: string;
}
interface RangeAnswer extends Answer {
  kvs?: KvJson[];
  count?: string;
}
interface TxnAnswer extends Answer {
  succeeded?: boolean;
  responses?: OpAnswer[];
}
interface OpAnswer {
  response_range?: RangeAnswer;
  response_txn?: TxnAnswer;
}

/**
 * A key-value pair from the gateway's JSON.
 *
 * @example
 * ```ts
 * import { toKv } from "./etcd.ts";
 * toKv({ key: "Zm9v", value: "YmFy", create_revision: "2", mod_revision: "3", version: "2" }).value; // "bar"
 * ```
 */
export function toKv(kv: KvJson): Kv {
  return {
    key: unb64(kv.key),
    value: unb64(kv.value),
    createRevision: Number(kv.create_revision ?? 0),
    modRevision: Number(kv.mod_revision ?? 0),
    version: Number(kv.version ?? 0),
    lease: kv.lease ?? "0",
  };
}

/** Whether another endpoint (or a later try) may do better: no answer, or etcd busy or leaderless. */
function retryElsewhere(error: EtcdError): boolean {
  if (error.code === "GroupEtcdUnreachable") return true;
  return error.grpcCode !== undefined && RETRY_ELSEWHERE.has(error.grpcCode);
}

function revisionOf(answer: Answer): number {
  return Number(answer.header?.revision ?? 0);
}

const TARGETS = {
  create: ["CREATE", "create_revision"],
  mod: ["MOD", "mod_revision"],
  version: ["VERSION", "version"],
  value: ["VALUE", "value"],
  lease: ["LEASE", "lease"],
} as const;
const RESULTS = { "=": "EQUAL", "!=": "NOT_EQUAL", ">": "GREATER", "<": "LESS" } as const;

function encodeCompare(c: Compare): Record<string, unknown> {
  const [target, field] = TARGETS[c.target];
  const value = c.target === "value" ? b64(String(c.value)) : String(c.value);
  return { key: b64(c.key), target, result: RESULTS[c.op], [field]: value };
}

function encodeTxn(txn: { compare: Compare[]; success: Op[]; failure?: Op[] }) {
  return {
    compare: txn.compare.map(encodeCompare),
    success: txn.success.map(encodeOp),
    failure: (txn.failure ?? []).map(encodeOp),
  };
}

function decodeOpResult(r: OpAnswer): OpResult {
  if (r.response_range) return { kvs: (r.response_range.kvs ?? []).map(toKv) };
  if (r.response_txn) {
    return {
      txn: {
        succeeded: r.response_txn.succeeded === true,
        responses: (r.response_txn.responses ?? []).map(decodeOpResult),
      },
    };
  }
  return {};
}

function encodeOp(op: Op): Record<string, unknown> {
  if ("txn" in op) return { request_txn: encodeTxn(op.txn) };
  if ("put" in op) {
    const put: Record<string, unknown> = { key: b64(op.put.key), value: b64(op.put.value) };
    if (op.put.lease && op.put.lease !== "0") put.lease = op.put.lease;
    return { request_put: put };
  }
  const [name, spec] = "range" in op
    ? ["request_range", op.range]
    : ["request_delete_range", op.delete];
  const request: Record<string, unknown> = { key: b64(spec.key) };
  if (spec.prefix) request.range_end = prefixEnd(spec.key);
  return { [name]: request };
}

/** The objects of a streamed answer (keep-alive), each given to `onObject`; stream errors thrown. */
function parseObjects(text: string, endpoint: string, onObject: (o: unknown) => void): undefined {
  for (const line of text.split("\n")) {
    if (line.trim() === "") continue;
    const object = JSON.parse(line) as { error?: { grpc_code?: number; message?: string } };
    if (object.error) {
      throw new EtcdError("GroupEtcdError", `${endpoint}: ${object.error.message ?? "error"}`, {
        grpcCode: object.error.grpc_code,
        endpoint,
      });
    }
    onObject(object);
  }
  return undefined;
}

/** The error etcd answered (an HTTP status other than 200), with its code. */
function answeredError(endpoint: string, path: string, text: string): EtcdError {
  let parsed: GatewayError = {};
  try {
    parsed = JSON.parse(text) as GatewayError;
  } catch {
    // Not the gateway's JSON (a proxy's page): the text is the message.
  }
  const message = parsed.message ?? parsed.error ?? text.slice(0, 200);
  const grpcCode = typeof parsed.code === "number" ? parsed.code : undefined;
  const where = `${endpoint} (${path})`;
  if (grpcCode === PERMISSION_DENIED) {
    return new EtcdError(
      "GroupEtcdPermissionDenied",
      `${where}: ${message}: this etcd user may not use these keys.`,
      { grpcCode, endpoint },
    );
  }
  if (/CommonName of client/.test(message)) {
    return new EtcdError(
      "GroupEtcdAuthFailed",
      `${where}: etcd refuses a client certificate with a CommonName on its JSON gateway while its authentication is on (it would not use it as the user). Fix: issue this member's client certificate without a CN (openssl ... -subj "/O=vmsnap/OU=MEMBER"); the member authenticates with group.etcd's username and password.`,
      { endpoint },
    );
  }
  if (/authentication failed|user name is empty|invalid user ID|password/i.test(message)) {
    return new EtcdError("GroupEtcdAuthFailed", `${where}: ${message}.`, { grpcCode, endpoint });
  }
  return new EtcdError("GroupEtcdError", `${where}: ${message}.`, {
    grpcCode: grpcCode ?? (text.startsWith("{") ? undefined : 14),
    endpoint,
  });
}

/** The error after every endpoint failed until the deadline: a TLS failure is named as such. */
function unreachable(path: string, order: string[], ms: number, last: unknown): EtcdError {
  const detail = last instanceof Error ? last.message : String(last ?? "no attempt was made");
  if (last instanceof EtcdError && last.code !== "GroupEtcdUnreachable") return last;
  const tls = /certificate|cert|tls|ssl|handshake|EPROTO|UNABLE_TO_VERIFY|SELF_SIGNED/i.test(
    detail + describe((last as { cause?: unknown } | undefined)?.cause),
  );
  return new EtcdError(
    tls ? "GroupEtcdAuthFailed" : "GroupEtcdUnreachable",
    `no etcd endpoint answered ${path} within ${ms} ms (${order.join(", ")}); last: ${detail}${
      tls ? " (the TLS handshake failed: check caFile, certFile and keyFile)" : ""
    }.`,
    { cause: last },
  );
}

/** A network error's message, with its cause's (Deno puts the detail there) and its code. */
function describe(error: unknown): string {
  if (!(error instanceof Error)) return String(error ?? "");
  const e = error as Error & { code?: string; cause?: unknown };
  const cause = e.cause instanceof Error ? `: ${e.cause.message}` : "";
  return `${e.message}${e.code ? ` (${e.code})` : ""}${cause}`;
}

function checkEndpoint(endpoint: string): void {
  let url: URL;
  try {
    url = new URL(endpoint);
  } catch (cause) {
    throw new EtcdError(
      "GroupEtcdUnreachable",
      `etcd endpoint "${endpoint}" is not a URL. Fix: write it as https://HOST:2379.`,
      { cause },
    );
  }
  if (url.protocol !== "http:" && url.protocol !== "https:") {
    throw new EtcdError(
      "GroupEtcdUnreachable",
      `etcd endpoint "${endpoint}" is not http:// or https://. Fix: write it as https://HOST:2379.`,
    );
  }
}
