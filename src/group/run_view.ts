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
 * - a barrier is passed when its key is there: the last member to reach
 *   the phase writes it in the same transaction as its phase, after
 *   etcd checked that every other member's phase key exists;
 * - a member is **lost** when its `alive` key (on its own lease) was seen
 *   (or its record is there) and is gone, and it has no report: it died,
 *   was stopped, or lost etcd before reporting;
 * - the group's consistency is the lowest any member reported, once every
 *   member has reported, unless an abort was recorded before the last
 *   report: then `none`; `none` too once a member is lost; `pending` while
 *   reports are still to come;
 * - the run has **ended** when it is aborted, lost a member, or every member
 *   reported.
 *
 * @module
 */
import type { Consistency } from "../protocol.ts";
import type { Kv } from "./etcd.ts";
import { parseRunKey, type RunKey } from "./keys.ts";

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

/** A member's record, written when it joins: who it is. */
export interface MemberRecord {
  member: string;
  /** Random, one per process: tells a member's own earlier write from another's. */
  session: string;
  host: string;
  pid: number;
  /** The member's local time at its start (to read; never compared). */
  startedAt: string;
}

/** Milliseconds since a member's start (its own clock) by phase or barrier. */
export type PhaseTimes = Partial<Record<GroupPhase, number>>;

/** A phase key's value: when the member reached it, and the barriers it had passed by then. */
export interface PhaseMark {
  at: number;
  passed?: PhaseTimes;
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
  /** The barriers it had passed when it reported, and when (filled in by the member). */
  passed?: PhaseTimes;
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
  phases?: PhaseTimes;
  passed?: PhaseTimes;
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
  /** Member → phase → its mark. */
  readonly phases = new Map<string, Partial<Record<GroupPhase, PhaseMark>>>();
  /** The barriers passed (their keys are there). */
  readonly barriers = new Set<GroupPhase>();
  /** Member → the revision that created its `alive` key. */
  readonly alive = new Map<string, number>();
  /** Members known to have joined: their record or their `alive` key was seen. */
  readonly joined = new Set<string>();
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
      this.joined.add(key.member);
      if (type === "put") this.alive.set(key.member, kv.createRevision);
      else this.alive.delete(key.member);
      return;
    }
    if (key.kind === "barrier") {
      if (type === "put") this.barriers.add(key.phase as GroupPhase);
      return;
    }
    if (type === "delete") return this.#forget(key);
    const value = parseJson(kv.value);
    if (value === undefined) return;
    if (key.kind === "abort") this.abort = { ...(value as AbortRecord), revision: kv.modRevision };
    else if (key.kind === "member") {
      this.joined.add(key.member);
      this.records.set(key.member, { ...(value as MemberRecord), revision: kv.modRevision });
    } else if (key.kind === "phase") {
      const marks = this.phases.get(key.member) ?? {};
      marks[key.phase as GroupPhase] = value as PhaseMark;
      this.phases.set(key.member, marks);
    } else this.reports.set(key.member, { ...(value as MemberReport), revision: kv.modRevision });
  }

  /** The members whose phase key for `phase` is not (yet) known here. */
  missing(phase: GroupPhase): string[] {
    return this.members.filter((m) => this.phases.get(m)?.[phase] === undefined);
  }

  /** Whether every member has reached `phase` (its barrier key is there). */
  passed(phase: GroupPhase): boolean {
    return this.barriers.has(phase);
  }

  /** Members that joined, are no longer alive, and never reported. */
  lost(): string[] {
    return [...this.joined].filter((m) => !this.alive.has(m) && !this.reports.has(m));
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

  /** What the run shows of a member (a member's own view knows the others' phases only from a read). */
  member(name: string): MemberView {
    const record = this.records.get(name);
    const report = this.reports.get(name);
    const marks = this.phases.get(name) ?? {};
    const state: MemberState = report
      ? "reported"
      : this.alive.has(name)
      ? "running"
      : this.joined.has(name)
      ? "lost"
      : "absent";
    const view: MemberView = { state };
    const phases: PhaseTimes = {};
    const passed: PhaseTimes = { ...report?.passed };
    for (const [phase, mark] of Object.entries(marks) as [GroupPhase, PhaseMark][]) {
      phases[phase] = mark.at;
      Object.assign(passed, mark.passed);
    }
    if (Object.keys(phases).length > 0) {
      view.phase = lastPhase(phases);
      view.phases = phases;
    }
    if (Object.keys(passed).length > 0) view.passed = passed;
    if (record) {
      view.host = record.host;
      view.startedAt = record.startedAt;
    }
    if (report) view.report = strip(report);
    return view;
  }

  #forget(key: RunKey): void {
    if (key.kind === "abort") this.abort = undefined;
    else if (key.kind === "member") this.records.delete(key.member);
    else if (key.kind === "phase") delete this.phases.get(key.member)?.[key.phase as GroupPhase];
    else if (key.kind === "report") this.reports.delete(key.member);
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
export function lastPhase(phases: PhaseTimes | undefined): GroupPhase | undefined {
  return [...GROUP_PHASES].reverse().find((p) => phases?.[p] !== undefined);
}

/** A report's consistency as the group counts it: `none` unless it came after the snapshot barrier. */
function counted(report: MemberReport): Consistency {
  return report.passed?.[SNAPSHOT_BARRIER] !== undefined ? report.consistency : "none";
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
