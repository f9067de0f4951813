/**
 * The streams vmsnap speaks, as types:
 *
 * - the run's events (`--json` on stdout): `quiesced`, `frozen`,
 *   `snapshot-taken`, `thawed`, `resumed`, and the `result` last;
 * - the guard's protocol (JSON lines): agent → guard {@linkcode GuardRequest},
 *   guard → agent {@linkcode GuardMessage};
 * - the external handshake: vmsnap prints {@linkcode HandshakeFrozen} on
 *   stdout and reads one {@linkcode HandshakeAnswer} line from stdin.
 *
 * Types only: every module that writes or reads one of these streams takes
 * them from here, and so do the tests. This module is the shared vocabulary
 * at the bottom of the layers (docs/architecture.md): it imports nothing but
 * src/errors.ts, and the plugins, the log and the run take their types from it.
 *
 * @module
 */
import type { Problem } from "./errors.ts";

// ── the guard ────────────────────────────────────────────────────────────────

/** Agent → guard: hold these mounts until released, thaw them at the deadline or on EOF. */
export interface ArmMessage {
  op: "arm";
  runId: string;
  /** The planned mounts. */
  mounts: string[];
  /**
   * When given, the guard thaws only these, less what `drop` removes (a
   * freeze that failed or never happened), and thaws nothing more once
   * released: it holds only what the run froze. Without it, every planned
   * mount (older agents).
   */
  held?: string[];
  /** Planned mount point → its mount id; the guard thaws a path only while it leads to that mount. */
  mountIds?: Record<string, number>;
  maxFrozenMs: number;
  stateDir: string;
  /**
   * The agent sets `/sys/kernel/rcu_expedited` from 0 to 1 around its
   * FIFREEZE calls (`freeze.expediteRcu`): if it dies, the guard puts 0 back.
   */
  restoreRcuExpedited?: boolean;
}

/** Agent → guard: the agent's own thaw of `froze` is done; check them once more and exit. */
export interface ReleaseMessage {
  op: "release";
  froze: string[];
}

/** Agent → guard: the freeze of this mount failed (maybe someone else's freeze): never thaw it. */
export interface DropMessage {
  op: "drop";
  mount: string;
}

/** Everything the agent sends to its guard. */
export type GuardRequest = ArmMessage | DropMessage | ReleaseMessage;

/** One mount thawed by the guard (or by recovery). */
export interface GuardThaw {
  mount: string;
  wasFrozen: boolean;
  confirmed: boolean;
  error?: string;
}

/** What the guard did when it stepped in, as sent to the agent and left in stateDir. */
export interface GuardReport {
  runId: string;
  reason: "deadline" | "agent-died";
  at: string;
  /** Milliseconds from arming to the first thaw. */
  afterMs: number;
  thawed: GuardThaw[];
}

/** Everything the guard sends to its agent. */
export type GuardMessage =
  | { event: "armed"; pid: number }
  | { event: "expired"; report: GuardReport }
  | { event: "released"; leftovers: string[] };

// ── the external handshake ───────────────────────────────────────────────────

/** vmsnap → caller (stdout, both output modes): the filesystems are frozen, take the snapshot. */
export interface HandshakeFrozen {
  event: "frozen";
  runId: string;
  mounts: string[];
}

/** Caller → vmsnap (one line on stdin). */
export type HandshakeAnswer = "snapshot-done" | "snapshot-failed";

/** The answers vmsnap accepts, in the order of {@linkcode HandshakeAnswer}. */
export const HANDSHAKE_ANSWERS: readonly HandshakeAnswer[] = ["snapshot-done", "snapshot-failed"];

// ── the run's result ─────────────────────────────────────────────────────────

/** A consistency level, best first. */
export type Consistency = "application" | "filesystem" | "crash" | "none";

/** An error met while running, for the result: a {@linkcode Problem} (one type for both). */
export type RunError = Problem;

/**
 * A quiesce that did not hold writes (Redis's BGSAVE only): the snapshot may
 * miss writes after it, so the run is at most filesystem-consistent, with a
 * `PluginNotHeld` warning.
 */
export interface NotHeld {
  /** Why, in words, naming the plugin. */
  reason: string;
  /** The config asked for it (a mode): the run then asks for no more than the freeze gives. */
  chosen: boolean;
}

/** The outcome of a plugin's quiesce or resume. */
export interface StepResult {
  ok: boolean;
  /** Nothing to do (for example no post-script configured). */
  skipped?: boolean;
  durationMs: number;
  errors: RunError[];
  /** Facts for the result: attempts, positions, versions. */
  facts: Record<string, unknown>;
  /** Quiesced, but writes were not held until the snapshot (see {@linkcode NotHeld}). */
  notHeld?: NotHeld;
}

