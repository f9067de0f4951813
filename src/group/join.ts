/**
 * How a member started on its own finds the one group run it belongs to.
 *
 * `current` names the run members join now. A member reads it and the run
 * it names (one atomic read), then:
 *
 * - no `current` (no run, or the last one ended more than a join window
 *   ago), or the run it names has ended and this member took part in it (or
 *   was not one of its members): it **creates** a run, with a transaction
 *   that succeeds only if `current` is still what it read, so of two
 *   members creating at once one wins and the other joins the winner's;
 * - the run is live and this member is not in it: it **joins**, with a
 *   transaction that succeeds only if the run is still current, not aborted,
 *   and has no record of this member;
 * - the run has ended without this member, which it listed: the member is
 *   **late** and takes no part ({@linkcode GroupLate});
 * - the run is live and lists other members than this member's config: the
 *   group's configs disagree; the run is aborted ({@linkcode GroupMembersMismatch});
 * - the run is live and has a live record of this member from another
 *   process: refused ({@linkcode GroupMemberBusy}).
 *
 * Every write is a transaction whose repeat fails harmlessly, so a write
 * sent twice (an answer lost, the next endpoint tried) cannot join twice: a
 * member recognizes its own earlier record by its session.
 *
 * @module
 */
import process from "node:process";
import { hostname } from "node:os";
import { VmsnapError } from "../errors.ts";
import type { CallOptions, EtcdClient, Kv, Op, TxnResult } from "./etcd.ts";
import { type GroupKeys, newRunId } from "./keys.ts";
import {
  type AbortRecord,
  type GroupPhase,
  type MemberRecord,
  type PhaseMark,
  type RunMeta,
  RunView,
} from "./run_view.ts";
import { readRun } from "./runs.ts";

/** Who joins, and the settings a run it creates gets. */
export interface JoinContext {
  client: EtcdClient;
  keys: GroupKeys;
  group: string;
  member: string;
  members: string[];
  session: string;
  /** The member's own lease (its `alive` key). */
  ownLease: string;
  joinTimeoutMs: number;
  leaseTtlSeconds: number;
  retentionSeconds: number;
  /** `performance.now()` at the member's start. */
  startedAt: number;
  host?: string;
  call: CallOptions;
}

/** The run joined. */
export interface Joined {
  runId: string;
  /** This member created it. */
  created: boolean;
  /** The run as of `revision`, this member's record in it. */
  view: RunView;
  /** The revision the view is as of: the watch starts after it. */
  revision: number;
  /** This member's record as written. */
  record: MemberRecord;
}

/** How many times a member reads and tries again when other members' writes win the races. */
const MAX_ATTEMPTS = 20;

/**
 * Joins (or creates) the group's current run (see the module doc).
 *
 * @example
 * ```ts
 * import { EtcdClient } from "./etcd.ts";
 * import { groupKeys } from "./keys.ts";
 * import { joinRun } from "./join.ts";
 * const client = new EtcdClient({ endpoints: ["http://127.0.0.1:2379"] });
 * const lease = await client.leaseGrant(5);
 * const joined = await joinRun({ client, keys: groupKeys("shop"), group: "shop", member: "db1",
 *   members: ["db1", "app1"], session: "ab12", ownLease: lease.id, joinTimeoutMs: 60000,
 *   leaseTtlSeconds: 5, retentionSeconds: 604800, startedAt: performance.now(), call: {} });
 * console.log(joined.runId, joined.created);
 * ```
 */
export async function joinRun(ctx: JoinContext): Promise<Joined> {
  for (let attempt = 0; attempt < MAX_ATTEMPTS; attempt++) {
    const current = (await ctx.client.range(ctx.keys.current, ctx.call)).kvs[0];
    const runId = current ? currentRunId(current) : undefined;
    if (!current || !runId) {
      const created = await createRun(ctx, current);
      if (created) return created;
      continue;
    }
    const { view, revision } = await readRun(ctx.client, ctx.keys, runId, ctx.call);
    const step = decide(ctx, view);
    if (step === "mine") {
      return { runId, created: false, view, revision, record: ownRecord(ctx, view) };
    }
    if (step === "mismatch") throw await mismatch(ctx, view);
    const done = step === "create"
      ? await createRun(ctx, current)
      : await enter(ctx, view, current);
    if (done) return done;
  }
  throw new VmsnapError(
    "GroupEtcdError",
    `group "${ctx.group}": could not join a run after ${MAX_ATTEMPTS} attempts (other members' writes kept winning). Fix: run again.`,
  );
}

/** What to do with the run `current` names. */
function decide(ctx: JoinContext, view: RunView): "mine" | "create" | "join" | "mismatch" {
  const meta = view.meta;
  if (!meta) return "create"; // its records were removed: it is over
  const record = view.records.get(ctx.member);
  const ended = view.ended();
  if (record?.session === ctx.session) return "mine"; // our own write, its answer lost
  if (ended.ended) {
    if (meta.members.includes(ctx.member) && !record) throw late(ctx, view, ended.reason);
    return "create";
  }
  if (record) throw busy(ctx, view, record);
  return sameMembers(meta.members, ctx.members) ? "join" : "mismatch";
}

