/**
 * A VM's part in a consistency group run: what `run` and the hook holder
 * call. One {@linkcode GroupMember} per run, in the process that holds the
 * applications (the holder in hook mode):
 *
 * ```ts ignore
 * const m = await GroupMember.join({ client, group: "shop", member: "db1", members });
 * await m.waitBarrier("joined");                           // every member is in: quiesce
 * await m.reached("held");                                 // quiesced and frozen
 * await m.waitBarrier("held", { timeoutMs: 30_000 });      // every member is held: snapshot
 * // ... snapshot, thaw, resume (at once: no waiting for the others)
 * await m.report({ consistency: "application", snapshotTaken: true });
 * const group = await m.outcome();                         // the group's consistency, or "pending"
 * await m.close();
 * ```
 *
 * The rule that makes the snapshots of a group one consistent cut: a member
 * passes the `held` barrier only when every configured member has written
 * `held`, and a member releases only after its own snapshot (or on abort).
 * Then at the moment the last `held` was committed every member was held,
 * and each snapshot is taken after that while its member is still held.
 *
 * Abort: {@linkcode GroupMember.signal} fires, at most one event-loop turn
 * after this process learns of it, when an abort is recorded by any member,
 * a member's lease expires before it reported, this member cannot reach etcd
 * for `etcdLossMs` (its keep-alives or its watch), its own lease expired, or
 * a barrier's deadline passes. The caller thaws and resumes at once; its own
 * deadlines never wait on etcd. Members learn of every change they act on
 * (a barrier passed, a member gone, a report, an abort) through one watch
 * of the run's `w/` keys (`src/group/keys.ts`); nothing is polled.
 *
 * @module
 */
import { type Code, isCode, VmsnapError } from "../errors.ts";
import {
  ETCD_REQUEST_TIMEOUT_MS,
  GROUP_ETCD_LOSS_MS,
  GROUP_JOIN_TIMEOUT_SECONDS,
  GROUP_KEEP_RUNS,
  GROUP_LEASE_TTL_SECONDS,
  GROUP_OUTCOME_WAIT_MS,
  GROUP_RETENTION_SECONDS,
} from "../defaults.ts";
import type { CallOptions, EtcdClient } from "./etcd.ts";
import { EtcdWatch, WatchCompacted, type WatchEvent } from "./etcd_watch.ts";
import { checkName, type GroupKeys, groupKeys, randomHex } from "./keys.ts";
import { type Joined, joinRun, phaseOps, writeAbort } from "./join.ts";
import { LeaseKeeper, type LeaseLoss } from "./lease_keeper.ts";
import { pruneRuns } from "./runs.ts";
import {
  type GroupConsistency,
  type GroupPhase,
  lastPhase,
  type MemberReport,
  type MemberView,
  type PhaseMark,
  type PhaseTimes,
  RunView,
} from "./run_view.ts";

/** Who this member is, in which group, and the protocol's settings. */
export interface GroupMemberOptions {
  client: EtcdClient;
  group: string;
  /** This VM's name in the group. */
  member: string;
  /** The whole group: the barriers wait for exactly these. */
  members: string[];
  /** The join window: how long `waitBarrier("joined")` waits by default (ms). */
  joinTimeoutMs?: number;
  /** This member's lease TTL (s). */
  leaseTtlSeconds?: number;
  /** How long without etcd counts as cut off (ms; below the lease TTL). */
  etcdLossMs?: number;
  /** How long a run's records stay in etcd (s). */
  retentionSeconds?: number;
  /** How many runs the group keeps in etcd. */
  keepRuns?: number;
  /** The host name recorded (else the machine's). */
  host?: string;
  /** Everything that happens, for the log and the tests. */
  onEvent?(event: GroupEvent): void;
}

/** Why a group run was aborted, as this member knows it. */
export interface GroupAbortReason {
  code: Code;
  message: string;
  /** The member the abort is about (the one that failed, was lost, or did not arrive). */
  member: string;
  /** The member that recorded it (this one when `local`). */
  by: string;
  /** The phase the abort happened in. */
  phase?: string;
  /** This member noticed it itself (else it read another member's record). */
  local: boolean;
}

