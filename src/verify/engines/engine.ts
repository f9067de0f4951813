/**
 * What restoring one database type takes, and what every type shares: the
 * context a restore gets (the sandbox, the root it runs in, the manifest's
 * entry), waiting for a server to come up, and the evidence that nothing in
 * the data directory was written after the run.
 *
 * @module
 */
import { existsSync, lstatSync } from "node:fs";
import { newestFile } from "../discover.ts";
import type { Manifest, ManifestDatabase } from "../manifest.ts";
import { snapshotDeadline } from "../manifest.ts";
import type { Limits, Ran, Sandbox, Started } from "../sandbox.ts";
import type { Evidence } from "../verdict.ts";
import { type VerifyProblem, verifyProblem } from "../codes.ts";
import { findTool } from "../tools.ts";

/** Programs a restore may use, by role; absent ones are looked up on vmsnap's PATH. */
export interface VerifyBinaries {
  mariadbd?: string;
  mariadb?: string;
  mariadbCheck?: string;
  /** PostgreSQL's bin directory; `{major}` is replaced by the cluster's major version. */
  postgresBinDir?: string;
  redisServer?: string;
  redisCli?: string;
  redisCheckAof?: string;
  redisCheckRdb?: string;
  sqlite3?: string;
}

/** How long a restore may take. */
export interface Timeouts {
  /** From the server's start to the end of its recovery. */
  startMs: number;
  /** Each check (CHECK TABLE of everything, amcheck). */
  checkMs: number;
}

/** What one database's restore gets. */
export interface RestoreContext {
  sandbox: Sandbox;
  /** The root the servers run in (chroot), inside the sandbox. */
  root: string;
  /** The data directory (VM path, inside the root). */
  dataDir: string;
  /** The manifest's entry for this database, when there is a manifest. */
  entry?: ManifestDatabase;
  manifest?: Manifest;
  binaries: VerifyBinaries;
  /** The service user to run the server as. */
  user: string;
  limits: Limits;
  timeouts: Timeouts;
  /**
   * A VM path as this process can reach it in the root (the overlay: the
   * server's view); a path that never exists when a component is a symbolic
   * link (it would resolve on the host).
   */
  reach(vmPath: string): string;
  /** PostgreSQL in backup mode: the host directory of its archived WAL, to restore with its backup_label. */
  walArchive?: string;
  /** A VM path in the snapshot itself (the read-only lower layer), when it is on one. */
  snapshotPath(vmPath: string): string | undefined;
  /** Says what is happening (for a progress display and tests). */
  progress(stage: string, detail?: Record<string, unknown>): void;
}

/** What a restore found. */
export interface RestoreOutcome {
  evidence: Evidence[];
  /** Set when the database could not be verified at all (no verdict). */
  error?: VerifyProblem;
}

/** One database type's restore. */
export interface Engine {
  type: string;
  /** The programs it needs that are missing here, with what provides them. */
  missing(ctx: Pick<RestoreContext, "binaries" | "dataDir" | "reach">): string[];
  restore(ctx: RestoreContext): Promise<RestoreOutcome>;
}

/**
 * A program by its configured path or its name(s) on vmsnap's PATH.
 *
 * @example
 * ```ts
 * import { program } from "./engine.ts";
 * program(undefined, "mariadbd", "mysqld");
 * ```
 */
export function program(configured: string | undefined, ...names: string[]): string | undefined {
  if (configured) return findTool(configured);
  for (const name of names) {
    const found = findTool(name);
    if (found) return found;
  }
  return undefined;
}

/**
 * Polls `ready` until it says so, the server exits, or the start timeout
 * passes. Returns how it ended and how long it took.
 *
 * @example
 * ```ts
 * import { waitForServer } from "./engine.ts";
 * import type { Started } from "../sandbox.ts";
 * declare const server: Started;
 * const up = await waitForServer(server, async () => true, 60_000);
 * ```
 */
export async function waitForServer(
  server: Started,
  ready: () => Promise<boolean>,
  timeoutMs: number,
): Promise<{ state: "ready" | "exited" | "timeout"; ms: number }> {
  const started = performance.now();
  while (performance.now() - started < timeoutMs) {
    if (server.done()) return { state: "exited", ms: performance.now() - started };
    if (await ready()) return { state: "ready", ms: performance.now() - started };
    if (server.done()) return { state: "exited", ms: performance.now() - started };
    await new Promise((r) => setTimeout(r, 200));
  }
  return { state: "timeout", ms: performance.now() - started };
}

/**
 * The last lines of a log that match, without their time stamps' noise.
 *
 * @example
 * ```ts
 * import { logLines } from "./engine.ts";
 * logLines("a\nInnoDB: Starting crash recovery\n", /recover/i); // ["InnoDB: Starting crash recovery"]
 * ```
 */
export function logLines(text: string, pattern: RegExp, max = 8): string[] {
  return text.split("\n").filter((l) => pattern.test(l)).slice(-max).map((l) => l.trim());
}