/**
 * Creates a run and makes it current, if `current` is still as read (absent
 * when `seen` is undefined). Undefined when another member's write won.
 */
async function createRun(ctx: JoinContext, seen: Kv | undefined): Promise<Joined | undefined> {
  const runId = newRunId();
  const [retention, runLease] = await Promise.all([
    ctx.client.leaseGrant(ctx.retentionSeconds, ctx.call),
    // `current` lives while members keep this alive, and a join window after.
    ctx.client.leaseGrant(Math.max(ctx.joinTimeoutMs / 1000, ctx.leaseTtlSeconds * 2), ctx.call),
  ]);
  const meta: RunMeta = {
    runId,
    members: [...ctx.members],
    createdBy: ctx.member,
    createdAt: new Date().toISOString(),
    joinTimeoutMs: ctx.joinTimeoutMs,
    leaseTtlSeconds: ctx.leaseTtlSeconds,
    retentionLease: retention.id,
    runLease: runLease.id,
  };
  const record = newRecord(ctx);
  const { keys } = ctx;
  const txn = await ctx.client.txn({
    compare: [{ key: keys.current, target: "mod", op: "=", value: seen?.modRevision ?? 0 }],
    success: [
      { put: { key: keys.current, value: JSON.stringify({ runId }), lease: runLease.id } },
      { put: { key: keys.meta(runId), value: JSON.stringify(meta), lease: retention.id } },
      ...joinOps(ctx, meta, record),
    ],
  }, ctx.call);
  if (!txn.succeeded) {
    await revokeQuietly(ctx, retention.id, runLease.id);
    return undefined;
  }
  return joined(ctx, meta, record, txn, true);
}

/** Joins a live run, if it is still current, not aborted and has no record of this member. */
async function enter(ctx: JoinContext, view: RunView, current: Kv): Promise<Joined | undefined> {
  const meta = view.meta!;
  const { keys } = ctx;
  const record = newRecord(ctx);
  const txn = await ctx.client.txn({
    compare: [
      { key: keys.current, target: "mod", op: "=", value: current.modRevision },
      { key: keys.member(meta.runId, ctx.member), target: "create", op: "=", value: 0 },
      { key: keys.abort(meta.runId), target: "create", op: "=", value: 0 },
    ],
    success: joinOps(ctx, meta, record),
  }, ctx.call);
  return txn.succeeded ? joined(ctx, meta, record, txn, false) : undefined;
}

/**
 * This member's record, its `alive` key, its `joined` phase (and the
 * `joined` barrier if it is the last), then a read of the whole run as of
 * these writes.
 */
function joinOps(ctx: JoinContext, meta: RunMeta, record: MemberRecord): Op[] {
  const { keys } = ctx;
  const runId = meta.runId;
  return [
    {
      put: {
        key: keys.member(runId, ctx.member),
        value: JSON.stringify(record),
        lease: meta.retentionLease,
      },
    },
    { put: { key: keys.alive(runId, ctx.member), value: ctx.session, lease: ctx.ownLease } },
    ...phaseOps({
      keys,
      meta,
      phase: "joined",
      member: ctx.member,
      mark: { at: Math.round(performance.now() - ctx.startedAt) },
    }),
    { range: { key: keys.runPrefix(runId), prefix: true } },
  ];
}

/** The run as the join transaction read it (its last operation). */
function joined(
  ctx: JoinContext,
  meta: RunMeta,
  record: MemberRecord,
  txn: TxnResult,
  created: boolean,
): Joined {
  const view = new RunView(ctx.keys.runPrefix(meta.runId));
  view.meta = meta;
  for (const kv of txn.responses[txn.responses.length - 1].kvs ?? []) view.apply("put", kv);
  return { runId: meta.runId, created, view, revision: txn.revision, record };
}

/**
 * The operations that record `member` reaching `phase`: its phase key, and
 * the phase's barrier key when every other member's phase key is there
 * already (a nested transaction, compared at the same revision: of members
 * arriving at once, exactly the last one writes it).
 *
 * @example
 * ```ts
 * import { groupKeys } from "./keys.ts";
 * import { phaseOps } from "./join.ts";
 * const meta = { runId: "r1", members: ["db1", "app1"], createdBy: "db1", createdAt: "",
 *   joinTimeoutMs: 60000, leaseTtlSeconds: 5, retentionLease: "1", runLease: "2" };
 * phaseOps({ keys: groupKeys("shop"), meta, phase: "held", member: "db1", mark: { at: 812 } });
 * ```
 */