/** The error a member's waits reject with once the run is aborted (and its signal's reason). */
export class GroupAbortError extends VmsnapError {
  /** Why. */
  readonly reason: GroupAbortReason;
  constructor(reason: GroupAbortReason) {
    super(reason.code, reason.message);
    this.name = "GroupAbortError";
    this.reason = reason;
  }
}

/** What happened, when (`atMs`: since this member's start, its own clock). */
export type GroupEvent =
  | { type: "joined"; runId: string; created: boolean; atMs: number }
  | { type: "phase"; phase: GroupPhase; atMs: number }
  | { type: "barrier"; phase: GroupPhase; waitedMs: number; atMs: number }
  | { type: "abort"; reason: GroupAbortReason; atMs: number }
  | { type: "etcd"; state: "connected" | "broken"; atMs: number; detail?: string }
  | { type: "reported"; atMs: number };

/** The group as one member's result tells it. */
export interface GroupOutcome {
  name: string;
  runId: string;
  /** The lowest consistency any member reported; `none` when aborted; `pending` until all reported. */
  consistency: GroupConsistency;
  /** The first abort, when there was one. */
  aborted?: { member: string; by: string; code: string; message: string; phase?: string };
  members: Record<string, MemberView>;
}

interface Waiter {
  check(): void;
}

/**
 * This VM's part in one group run (see the module doc).
 *
 * @example
 * ```ts
 * import { EtcdClient } from "./etcd.ts";
 * import { GroupMember } from "./member.ts";
 * const client = new EtcdClient({ endpoints: ["http://127.0.0.1:2379"] });
 * const m = await GroupMember.join({ client, group: "shop", member: "db1", members: ["db1", "app1"] });
 * try {
 *   await m.waitBarrier("joined");
 *   await m.reached("held");
 *   await m.waitBarrier("held", { timeoutMs: 30_000 });
 *   await m.report({ consistency: "application", snapshotTaken: true });
 *   console.log((await m.outcome()).consistency);
 * } finally {
 *   await m.close();
 * }
 * ```
 */
export class GroupMember {
  readonly group: string;
  readonly member: string;
  readonly runId: string;
  /** This member created the run. */
  readonly created: boolean;
  readonly #client: EtcdClient;
  readonly #keys: GroupKeys;
  readonly #options: GroupMemberOptions;
  readonly #startedAt: number;
  readonly #ownLease: string;
  /** When this member reached each phase, and passed each barrier (ms since its start). */
  readonly #phases: PhaseTimes = {};
  readonly #passed: PhaseTimes = {};
  readonly #controller = new AbortController();
  readonly #waiters = new Set<Waiter>();
  readonly #keeper: LeaseKeeper;
  #view: RunView;
  #watch: EtcdWatch;
  #watchBrokenTimer?: ReturnType<typeof setTimeout>;
  #abortReason?: GroupAbortReason;
  #abortRecorded = false;
  /** The abort came after this member's report (its snapshot stands; the group may be whole). */
  #abortAfterReport = false;
  #reported = false;
  #closed = false;

  /**
   * Joins the group's current run, or creates it (`src/group/join.ts`), and
   * starts keeping its lease alive and watching the run. `call.timeoutMs`
   * bounds the whole join (default 10 s): past it, `GroupEtcdUnreachable`.
   */
  static async join(options: GroupMemberOptions, call: CallOptions = {}): Promise<GroupMember> {
    checkMembers(options);
    const totalMs = call.timeoutMs ?? JOIN_CALL_TIMEOUT_MS;
    const deadline = AbortSignal.timeout(totalMs);
    const signal = call.signal ? AbortSignal.any([call.signal, deadline]) : deadline;
    try {
      return await GroupMember.#join(options, { signal, timeoutMs: totalMs });
    } catch (error) {
      if (!deadline.aborted || call.signal?.aborted) throw error;
      throw new VmsnapError(
        "GroupEtcdUnreachable",
        `group "${options.group}": member ${options.member} could not join a run within ${totalMs} ms (etcd answers too slowly or not at all).`,
        { cause: error },
      );
    }
  }

