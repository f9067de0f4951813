/**
 * One group run as its records in etcd show it, and what follows from them:
 * who has reached which phase, who was lost, whether the run ended, and the
 * group's consistency. Pure: built from a range and kept current by watch
 * events; the member, `group status` and the tests read runs through it.
 *
 * The rules, in etcd's revision order (never a wall clock):
 *
 * - a member's snapshot counts only if the member passed the
 *   {@linkcode SNAPSHOT_BARRIER} before it reported (its report says which
 *   barriers it passed); a report without it counts as `none`;
 * - a member is **lost** when its `alive` key (on its own lease) is gone and
 *   it has no report: it died, was stopped, or lost etcd before reporting;
 * - the group's consistency is the lowest any member reported, once every
 *   member has reported, unless an abort was recorded before the last
 *   report: then `none`; `none` too once a member is lost; `pending` while
 *   reports are still to come;
 * - the run has **ended** when it is aborted, lost a member, or every member
 *   reported.
 *
 * @module
 */
import type { Consistency } from "../run/consistency.ts";
import type { Kv } from "./etcd.ts";
import { parseRunKey } from "./keys.ts";

/** A member's phases, in the order a run reaches them. */
export const GROUP_PHASES = [
  "joined",
  "quiesced",
  "frozen",
  "held",
  "snapshot",
  "released",
] as const;

/** A member's phase. */
export type GroupPhase = typeof GROUP_PHASES[number];

/**
 * The barrier a member's snapshot must come after: every member is held
 * (quiesced, and frozen where it freezes) when it passes.
 */
export const SNAPSHOT_BARRIER: GroupPhase = "held";

/** A run's meta record, written by the member that created it. */
export interface RunMeta {
  runId: string;
  /** Exactly the members the barriers wait for. */
  members: string[];
  createdBy: string;
  /** The creator's local time (to read; never compared). */
  createdAt: string;
  /** The creator's join window (ms). */
  joinTimeoutMs: number;
  leaseTtlSeconds: number;
  /** The lease every record of the run is attached to (its retention). */
  retentionLease: string;
  /** The lease `current` is attached to, kept alive by every member taking part. */
  runLease: string;
}

/** A member's record: who it is, and when (ms since its own start, on its own clock) it reached each phase. */
export interface MemberRecord {
  member: string;
  /** Random, one per process: tells a member's own earlier write from another's. */
  session: string;
  host: string;
  pid: number;
  /** The member's local time at its start (to read; never compared). */
  startedAt: string;
  phases: Partial<Record<GroupPhase, number>>;
  /** When it passed each barrier (ms since its start). */
  passed?: Partial<Record<GroupPhase, number>>;
}

/** What a member reports at its end. */
export interface MemberReport {
  /** Its own snapshot's consistency (`none`: no snapshot). */
  consistency: Consistency;
  snapshotTaken: boolean;
  /** One line for the admin. */
  message?: string;
  /** Its errors, by code. */
  errors?: { code: string; message: string }[];
  /** Anything else its result says about the snapshot (IDs, names). */
  facts?: Record<string, unknown>;
  /** When it reported (ms since its start). */
  at?: number;
  /** The barriers it had passed when it reported (filled in by the member). */
  passed?: GroupPhase[];
}

/** The first abort of a run. */
export interface AbortRecord {
  /** The member the abort is about: the one that failed, was lost, or did not arrive. */
  member: string;
  /** The member that recorded it. */
  by: string;
  code: string;
  message: string;
  /** The phase the aborting member had reached. */
  phase?: string;
}

/** A record with the revision that wrote it. */
export type At<T> = T & { revision: number };

/** A member's state in a run. */
export type MemberState = "absent" | "running" | "reported" | "lost";

/** What a run shows of one member. */
export interface MemberView {
  state: MemberState;
  /** The last phase it reached. */
  phase?: GroupPhase;
  host?: string;
  startedAt?: string;
  phases?: MemberRecord["phases"];
  passed?: MemberRecord["passed"];
  report?: MemberReport;
}

/** The group's consistency: a level, or `pending` while reports are still to come. */
export type GroupConsistency = Consistency | "pending";

const ORDER: Consistency[] = ["none", "crash", "filesystem", "application"];

/**
 * The lowest of some consistency levels.
 *
 * @example
 * ```ts
 * import { lowestConsistency } from "./run_view.ts";
 * lowestConsistency(["application", "filesystem"]); // "filesystem"
 * ```
 */
export function lowestConsistency(levels: Consistency[]): Consistency {
  return levels.reduce(
    (low, c) => (ORDER.indexOf(c) < ORDER.indexOf(low) ? c : low),
    "application",
  );
}

/**
 * One run's records (see the module doc).
 *
 * @example
 * ```ts
 * import { RunView } from "./run_view.ts";
 * const view = new RunView("/vmsnap/groups/shop/run/r1/");
 * view.meta = { runId: "r1", members: ["db1", "app1"], createdBy: "db1", createdAt: "",
 *   joinTimeoutMs: 60000, leaseTtlSeconds: 5, retentionLease: "1", runLease: "2" };
 * view.missing("held"); // ["db1", "app1"]
 * ```
 */