/** What became of the log's records. */
export interface LogStats {
  written: number;
  lost: number;
  /** Records dropped from memory while frozen (past the hold budget); marked in the log. */
  dropped: number;
  /** The first write error, when records were lost. */
  error?: string;
  /** The longest time records waited in memory, in ms. */
  heldMs: number;
}

/** One plugin in the result. */
export interface PluginReport {
  name: string;
  type: string;
  /** Problems that kept it from running. */
  checks: Problem[];
  quiesce: StepResult | null;
  resume: StepResult | null;
}

/** One frozen filesystem in the result. */
export interface MountReport {
  mountPoint: string;
  fsType: string;
  device: string;
  frozen: boolean;
  freezeMs?: number;
  /** The freeze level (0 first): a level's filesystems were frozen concurrently. */
  level?: number;
  thawed?: boolean;
  thawMs?: number;
  error?: string;
}

/** How the snapshot was taken and what came of it. */
export interface SnapshotOutcome {
  kind: "command" | "external";
  taken: boolean;
  durationMs: number;
  error?: RunError;
  exitCode?: number | null;
  /** The external caller's answer. */
  answer?: string;
}

/** One database lock left by a dead run. */
export interface PluginLockRecovery {
  plugin: string;
  type: string;
  runId: string;
  /** What the plugin found and did. */
  result?: string;
  /** Why it could not be released (the marker stays for the next start). */
  error?: string;
}

/** What recovery found and did. */
export interface Recovery {
  /** Mounts of a dead run that were thawed (or found already thawed). */
  thawed: {
    runId: string;
    mount: string;
    wasFrozen: boolean;
    confirmed: boolean;
    error?: string;
  }[];
  /** What guards reported after stepping in. */
  guardReports: GuardReport[];
  /** A run whose agent died holding the run lock (released now). */
  deadRun?: { runId: string; pid: number; since: string };
  /** Processes a dead run had started, killed. */
  killed: { runId: string; pid: number; command: string }[];
  /** Processes a dead run had started that the kill could not end (blocked in the kernel). */
  unkillable?: { runId: string; pid: number; command: string }[];
  /** Database locks a dead run left, and what was done about them. */
  pluginLocks: PluginLockRecovery[];
  /** What an earlier recovery did and kept for this one to show (a thaw hook with no holder). */
  earlier?: { by: string; at: string; recovery: Recovery }[];
}

/** The freeze part of the result. */
export interface FreezeReport {
  enabled: boolean;
  method?: string;
  mounts: MountReport[];
  frozenMs: number;
  guard?: { pid: number; steppedIn?: GuardReport };
  /**
   * With `freeze.expediteRcu`: `set` (0 → 1 around the FIFREEZE calls, then 0
   * again), `already` (the machine's own setting, left alone), `unavailable`.
   */
  rcuExpedited?: "set" | "already" | "unavailable";
}

/** The result object: the last line of `--json` output, and what the log ends with. */
export interface RunResult {
  event: "result";
  runId: string;
  status: "success" | "degraded" | "failed";
  consistency: Consistency;
  requestedConsistency: Consistency;
  snapshotTaken: boolean;
  exitCode: 0 | 1 | 2;
  errors: RunError[];
  warnings: Problem[];
  plugins: PluginReport[];
  freeze: FreezeReport;
  snapshot: SnapshotOutcome | null;
  recovered?: Recovery;
  log: { file?: string } & LogStats;
  durationMs: number;
}

// ── the run's events ─────────────────────────────────────────────────────────

/** Every plugin's pre step is done. */
export interface QuiescedEvent {
  event: "quiesced";
  runId: string;
  plugins: { name: string; ok: boolean | undefined }[];
}

/** The post step of every plugin whose pre step was attempted is done. */
export interface ResumedEvent {
  event: "resumed";
  runId: string;
  plugins: { name: string; ok: boolean | undefined }[];
}

/** The filesystems are frozen and the snapshot command starts (not printed for `--external`). */
export type FrozenEvent = HandshakeFrozen;

/** The snapshot was taken. */
export interface SnapshotTakenEvent {
  event: "snapshot-taken";
  runId: string;
  durationMs: number;
}

/** Everything frozen is thawed (and confirmed, or said otherwise in the result). */
export interface ThawedEvent {
  event: "thawed";
  runId: string;
  mounts: string[];
  frozenMs: number;
}

/** One line of `vmsnap run --json`. */
export type RunEvent =
  | QuiescedEvent
  | FrozenEvent
  | SnapshotTakenEvent
  | ThawedEvent
  | ResumedEvent
  | RunResult;