  static async #join(options: GroupMemberOptions, call: CallOptions): Promise<GroupMember> {
    const startedAt = performance.now();
    const ttl = options.leaseTtlSeconds ?? GROUP_LEASE_TTL_SECONDS;
    const grantedAt = performance.now();
    const own = await options.client.leaseGrant(ttl, call);
    // Kept alive from now: joining can take a while when other members' writes win the races.
    let early: LeaseLoss | undefined;
    const events: { lost(loss: LeaseLoss): void; confirmed(): void } = {
      lost: (loss) => void (early = loss),
      confirmed: () => {},
    };
    const keeper = new LeaseKeeper({
      client: options.client,
      own: own.id,
      ttlSeconds: own.ttl,
      lossMs: Math.min(options.etcdLossMs ?? GROUP_ETCD_LOSS_MS, own.ttl * 1000),
      grantedAt,
      onLost: (loss) => events.lost(loss),
      onConfirmed: () => events.confirmed(),
    });
    let joined: Joined;
    try {
      joined = await joinRun({
        client: options.client,
        keys: groupKeys(options.group),
        group: options.group,
        member: options.member,
        members: options.members,
        session: randomHex(8),
        ownLease: own.id,
        joinTimeoutMs: options.joinTimeoutMs ?? GROUP_JOIN_TIMEOUT_SECONDS * 1000,
        leaseTtlSeconds: own.ttl,
        retentionSeconds: options.retentionSeconds ?? GROUP_RETENTION_SECONDS,
        startedAt,
        host: options.host,
        call,
      });
    } catch (error) {
      keeper.stop();
      await options.client.leaseRevoke(own.id, { timeoutMs: 1000 }).catch(() => {});
      throw error;
    }
    keeper.add(joined.view.meta!.runLease);
    const member = new GroupMember(options, { ...joined, startedAt, ownLease: own.id, keeper });
    events.lost = (loss) => member.#leaseLost(loss);
    events.confirmed = () => member.#evaluate();
    if (early) member.#leaseLost(early);
    return member;
  }

  private constructor(
    options: GroupMemberOptions,
    joined: Joined & { startedAt: number; ownLease: string; keeper: LeaseKeeper },
  ) {
    this.#options = options;
    this.#client = options.client;
    this.group = options.group;
    this.member = options.member;
    this.runId = joined.runId;
    this.created = joined.created;
    this.#keys = groupKeys(options.group);
    this.#startedAt = joined.startedAt;
    this.#ownLease = joined.ownLease;
    this.#phases.joined = joined.view.phases.get(options.member)?.joined?.at ?? 0;
    this.#view = joined.view;
    this.#keeper = joined.keeper;
    this.#watch = this.#startWatch(joined.revision + 1);
    this.#emit({ type: "joined", runId: this.runId, created: this.created });
    if (this.created) this.#prune();
    this.#evaluate();
  }

  /** Fires when the run is aborted; its reason is a {@linkcode GroupAbortError}. */
  get signal(): AbortSignal {
    return this.#controller.signal;
  }

  /** Why the run was aborted, once it was. */
  get abortReason(): GroupAbortReason | undefined {
    return this.#abortReason;
  }

  /** HTTP requests its etcd client has made so far (keep-alives and watch streams included). */
  get requests(): number {
    return this.#client.requests;
  }

  /** Milliseconds since this member started joining (its own monotonic clock). */
  elapsed(): number {
    return Math.round((performance.now() - this.#startedAt) * 10) / 10;
  }

  /**
   * Records that this member reached `phase`: one transaction that succeeds
   * only while the run is not aborted and this member's lease is alive
   * (else the abort is raised here and the call rejects with it), and that
   * writes the phase's barrier key too when this member is the last to
   * reach it (`phaseOps` in `src/group/join.ts`).
   */
  async reached(phase: GroupPhase, call: CallOptions = {}): Promise<void> {
    this.#throwIfAborted();
    const mark: PhaseMark = { at: this.elapsed(), passed: { ...this.#passed } };
    const { keys, runId, member } = this.#names();
    const txn = await this.#client.txn({
      compare: [
        { key: keys.abort(runId), target: "create", op: "=", value: 0 },
        { key: keys.alive(runId, member), target: "create", op: ">", value: 0 },
      ],
      success: phaseOps({ keys, meta: this.#view.meta!, phase, member, mark }),
      failure: [{ range: { key: keys.abort(runId) } }],
    }, { timeoutMs: ETCD_REQUEST_TIMEOUT_MS, ...call });
    if (!txn.succeeded) {
      const abort = txn.responses[0]?.kvs?.[0];
      if (abort) this.#view.apply("put", abort);
      this.#evaluate();
      if (!this.#abortReason) this.#ownLeaseGone();
      this.#throwIfAborted();
    }
    this.#phases[phase] = mark.at;
    this.#view.apply("put", this.#ownKv(keys.phase(runId, phase, member), mark, txn.revision));
    // The last to arrive passes on its own answer, not one watch event later.
    if (txn.responses[1]?.txn?.succeeded) {
      this.#view.apply("put", this.#ownKv(keys.barrier(runId, phase), "", txn.revision));
    }
    this.#emit({ type: "phase", phase, atMs: mark.at });
    this.#evaluate();
  }

  /**
   * Resolves once every configured member has reached `phase` (and this
   * member's lease is surely alive); rejects with the abort when the run is
   * aborted first, or aborts it when `timeoutMs` (default: the join window
   * for `joined`) passes first. The caller's `signal` stops the wait without
   * aborting the run.
   */
  waitBarrier(
    phase: GroupPhase,
    options: { timeoutMs?: number; signal?: AbortSignal } = {},
  ): Promise<{ waitedMs: number }> {
    // The join window counts from this member's own start (its own clock).
    const joinWindow = (this.#options.joinTimeoutMs ?? this.#view.meta!.joinTimeoutMs) -
      this.elapsed();
    const timeoutMs = options.timeoutMs ?? (phase === "joined" ? joinWindow : undefined);
    if (timeoutMs === undefined) {
      return Promise.reject(new TypeError(`waitBarrier("${phase}") needs a timeoutMs`));
    }
    return new Promise((resolve, reject) => {
      const started = performance.now();
      const timer = setTimeout(() => void this.#barrierTimedOut(phase, timeoutMs), timeoutMs);
      const onSignal = () => finish(() => reject(options.signal!.reason));
      const waiter: Waiter = {
        check: () => {
          if (this.#abortReason) return finish(() => reject(this.#abortError()));
          if (!this.#view.passed(phase) || !this.#keeper.fresh()) return;
          const waitedMs = Math.round((performance.now() - started) * 10) / 10;
          this.#passed[phase] = this.elapsed();
          this.#emit({ type: "barrier", phase, waitedMs });
          finish(() => resolve({ waitedMs }));
        },
      };
      const finish = (settle: () => void) => {
        clearTimeout(timer);
        this.#waiters.delete(waiter);
        options.signal?.removeEventListener("abort", onSignal);
        settle();
      };
      if (options.signal?.aborted) return onSignal();
      options.signal?.addEventListener("abort", onSignal, { once: true });
      this.#waiters.add(waiter);
      waiter.check();
    });
  }

  /**
   * Aborts the run: this member's signal fires at once, and the abort is
   * recorded in etcd (the first one recorded stays) so every member hears
   * it. Resolves when recorded, or when etcd could not be reached within
   * the call's deadline (default 1 s): the others then see this member's
   * lease expire.
   */
  async abort(reason: { code: Code; message: string }, call: CallOptions = {}): Promise<void> {
    this.#fire({
      ...reason,
      member: this.member,
      by: this.member,
      phase: lastPhase(this.#phases),
      local: true,
    });
    await this.#recordAbort({ timeoutMs: 1000, ...call });
  }

  /**
   * Reports this member's own result, after its own thaw and resume. The
   * report is written even after an abort (`group status` tells the truth
   * of every member). It carries the barriers this member passed: a
   * snapshot reported without having passed `held` counts as `none` for the
   * group (`src/group/run_view.ts`).
   */
  async report(report: MemberReport, call: CallOptions = {}): Promise<void> {
    const { keys, runId, member } = this.#names();
    const value: MemberReport = { ...report, at: this.elapsed(), passed: { ...this.#passed } };
    await this.#client.put(keys.report(runId, member), JSON.stringify(value), {
      lease: this.#view.meta!.retentionLease,
      timeoutMs: ETCD_REQUEST_TIMEOUT_MS,
      ...call,
    });
    this.#reported = true;
    this.#emit({ type: "reported", atMs: value.at! });
  }

  /**
   * The group as this member's result tells it: waits up to `waitMs` for
   * every member's report (or the run's end), then says what is known
   * (`pending` when reports are still to come: `group status` tells the
   * final consistency later).
   */
  outcome(options: { waitMs?: number } = {}): Promise<GroupOutcome> {
    const waitMs = options.waitMs ?? GROUP_OUTCOME_WAIT_MS;
    return new Promise((resolve) => {
      const timer = setTimeout(() => finish(), waitMs);
      const waiter: Waiter = {
        // Known once every member reported, or the run (or this member, before its report) aborted.
        check: () => {
          if (this.snapshot().consistency !== "pending") finish();
        },
      };
      const finish = () => {
        clearTimeout(timer);
        this.#waiters.delete(waiter);
        resolve(this.snapshot());
      };
      this.#waiters.add(waiter);
      waiter.check();
    });
  }

  /** What this member knows of the group now. */
  snapshot(): GroupOutcome {
    const view = this.#view;
    const outcome: GroupOutcome = {
      name: this.group,
      runId: this.runId,
      consistency: view.consistency(),
      members: Object.fromEntries(view.members.map((m) => [m, view.member(m)])),
    };
    // A loss this member noticed after its report says nothing of the group: not an abort of it.
    const local = this.#abortAfterReport ? undefined : this.#abortReason;
    const abort = view.abort ?? local;
    if (abort) {
      const { member, by, code, message, phase } = abort;
      outcome.aborted = { member, by, code, message, ...(phase ? { phase } : {}) };
      if (outcome.consistency === "pending") outcome.consistency = "none";
    }
    return outcome;
  }

  /**
   * Ends this member's part: a member that neither reported nor aborted
   * aborts first (the others must not wait for its lease); an abort not yet
   * recorded is tried once more; the lease is revoked (its `alive` key goes,
   * after its report) and the watch closed. Never throws.
   */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    if (!this.#reported && !this.#abortReason) {
      await this.abort({
        code: "GroupAborted",
        message: `member ${this.member} left the run before reporting`,
      });
    } else if (this.#abortReason && !this.#abortRecorded && !this.#view.abort) {
      await this.#recordAbort({ timeoutMs: 1000 });
    }
    this.#keeper.stop();
    this.#watch.stop();
    clearTimeout(this.#watchBrokenTimer);
    await this.#client.leaseRevoke(this.#ownLease, { timeoutMs: 1000 }).catch(() => {});
    for (const waiter of [...this.#waiters]) waiter.check();
  }

  // ── inside ─────────────────────────────────────────────────────────────────

  #names() {
    return { keys: this.#keys, runId: this.runId, member: this.member };
  }

  #startWatch(startRevision: number): EtcdWatch {
    const watch = new EtcdWatch(this.#client, {
      key: this.#keys.watchPrefix(this.runId),
      prefix: true,
      startRevision,
      onEvents: (events) => this.#onEvents(events),
      onState: (state, error) => this.#watchState(state, error),
    });
    watch.done.catch((error) => this.#watchEnded(error));
    return watch;
  }

  #onEvents(events: WatchEvent[]): void {
    for (const event of events) this.#view.apply(event.type, event.kv);
    this.#evaluate();
  }

  /** A broken watch is given `etcdLossMs` to come back before this member counts itself cut off. */
  #watchState(state: "connected" | "broken", error?: unknown): void {
    this.#emit({ type: "etcd", state, detail: error ? String(error) : undefined });
    if (state === "connected") {
      clearTimeout(this.#watchBrokenTimer);
      this.#watchBrokenTimer = undefined;
      return;
    }
    if (this.#watchBrokenTimer || this.#closed) return;
    const lossMs = this.#options.etcdLossMs ?? GROUP_ETCD_LOSS_MS;
    this.#watchBrokenTimer = setTimeout(() => {
      this.#fire(this.#localReason(
        "GroupEtcdUnreachable",
        `member ${this.member} lost its watch of the group run for ${lossMs} ms (${
          String(error)
        }): etcd is unreachable from here`,
      ));
    }, lossMs);
  }

  /** etcd cancelled the watch: compacted history is read again; anything else aborts. */
  async #watchEnded(error: unknown): Promise<void> {
    if (this.#closed) return;
    if (error instanceof WatchCompacted) {
      try {
        const read = await this.#client.range(this.#keys.runPrefix(this.runId), { prefix: true });
        const view = new RunView(this.#view.prefix);
        view.meta = this.#view.meta;
        for (const kv of read.kvs) view.apply("put", kv);
        this.#view = view;
        this.#watch = this.#startWatch(read.revision + 1);
        return this.#evaluate();
      } catch (cause) {
        error = cause;
      }
    }
    const code = error instanceof VmsnapError ? error.code : "GroupEtcdError";
    this.#fire(this.#localReason(code, `the watch of the group run ended: ${String(error)}`));
  }

  /** Looks at the run after a change: an abort or a lost member aborts; waiters look again. */
  #evaluate(): void {
    const view = this.#view;
    if (!this.#abortReason && view.abort) {
      const a = view.abort;
      this.#fire({
        code: isCode(a.code) && a.code.startsWith("Group") ? a.code : "GroupAborted",
        message: `group run ${this.runId} was aborted by ${a.by}${
          a.phase ? ` (phase ${a.phase})` : ""
        }: ${a.code}: ${a.message}`,
        member: a.member,
        by: a.by,
        phase: a.phase,
        local: false,
      });
    }
    const lost = view.lost();
    if (!this.#abortReason && lost.length > 0) {
      if (lost.includes(this.member)) return this.#ownLeaseGone();
      this.#fire({
        code: "GroupMemberLost",
        message: `member ${
          lost.join(", ")
        } of group run ${this.runId} was lost: its lease expired before it reported (it died, was stopped, or lost etcd)`,
        member: lost.join(", "),
        by: this.member,
        phase: lastPhase(this.#phases),
        local: true,
      });
      void this.#recordAbort({ timeoutMs: 1000 });
    }
    for (const waiter of [...this.#waiters]) waiter.check();
  }

  /**
   * A barrier's deadline passed: which members are missing is read from
   * etcd (the phase keys are not watched; at most half a second), then the
   * run is aborted with their names.
   */
  async #barrierTimedOut(phase: GroupPhase, timeoutMs: number): Promise<void> {
    if (this.#abortReason) return;
    let missing: string[] | undefined;
    try {
      const read = await this.#client.range(this.#keys.phasePrefix(this.runId, phase), {
        prefix: true,
        keysOnly: true,
        timeoutMs: 500,
      });
      const reached = new Set(read.kvs.map((kv) => kv.key.split("/").pop()));
      missing = this.#view.members.filter((m) => !reached.has(m));
    } catch {
      // etcd does not answer: the members cannot be named.
    }
    const names = missing === undefined
      ? "(unknown: etcd did not answer)"
      : missing.join(", ") || "(none: this member's lease was not confirmed)";
    this.#fire({
      code: "GroupBarrierTimeout",
      message:
        `barrier "${phase}" of group run ${this.runId}: member ${names} did not reach it within ${timeoutMs} ms (waited by ${this.member})`,
      member: missing?.length ? missing.join(", ") : this.member,
      by: this.member,
      phase,
      local: true,
    });
    await this.#recordAbort({ timeoutMs: 1000 });
  }

  #leaseLost(loss: LeaseLoss): void {
    if (loss.kind === "expired") return this.#ownLeaseGone();
    this.#fire(this.#localReason(
      "GroupEtcdUnreachable",
      `member ${this.member} could not reach etcd for ${loss.sinceMs} ms${
        loss.error instanceof Error ? ` (${loss.error.message})` : ""
      }; it no longer counts on its lease`,
    ));
  }

  #ownLeaseGone(): void {
    this.#fire(this.#localReason(
      "GroupMemberLost",
      `member ${this.member}'s own lease expired (it was stopped or cut off from etcd for longer than its TTL): the others count it lost`,
    ));
  }

  #localReason(code: Code, message: string): GroupAbortReason {
    return {
      code,
      message,
      member: this.member,
      by: this.member,
      phase: lastPhase(this.#phases),
      local: true,
    };
  }

  /** Raises the abort in this process (once): the signal fires and every wait rejects. */
  #fire(reason: GroupAbortReason): void {
    if (this.#abortReason) return;
    this.#abortReason = reason;
    this.#abortAfterReport = this.#reported;
    this.#controller.abort(new GroupAbortError(reason));
    this.#emit({ type: "abort", reason });
    for (const waiter of [...this.#waiters]) waiter.check();
  }

  async #recordAbort(call: CallOptions): Promise<void> {
    const reason = this.#abortReason;
    if (!reason || this.#abortRecorded || this.#view.abort) return;
    const { member, by, code, message, phase } = reason;
    try {
      await writeAbort(this.#client, {
        key: this.#keys.abort(this.runId),
        lease: this.#view.meta!.retentionLease,
        record: { member, by, code, message, ...(phase ? { phase } : {}) },
        call,
      });
      this.#abortRecorded = true;
    } catch {
      // etcd unreachable: the others see this member's lease expire instead.
    }
  }

  #prune(): void {
    pruneRuns(this.#client, {
      keys: this.#keys,
      keep: this.#options.keepRuns ?? GROUP_KEEP_RUNS,
      call: { timeoutMs: ETCD_REQUEST_TIMEOUT_MS },
    }).catch(() => {}); // the next run tries again
  }

  /** A key as this member just wrote it (its watch brings the same revision again). */
  #ownKv(key: string, value: unknown, revision: number) {
    const text = typeof value === "string" ? value : JSON.stringify(value);
    return {
      key,
      value: text,
      createRevision: revision,
      modRevision: revision,
      version: 0,
      lease: "0",
    };
  }

  #abortError(): GroupAbortError {
    return this.#controller.signal.reason as GroupAbortError;
  }

  #throwIfAborted(): void {
    if (this.#abortReason) throw this.#abortError();
  }

  #emit(event: DistributiveOmit<GroupEvent, "atMs"> & { atMs?: number }): void {
    this.#options.onEvent?.({ atMs: this.elapsed(), ...event } as GroupEvent);
  }
}