/**
 * A command's outcome in a few words (its exit and the end of its output).
 *
 * @example
 * ```ts
 * import { said } from "./engine.ts";
 * said({ code: 1, signal: null, stdout: "", stderr: "boom", timedOut: false }); // "exit 1: boom"
 * ```
 */
export function said(ran: Ran, max = 600): string {
  const text = `${ran.stderr}\n${ran.stdout}`.trim();
  const tail = text.length > max ? `…${text.slice(-max)}` : text;
  const how = ran.timedOut
    ? "timed out"
    : ran.signal
    ? `killed by ${ran.signal}`
    : `exit ${ran.code}`;
  return tail ? `${how}: ${tail}` : how;
}

/**
 * Position evidence: nothing under `vmDir` on the snapshot (or, with
 * `files`, none of those files) was modified after the run ended: a snapshot
 * of the run's frozen window cannot hold a later write. Undefined without a
 * manifest or when nothing is on the snapshot.
 *
 * @example
 * ```ts
 * import { writtenAfterRun } from "./engine.ts";
 * import type { RestoreContext } from "./engine.ts";
 * declare const ctx: RestoreContext;
 * const evidence = writtenAfterRun(ctx, ctx.dataDir);
 * ```
 */
export function writtenAfterRun(
  ctx: RestoreContext,
  vmDir: string,
  files?: string[],
): Evidence | undefined {
  if (!ctx.manifest) return undefined;
  const deadline = snapshotDeadline(ctx.manifest);
  let newest: { path: string; mtimeMs: number; files: number } | undefined;
  if (files) {
    for (const file of files) {
      const at = ctx.snapshotPath(file);
      try {
        const stat = lstatSync(at ?? "");
        if (stat.isFile() && (!newest || stat.mtimeMs > newest.mtimeMs)) {
          newest = { path: file, mtimeMs: stat.mtimeMs, files: 0 };
        }
      } catch {
        // not on the snapshot
      }
    }
    if (newest) newest.files = files.length;
  } else {
    const lower = ctx.snapshotPath(vmDir);
    const found = lower ? newestFile(lower) : undefined;
    if (found) newest = { ...found, path: `${vmDir}${found.path.slice(lower!.length)}` };
  }
  if (!newest) return undefined;
  return {
    kind: "position",
    name: files
      ? "the database's files were not written after the run"
      : "nothing in the data directory was written after the run",
    ok: newest.mtimeMs <= deadline,
    detail: `newest of ${newest.files} files: ${newest.path} at ${
      new Date(newest.mtimeMs).toISOString()
    }; the run ended by ${new Date(deadline).toISOString()}`,
  };
}

/**
 * Runs a command as root inside the root (chroot) on VM paths, each of which
 * must exist and have no symbolic link on the way: root never follows the
 * snapshot's links (one to /proc/1/root would lead out of the root).
 * Returns false, running nothing, when a path fails that.
 *
 * @example
 * ```ts
 * import { asRootOn } from "./engine.ts";
 * import type { RestoreContext } from "./engine.ts";
 * declare const ctx: RestoreContext;
 * await asRootOn(ctx, ["chown", "-R", "mysql:"], [ctx.dataDir]);
 * ```
 */
export async function asRootOn(
  ctx: Pick<RestoreContext, "sandbox" | "root" | "reach">,
  argv: string[],
  vmPaths: string[],
): Promise<boolean> {
  const safe = vmPaths.filter((p) => existsSync(ctx.reach(p)));
  if (safe.length === 0) return false;
  const ran = await ctx.sandbox.run([...argv, "--", ...safe], {
    root: ctx.root,
    timeoutMs: 600_000,
  });
  return ran.code === 0;
}

/**
 * A file's size on the snapshot, or undefined when it is not there.
 *
 * @example
 * ```ts
 * import { sizeOf } from "./engine.ts";
 * sizeOf("/nonexistent"); // undefined
 * ```
 */
export function sizeOf(path: string | undefined): number | undefined {
  if (!path) return undefined;
  try {
    const stat = lstatSync(path);
    return stat.isFile() ? stat.size : undefined;
  } catch {
    return undefined;
  }
}

/**
 * The coded problem of a server that did not finish recovery in time.
 *
 * @example
 * ```ts
 * import { timeoutProblem } from "./engine.ts";
 * import type { RestoreContext } from "./engine.ts";
 * declare const ctx: RestoreContext;
 * timeoutProblem(ctx, "mariadbd").code; // "VerifyServerTimeout"
 * ```
 */
export function timeoutProblem(
  ctx: Pick<RestoreContext, "timeouts" | "dataDir">,
  what: string,
): VerifyProblem {
  return verifyProblem(
    "VerifyServerTimeout",
    `${what} did not finish recovery within ${
      Math.round(ctx.timeouts.startMs / 1000)
    } s on ${ctx.dataDir}. Fix: raise startTimeoutSeconds for a database this large.`,
  );
}