export class RunView {
  meta?: RunMeta;
  readonly records = new Map<string, At<MemberRecord>>();
  /** Member → the revision that created its `alive` key. */
  readonly alive = new Map<string, number>();
  readonly reports = new Map<string, At<MemberReport>>();
  abort?: At<AbortRecord>;
  /** The newest revision applied. */
  revision = 0;

  constructor(readonly prefix: string) {}

  /** The run's members (none known before its meta). */
  get members(): string[] {
    return this.meta?.members ?? [];
  }

  /** Applies a key as read, or a change as watched. */
  apply(type: "put" | "delete", kv: Kv): void {
    this.revision = Math.max(this.revision, kv.modRevision);
    const key = parseRunKey(this.prefix, kv.key);
    if (key.kind === "other") return;
    if (key.kind === "alive") {
      if (type === "put") this.alive.set(key.member, kv.createRevision);
      else this.alive.delete(key.member);
      return;
    }
    if (type === "delete") {
      this.#forget(key.kind === "abort" ? "abort" : key.kind, "member" in key ? key.member : "");
      return;
    }
    const value = parseJson(kv.value);
    if (value === undefined) return;
    if (key.kind === "abort") this.abort = { ...(value as AbortRecord), revision: kv.modRevision };
    else if (key.kind === "member") {
      // A member applies its own writes at once: an older revision arriving later is not newer.
      if ((this.records.get(key.member)?.revision ?? 0) > kv.modRevision) return;
      this.records.set(key.member, { ...(value as MemberRecord), revision: kv.modRevision });
    } else this.reports.set(key.member, { ...(value as MemberReport), revision: kv.modRevision });
  }

  /** The members that have not reached `phase`. */
  missing(phase: GroupPhase): string[] {
    return this.members.filter((m) => this.records.get(m)?.phases?.[phase] === undefined);
  }

  /** Members that joined, are no longer alive, and never reported. */
  lost(): string[] {
    return [...this.records.keys()].filter((m) => !this.alive.has(m) && !this.reports.has(m));
  }

  /** Whether every member has reported. */
  allReported(): boolean {
    return this.members.length > 0 && this.members.every((m) => this.reports.has(m));
  }

  /** The group's consistency (see the module doc). */
  consistency(): GroupConsistency {
    if (this.allReported()) {
      const last = Math.max(...this.members.map((m) => this.reports.get(m)!.revision));
      if (this.abort && this.abort.revision < last) return "none";
      return lowestConsistency(this.members.map((m) => counted(this.reports.get(m)!)));
    }
    if (this.abort || this.lost().length > 0) return "none";
    return "pending";
  }

  /** Whether the run has ended (aborted, lost a member, or fully reported), and why. */
  ended(): { ended: boolean; reason?: string } {
    if (this.abort) {
      return { ended: true, reason: `aborted by ${this.abort.member}: ${this.abort.message}` };
    }
    const lost = this.lost();
    if (lost.length > 0) {
      return { ended: true, reason: `member ${lost.join(", ")} was lost before reporting` };
    }
    if (this.allReported()) return { ended: true, reason: "every member reported" };
    return { ended: false };
  }

  /** What the run shows of a member. */
  member(name: string): MemberView {
    const record = this.records.get(name);
    const report = this.reports.get(name);
    if (!record) return report ? { state: "reported", report: strip(report) } : { state: "absent" };
    const state: MemberState = report ? "reported" : this.alive.has(name) ? "running" : "lost";
    const view: MemberView = {
      state,
      phase: lastPhase(record.phases),
      host: record.host,
      startedAt: record.startedAt,
      phases: record.phases,
    };
    if (record.passed) view.passed = record.passed;
    if (report) view.report = strip(report);
    return view;
  }

  #forget(kind: "member" | "report" | "abort", member: string): void {
    if (kind === "abort") this.abort = undefined;
    else if (kind === "member") this.records.delete(member);
    else this.reports.delete(member);
  }
}

/**
 * The last phase in a member's phases (by the order of {@linkcode GROUP_PHASES}).
 *
 * @example
 * ```ts
 * import { lastPhase } from "./run_view.ts";
 * lastPhase({ joined: 0, held: 812 }); // "held"
 * ```
 */
export function lastPhase(phases: MemberRecord["phases"] | undefined): GroupPhase | undefined {
  return [...GROUP_PHASES].reverse().find((p) => phases?.[p] !== undefined);
}

/** A report's consistency as the group counts it: `none` unless it came after the snapshot barrier. */
function counted(report: MemberReport): Consistency {
  return report.passed?.includes(SNAPSHOT_BARRIER) ? report.consistency : "none";
}

function strip<T>(record: At<T>): T {
  const { revision: _, ...rest } = record;
  return rest as T;
}

function parseJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return undefined; // not ours: ignored
  }
}