/** How long joining may take in all when the caller gives no deadline. */
const JOIN_CALL_TIMEOUT_MS = 5 * ETCD_REQUEST_TIMEOUT_MS;

/** The most members a group may have (etcd's default --max-txn-ops is 128). */
export const MAX_MEMBERS = 100;

type DistributiveOmit<T, K extends PropertyKey> = T extends unknown ? Omit<T, K> : never;

/** Refuses names that cannot be keys and member lists that cannot be right. */
function checkMembers(options: GroupMemberOptions): void {
  checkName("group", options.group);
  checkName("member", options.member);
  for (const m of options.members) checkName("member", m);
  if (new Set(options.members).size !== options.members.length) {
    throw new VmsnapError(
      "GroupMembersMismatch",
      `group "${options.group}": members [${
        options.members.join(", ")
      }] names a member twice. Fix: list each member once.`,
    );
  }
  if (options.members.length > MAX_MEMBERS) {
    throw new VmsnapError(
      "GroupMembersMismatch",
      `group "${options.group}" has ${options.members.length} members; at most ${MAX_MEMBERS} are supported (a barrier compares every member's key in one etcd transaction, whose size etcd limits to 128 by default). Fix: split the group.`,
    );
  }
  if (!options.members.includes(options.member)) {
    throw new VmsnapError(
      "GroupMembersMismatch",
      `group "${options.group}": this member "${options.member}" is not in members [${
        options.members.join(", ")
      }]. Fix: add it, or set group.member to one of them.`,
    );
  }
}
