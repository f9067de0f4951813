/**
 * etcd's watch through the JSON gateway: one streamed `POST /v3/watch` that
 * delivers every change to a key or prefix from a revision on, in revision
 * order. When the stream breaks (the endpoint died, a leader was lost), the
 * watch opens again on the next endpoint from the revision after the last
 * event it delivered, so no change is lost or delivered twice; the owner
 * hears of the break ({@linkcode WatchOptions.onState}) and decides how long
 * it may last. A watch etcd cancels (its start revision was compacted away,
 * permission denied) ends with that error.
 *
 * @module
 */
import { b64, pause, prefixEnd, readJsonLines } from "./etcd_http.ts";
import { EtcdClient, EtcdError, type Kv, toKv } from "./etcd.ts";

/** One change. */
export interface WatchEvent {
  type: "put" | "delete";
  /** The key as written (for a delete: the key, and `modRevision` the revision of the delete). */
  kv: Kv;
}

/** What to watch, and who hears. */
export interface WatchOptions {
  key: string;
  /** Every key under `key`. */
  prefix?: boolean;
  /** The first revision delivered. */
  startRevision: number;
  /** The changes of one answer, in revision order. */
  onEvents(events: WatchEvent[]): void;
  /** The stream is up (etcd confirmed the watch) or broken (it will try again). */
  onState?(state: "connected" | "broken", error?: unknown): void;
}

/** The watch was cancelled by etcd: its start revision is older than the compacted history. */
export class WatchCompacted extends EtcdError {
  /** The oldest revision etcd still has. */
  readonly compactRevision: number;
  constructor(compactRevision: number, key: string) {
    super(
      "GroupEtcdError",
      `the watch of ${key} started before etcd's compacted revision ${compactRevision}.`,
    );
    this.compactRevision = compactRevision;
  }
}

interface WatchResult {
  created?: boolean;
  canceled?: boolean;
  cancel_reason?: string;
  compact_revision?: string;
  events?: {
    type?: "PUT" | "DELETE";
    kv?: Parameters<typeof toKv>[0];
  }[];
}

/**
 * A running watch (see the module doc). It starts at once and runs until
 * {@linkcode EtcdWatch.stop}; `done` settles when it ends.
 *
 * @example
 * ```ts
 * import { EtcdClient } from "./etcd.ts";
 * import { EtcdWatch } from "./etcd_watch.ts";
 * const etcd = new EtcdClient({ endpoints: ["http://127.0.0.1:2379"] });
 * const { revision } = await etcd.range("/vmsnap/groups/shop/", { prefix: true });
 * const watch = new EtcdWatch(etcd, {
 *   key: "/vmsnap/groups/shop/",
 *   prefix: true,
 *   startRevision: revision + 1,
 *   onEvents: (events) => console.log(events.map((e) => `${e.type} ${e.kv.key}`)),
 * });
 * watch.stop();
 * ```
 */
export class EtcdWatch {
  /** Settles when the watch ends: resolves on stop, rejects when etcd cancelled it. */
  readonly done: Promise<void>;
  /** Streams opened (each counts as one request). */
  opened = 0;
  #next: number;
  #connected = false;
  readonly #stopper = new AbortController();
  readonly #client: EtcdClient;
  readonly #options: WatchOptions;

  constructor(client: EtcdClient, options: WatchOptions) {
    this.#client = client;
    this.#options = options;
    this.#next = options.startRevision;
    this.done = this.#run();
    this.done.catch(() => {}); // the owner awaits it when it cares
  }

  /** Whether the stream is up now. */
  get connected(): boolean {
    return this.#connected;
  }

  /** The revision the watch would start from if it opened again now. */
  get nextRevision(): number {
    return this.#next;
  }

  /** Ends the watch (its stream is closed at once). */
  stop(): void {
    this.#stopper.abort(new Error("watch stopped"));
  }

  async #run(): Promise<void> {
    let failures = 0;
    while (!this.#stopper.signal.aborted) {
      try {
        await this.#stream();
        failures = 0;
        if (!this.#stopper.signal.aborted) this.#broken(new Error("the watch stream ended"));
      } catch (error) {
        if (this.#stopper.signal.aborted) break;
        if (error instanceof WatchCompacted || isFatal(error)) throw error;
        this.#broken(error);
        failures++;
      }
      await pause(Math.min(50 * 2 ** failures, 500), this.#stopper.signal);
    }
  }

  async #stream(): Promise<void> {
    const { key, prefix } = this.#options;
    const request: Record<string, unknown> = {
      key: b64(key),
      start_revision: String(this.#next),
    };
    if (prefix) request.range_end = prefixEnd(key);
    const { posted } = await this.#client.openStream("/v3/watch", { create_request: request }, {
      signal: this.#stopper.signal,
    });
    this.opened++;
    if (!posted.body) throw new Error("the watch answer has no body");
    await readJsonLines(posted.body, (object) => this.#handle(object));
  }

  #handle(object: unknown): void {
    const o = object as { result?: WatchResult; error?: { grpc_code?: number; message?: string } };
    if (o.error) {
      throw new EtcdError("GroupEtcdError", `watch: ${o.error.message ?? "error"}`, {
        grpcCode: o.error.grpc_code,
      });
    }
    const result = o.result ?? {};
    if (result.canceled) throw this.#cancelled(result);
    if (result.created) {
      this.#connected = true;
      this.#options.onState?.("connected");
    }
    const events = (result.events ?? []).map((e): WatchEvent => ({
      type: e.type === "DELETE" ? "delete" : "put",
      kv: toKv(e.kv ?? {}),
    }));
    if (events.length === 0) return;
    this.#next = Math.max(this.#next, ...events.map((e) => e.kv.modRevision + 1));
    this.#options.onEvents(events);
  }

  #cancelled(result: WatchResult): EtcdError {
    const compact = Number(result.compact_revision ?? 0);
    if (compact > 0) return new WatchCompacted(compact, this.#options.key);
    const reason = result.cancel_reason ?? "cancelled by etcd";
    const denied = /permission denied/i.test(reason);
    return new EtcdError(
      denied ? "GroupEtcdPermissionDenied" : "GroupEtcdError",
      `the watch of ${this.#options.key} was cancelled: ${reason}.`,
      { grpcCode: denied ? 7 : 14 },
    );
  }

  #broken(error: unknown): void {
    this.#connected = false;
    this.#options.onState?.("broken", error);
  }
}

/** Errors a new stream would meet again: permission and authentication. */
function isFatal(error: unknown): boolean {
  return error instanceof EtcdError &&
    (error.code === "GroupEtcdPermissionDenied" || error.code === "GroupEtcdAuthFailed");
}