export function phaseOps(a: {
  keys: GroupKeys;
  meta: RunMeta;
  phase: GroupPhase;
  member: string;
  mark: PhaseMark;
}): Op[] {
  const { keys, meta, phase } = a;
  const lease = meta.retentionLease;
  const others = meta.members.filter((m) => m !== a.member);
  return [
    { put: { key: keys.phase(meta.runId, phase, a.member), value: JSON.stringify(a.mark), lease } },
    {
      txn: {
        compare: others.map((m) => ({
          key: keys.phase(meta.runId, phase, m),
          target: "create" as const,
          op: ">" as const,
          value: 0,
        })),
        success: [{ put: { key: keys.barrier(meta.runId, phase), value: "", lease } }],
      },
    },
  ];
}

function newRecord(ctx: JoinContext): MemberRecord {
  return {
    member: ctx.member,
    session: ctx.session,
    host: ctx.host ?? hostname(),
    pid: process.pid,
    startedAt: new Date(Date.now() - (performance.now() - ctx.startedAt)).toISOString(),
  };
}

function ownRecord(ctx: JoinContext, view: RunView): MemberRecord {
  const { revision: _, ...record } = view.records.get(ctx.member)!;
  return record;
}

function currentRunId(kv: Kv): string | undefined {
  try {
    const runId = (JSON.parse(kv.value) as { runId?: unknown }).runId;
    return typeof runId === "string" && /^[A-Za-z0-9._-]+$/.test(runId) ? runId : undefined;
  } catch {
    return undefined;
  }
}

/**
 * Whether two member lists name the same members (in any order).
 *
 * @example
 * ```ts
 * import { sameMembers } from "./join.ts";
 * sameMembers(["db1", "app1"], ["app1", "db1"]); // true
 * ```
 */
export function sameMembers(a: string[], b: string[]): boolean {
  const sorted = (list: string[]) => JSON.stringify([...new Set(list)].sort());
  return a.length === b.length && sorted(a) === sorted(b);
}

/** Revokes the leases of a run that lost its race (a lease left would expire by itself). */
async function revokeQuietly(ctx: JoinContext, ...leases: string[]): Promise<void> {
  await Promise.all(
    leases.map((lease) => ctx.client.leaseRevoke(lease, { timeoutMs: 1000 }).catch(() => {})),
  );
}

function late(ctx: JoinContext, view: RunView, reason: string | undefined): VmsnapError {
  return new VmsnapError(
    "GroupLate",
    `group "${ctx.group}": run ${
      view.meta!.runId
    } ended before member "${ctx.member}" joined it (${reason}); this member took part in nothing and froze nothing. Fix: start the members within the join window (${
      Math.round(view.meta!.joinTimeoutMs / 1000)
    } s) of each other.`,
  );
}

function busy(ctx: JoinContext, view: RunView, record: MemberRecord): VmsnapError {
  return new VmsnapError(
    "GroupMemberBusy",
    `group "${ctx.group}": run ${
      view.meta!.runId
    } already has a live member "${ctx.member}" (host ${record.host}, pid ${record.pid}). Fix: give each VM its own group.member name; if that vmsnap died, run again once its lease (${
      view.meta!.leaseTtlSeconds
    } s) has expired.`,
  );
}

/** The configs disagree: the run cannot be right for everyone, so it is aborted (every member hears why). */
async function mismatch(ctx: JoinContext, view: RunView): Promise<VmsnapError> {
  const meta = view.meta!;
  const error = new VmsnapError(
    "GroupMembersMismatch",
    `group "${ctx.group}": run ${meta.runId} (created by ${meta.createdBy}) has members [${
      meta.members.join(", ")
    }], but member "${ctx.member}" is configured with [${
      ctx.members.join(", ")
    }]. Fix: give every member the same group.members list.`,
  );
  await writeAbort(ctx.client, {
    key: ctx.keys.abort(meta.runId),
    lease: meta.retentionLease,
    record: { member: ctx.member, by: ctx.member, code: error.code, message: error.message },
    call: { timeoutMs: 1000 },
  }).catch(() => {});
  return error;
}

/**
 * Records a run's abort unless one is recorded already (the first abort
 * stays); true when this one was recorded.
 *
 * @example
 * ```ts
 * import { EtcdClient } from "./etcd.ts";
 * import { writeAbort } from "./join.ts";
 * const client = new EtcdClient({ endpoints: ["http://127.0.0.1:2379"] });
 * await writeAbort(client, { key: "/vmsnap/groups/shop/run/r1/abort", lease: "0",
 *   record: { member: "db1", by: "db1", code: "GroupAborted", message: "quiesce failed" } });
 * ```
 */
export async function writeAbort(
  client: EtcdClient,
  a: { key: string; lease: string; record: AbortRecord; call?: CallOptions },
): Promise<boolean> {
  const txn = await client.txn({
    compare: [{ key: a.key, target: "create", op: "=", value: 0 }],
    success: [{ put: { key: a.key, value: JSON.stringify(a.record), lease: a.lease } }],
  }, a.call);
  return txn.succeeded;
}
