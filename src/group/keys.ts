/**
 * Where a consistency group keeps its state in etcd: everything under one
 * prefix per group, `/vmsnap/groups/<group>/`, so that an etcd role limited
 * to that prefix is all a member's user needs.
 *
 * ```text
 * /vmsnap/groups/<g>/current                         {"runId"}  the run members join now (run lease)
 * /vmsnap/groups/<g>/meta/<runId>                    the run: its members, who created it, its leases
 * /vmsnap/groups/<g>/run/<runId>/member/<m>          member m: its session, host, pid, start
 * /vmsnap/groups/<g>/run/<runId>/phase/<phase>/<m>   m reached <phase>: when (ms from its start)
 * /vmsnap/groups/<g>/run/<runId>/w/barrier/<phase>   every member reached <phase> (written by the last)
 * /vmsnap/groups/<g>/run/<runId>/w/alive/<m>         on m's own lease: gone when m dies or ends
 * /vmsnap/groups/<g>/run/<runId>/w/report/<m>        m's snapshot and consistency
 * /vmsnap/groups/<g>/run/<runId>/w/abort             the first abort: who, why, in which phase
 * ```
 *
 * A member watches `w/` only: what it must act on (a barrier passed, a
 * member gone, a report, an abort). The phase keys, one per member, are
 * not watched: each member would otherwise receive every other member's
 * phase (N² events in the frozen window); the last member to reach a
 * phase writes the barrier key in the same transaction instead.
 *
 * @module
 */
import { VmsnapError } from "../errors.ts";

/** The prefix of every group's keys. */
export const GROUPS_PREFIX = "/vmsnap/groups/";

/** What a group or member name may be: it becomes part of etcd keys, user and role names. */
const NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/;

/**
 * Refuses a group or member name that could not be part of a key (a `/`, a
 * space, an empty name, over 63 characters).
 *
 * @example
 * ```ts
 * import { checkName } from "./keys.ts";
 * checkName("group", "shop"); // fine
 * // checkName("member", "db/1") throws InvalidConfigValue
 * ```
 */
export function checkName(kind: "group" | "member", name: string): void {
  if (!NAME.test(name)) {
    throw new VmsnapError(
      "InvalidConfigValue",
      `${kind} name ${
        JSON.stringify(name)
      } is not allowed: use 1 to 63 letters, digits, ".", "_" or "-", starting with a letter or digit.`,
    );
  }
}

/** The keys of one group. */
export interface GroupKeys {
  /** Everything of the group (the role's prefix). */
  prefix: string;
  /** The run members join now. */
  current: string;
  /** Every run's meta record. */
  metaPrefix: string;
  meta(runId: string): string;
  /** Everything of one run. */
  runPrefix(runId: string): string;
  /** What a member watches. */
  watchPrefix(runId: string): string;
  member(runId: string, member: string): string;
  phase(runId: string, phase: string, member: string): string;
  phasePrefix(runId: string, phase: string): string;
  barrier(runId: string, phase: string): string;
  alive(runId: string, member: string): string;
  report(runId: string, member: string): string;
  abort(runId: string): string;
}

/**
 * The keys of group `group`.
 *
 * @example
 * ```ts
 * import { groupKeys } from "./keys.ts";
 * groupKeys("shop").alive("20260101T020000Z-3f9a1c", "db1");
 * // "/vmsnap/groups/shop/run/20260101T020000Z-3f9a1c/w/alive/db1"
 * ```
 */
export function groupKeys(group: string): GroupKeys {
  checkName("group", group);
  const prefix = `${GROUPS_PREFIX}${group}/`;
  const run = (runId: string) => `${prefix}run/${runId}/`;
  const watched = (runId: string) => `${run(runId)}w/`;
  return {
    prefix,
    current: `${prefix}current`,
    metaPrefix: `${prefix}meta/`,
    meta: (runId) => `${prefix}meta/${runId}`,
    runPrefix: run,
    watchPrefix: watched,
    member: (runId, member) => `${run(runId)}member/${member}`,
    phase: (runId, phase, member) => `${run(runId)}phase/${phase}/${member}`,
    phasePrefix: (runId, phase) => `${run(runId)}phase/${phase}/`,
    barrier: (runId, phase) => `${watched(runId)}barrier/${phase}`,
    alive: (runId, member) => `${watched(runId)}alive/${member}`,
    report: (runId, member) => `${watched(runId)}report/${member}`,
    abort: (runId) => `${watched(runId)}abort`,
  };
}

/** What a key under a run's prefix is. */
export type RunKey =
  | { kind: "member" | "alive" | "report"; member: string }
  | { kind: "phase"; phase: string; member: string }
  | { kind: "barrier"; phase: string }
  | { kind: "abort" }
  | { kind: "other" };

/**
 * What a key under `runPrefix` holds.
 *
 * @example
 * ```ts
 * import { parseRunKey } from "./keys.ts";
 * parseRunKey("/vmsnap/groups/shop/run/r1/", "/vmsnap/groups/shop/run/r1/w/report/db1");
 * // { kind: "report", member: "db1" }
 * ```
 */
export function parseRunKey(runPrefix: string, key: string): RunKey {
  if (!key.startsWith(runPrefix)) return { kind: "other" };
  const parts = key.slice(runPrefix.length).split("/");
  const [first, second, third] = parts;
  if (parts.some((p) => p === "")) return { kind: "other" };
  if (first === "member" && parts.length === 2) return { kind: "member", member: second };
  if (first === "phase" && parts.length === 3) {
    return { kind: "phase", phase: second, member: third };
  }
  if (first !== "w") return { kind: "other" };
  if (second === "abort" && parts.length === 2) return { kind: "abort" };
  if (parts.length !== 3) return { kind: "other" };
  if (second === "barrier") return { kind: "barrier", phase: third };
  if (second === "alive" || second === "report") return { kind: second, member: third };
  return { kind: "other" };
}

/**
 * A new run ID: the creator's UTC time (to read, never compared) and
 * random hex, e.g. `20260101T020000Z-3f9a1c`.
 *
 * @example
 * ```ts
 * import { newRunId } from "./keys.ts";
 * newRunId(); // "20260101T020000Z-3f9a1c"
 * ```
 */
export function newRunId(): string {
  const time = new Date().toISOString().replace(/[-:]/g, "").replace(/\.\d+Z$/, "Z");
  return `${time}-${randomHex(3)}`;
}

/**
 * `bytes` random bytes as hex.
 *
 * @example
 * ```ts
 * import { randomHex } from "./keys.ts";
 * randomHex(8).length; // 16
 * ```
 */
export function randomHex(bytes: number): string {
  return Array.from(crypto.getRandomValues(new Uint8Array(bytes)))
    .map((b) => b.toString(16).padStart(2, "0")).join("");
}
