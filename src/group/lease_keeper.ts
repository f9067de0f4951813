/**
 * Keeps a member's etcd leases alive while it takes part in a group run,
 * and tells it, on its own monotonic clock, when it can no longer count on
 * them: etcd said its lease is gone, or no keep-alive was answered for
 * `lossMs` (etcd slow to answer is not etcd gone: a late answer counts).
 * Keep-alives go every third of the TTL or of `lossMs`, whichever is
 * shorter (one request for all the leases), and every 250 ms after one
 * fails; one is in flight at a time.
 *
 * A lease granted or refreshed by a request sent at time `t` lives at least
 * until `t + TTL` on etcd's side; {@linkcode LeaseKeeper.fresh} says whether
 * that is still ahead, which a member checks before it passes a barrier (a
 * member whose lease may have expired may already be counted lost by the
 * others).
 *
 * @module
 */
import type { EtcdClient } from "./etcd.ts";

/** Why the leases can no longer be counted on. */
export type LeaseLoss =
  | { kind: "unreachable"; sinceMs: number; error?: unknown }
  | { kind: "expired" };

/** What to keep alive and whom to tell. */
export interface LeaseKeeperOptions {
  client: EtcdClient;
  /** The member's own lease: its expiry ends the member's part. */
  own: string;
  /** Leases kept alive alongside it (the run's). */
  also?: string[];
  /** The own lease's TTL as granted (seconds). */
  ttlSeconds: number;
  /** How long without an answered keep-alive counts as cut off from etcd (ms). */
  lossMs: number;
  /** When the own lease was granted (`performance.now()` before the grant was sent). */
  grantedAt: number;
  /** Called once, on the first loss. */
  onLost(loss: LeaseLoss): void;
  /** Called after each confirmed keep-alive. */
  onConfirmed?(): void;
}

const RETRY_MS = 250;
/** Kept off the lease's end in {@linkcode LeaseKeeper.fresh}: keep-alives take time to be applied. */
const FRESH_MARGIN_MS = 250;

/**
 * Keeps leases alive (see the module doc).
 *
 * @example
 * ```ts
 * import { EtcdClient } from "./etcd.ts";
 * import { LeaseKeeper } from "./lease_keeper.ts";
 * const client = new EtcdClient({ endpoints: ["http://127.0.0.1:2379"] });
 * const grantedAt = performance.now();
 * const lease = await client.leaseGrant(5);
 * const keeper = new LeaseKeeper({ client, own: lease.id, ttlSeconds: lease.ttl, lossMs: 3000,
 *   grantedAt, onLost: (loss) => console.error("lost etcd:", loss.kind) });
 * keeper.stop();
 * ```
 */
export class LeaseKeeper {
  /** When the last confirmed keep-alive (or the grant) was sent: the lease lives a TTL from then. */
  confirmedAt: number;
  /** When etcd last answered a keep-alive (or the grant): the loss is counted from then. */
  answeredAt: number;
  /** Keep-alive requests sent. */
  sent = 0;
  #timer?: ReturnType<typeof setTimeout>;
  #lossTimer?: ReturnType<typeof setTimeout>;
  #lost = false;
  #stopped = false;
  #lastError: unknown;
  readonly #options: LeaseKeeperOptions;
  readonly #also: string[];
  readonly #stopper = new AbortController();

  constructor(options: LeaseKeeperOptions) {
    this.#options = options;
    this.#also = [...(options.also ?? [])];
    this.confirmedAt = options.grantedAt;
    this.answeredAt = performance.now();
    this.#armLoss();
    this.#schedule(this.#intervalMs());
  }

  /** Whether the own lease is surely alive on etcd's side now. */
  fresh(): boolean {
    const ttlMs = this.#options.ttlSeconds * 1000;
    return !this.#lost && performance.now() < this.confirmedAt + ttlMs - FRESH_MARGIN_MS;
  }

  /** Whether a loss was reported. */
  get lost(): boolean {
    return this.#lost;
  }

  /** Keeps one more lease alive, from the next keep-alive on. */
  add(lease: string): void {
    this.#also.push(lease);
  }

  /** Stops keeping the leases alive (they expire after their TTL unless revoked). */
  stop(): void {
    this.#stopped = true;
    this.#stopper.abort();
    clearTimeout(this.#timer);
    clearTimeout(this.#lossTimer);
  }

  #intervalMs(): number {
    return Math.max(200, Math.min(this.#options.ttlSeconds * 1000, this.#options.lossMs) / 3);
  }

  #schedule(ms: number): void {
    if (this.#stopped) return;
    this.#timer = setTimeout(() => void this.#tick(), ms);
  }

  async #tick(): Promise<void> {
    const { client, own, lossMs } = this.#options;
    const sentAt = performance.now();
    this.sent++;
    try {
      const ttls = await client.leaseKeepAlive([own, ...this.#also], {
        signal: this.#stopper.signal,
        timeoutMs: lossMs,
      });
      if (this.#stopped) return;
      if ((ttls.get(own) ?? 0) <= 0) return this.#lose({ kind: "expired" });
      this.confirmedAt = sentAt;
      this.answeredAt = performance.now();
      this.#armLoss();
      this.#schedule(this.#intervalMs());
      this.#options.onConfirmed?.();
    } catch (error) {
      if (this.#stopped) return;
      this.#lastError = error;
      this.#schedule(RETRY_MS);
    }
  }

  #armLoss(): void {
    clearTimeout(this.#lossTimer);
    if (this.#lost || this.#stopped) return;
    const at = this.answeredAt + this.#options.lossMs;
    this.#lossTimer = setTimeout(() => {
      this.#lose({
        kind: "unreachable",
        sinceMs: Math.round(performance.now() - this.answeredAt),
        error: this.#lastError,
      });
    }, Math.max(0, at - performance.now()));
  }

  #lose(loss: LeaseLoss): void {
    if (this.#lost) return;
    this.#lost = true;
    clearTimeout(this.#lossTimer);
    // Unreachable: the keep-alives go on, so that the member may still write its abort and report.
    if (loss.kind === "expired") this.stop();
    this.#options.onLost(loss);
  }
}
