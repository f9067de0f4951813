/**
 * The freeze guard: a separate process (this binary in the hidden `__guard`
 * mode, in its own session) that holds the list of frozen mounts and a
 * deadline. It thaws every listed mount
 *
 * - when the deadline (`freeze.maxFrozenSeconds`) passes, and then keeps
 *   thawing until the agent lets it go, so a freeze that was blocked in the
 *   kernel and completes late is thawed too;
 * - at once when the agent dies: it reads the agent's pipe, and EOF on it is
 *   the agent's death (no timer poll).
 *
 * The agent tells it when its own thaw is done; the guard then checks every
 * mount once more and exits. Protocol: JSON lines, agent → guard on stdin
 * (`arm`, `release`), guard → agent on stdout (`armed`, `expired`, `released`).
 * The guard writes nothing to any filesystem until everything is thawed; then
 * it leaves a report in stateDir for the next run when it had to step in.
 *
 * @module
 */
import { spawn } from "node:child_process";
import { renameSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import process from "node:process";
import { createInterface } from "node:readline";
import {
  createFreezer,
  EMERGENCY_THAW_ORDER,
  inThawOrder,
  thawAndConfirm,
  thawIfPlanned,
} from "./freezer.ts";
import type {
  ArmMessage,
  GuardMessage,
  GuardReport,
  GuardRequest,
  GuardThaw,
} from "../protocol.ts";
import { selfCommand } from "../sys/self.ts";
import { GUARD_RELEASE_TIMEOUT_MS, GUARD_START_TIMEOUT_MS } from "../defaults.ts";
import { restoreGracePeriods } from "./rcu_expedite.ts";

export type { ArmMessage, GuardReport, GuardThaw } from "../protocol.ts";

/** Where the guard leaves its report for the next run. */
export function guardReportPath(stateDir: string, runId: string): string {
  return join(stateDir, `guard-${runId}.json`);
}

const REPEAT_THAW_MS = 50;

/**
 * The guard's main loop. Returns the exit code.
 *
 * @example
 * ```ts
 * // Started by the agent as `vmsnap __guard`; not for people.
 * ```
 */
export async function guardMain(): Promise<number> {
  const freezer = await createFreezer();
  const send = (message: GuardMessage) => {
    try {
      process.stdout.write(`${JSON.stringify(message)}\n`);
    } catch {
      // The agent is gone; the pipe is closed. Keep thawing.
    }
  };
  let arm: ArmMessage | undefined;
  /** What the agent froze (or is freezing), when it says so; else every planned mount. */
  let held: Set<string> | undefined;
  let armedAt = 0;
  let released = false;
  let report: GuardReport | undefined;
  /** A later round found something new; the report left in stateDir must be written again. */
  let reportChanged = false;
  let deadline: ReturnType<typeof setTimeout> | undefined;
  let repeat: ReturnType<typeof setInterval> | undefined;

  const thawAll = (reason: GuardReport["reason"]): GuardReport => {
    // The emergency order (freeze order): see ThawOrder in freeze.ts.
    const mounts = (arm?.mounts ?? []).filter((m) => !held || held.has(m));
    const thawed = inThawOrder(mounts, EMERGENCY_THAW_ORDER).map((mount): GuardThaw => ({
      mount,
      ...thawIfPlanned(freezer, mount, arm?.mountIds?.[mount]),
    }));
    if (!report) {
      report = {
        runId: arm?.runId ?? "",
        reason,
        at: new Date().toISOString(),
        afterMs: Math.round(performance.now() - armedAt),
        thawed,
      };
    } else {
      // Later rounds: record any mount found frozen again (a freeze that completed late).
      for (const t of thawed) {
        const before = report.thawed.find((r) => r.mount === t.mount);
        if (before && t.wasFrozen && !before.wasFrozen) {
          before.wasFrozen = true;
          reportChanged = true;
        }
      }
    }
    return report;
  };
  const leaveReport = () => {
    if (!report || !arm) return;
    try {
      // Written whole, then renamed: a reader never sees half a report.
      const path = guardReportPath(arm.stateDir, arm.runId);
      writeFileSync(`${path}.tmp`, JSON.stringify(report), { mode: 0o600 });
      renameSync(`${path}.tmp`, path);
    } catch {
      // Nothing more can be done; the thaw itself is what matters.
    }
  };

  const input = createInterface({ input: process.stdin, crlfDelay: Infinity });
  const done = new Promise<number>((resolve) => {
    input.on("line", (line) => {
      let message: GuardRequest;
      try {
        message = JSON.parse(line);
      } catch {
        return;
      }
      if (message?.op === "arm" && !arm) {
        arm = message;
        held = arm.held ? new Set(arm.held) : undefined;
        armedAt = performance.now();
        deadline = setTimeout(() => {
          send({ event: "expired", report: thawAll("deadline") });
          // Keep thawing until released: a freeze blocked in the kernel may complete late.
          repeat = setInterval(() => thawAll("deadline"), REPEAT_THAW_MS);
        }, arm.maxFrozenMs);
        send({ event: "armed", pid: process.pid });
      } else if (message?.op === "drop") {
        held?.delete(message.mount);
      } else if (message?.op === "release") {
        released = true;
        clearTimeout(deadline);
        clearInterval(repeat);
        // An agent that says what it holds confirmed its own thaw: the guard disarms and thaws
        // nothing more (a later freeze of the same mount is someone else's). An older agent: check
        // what it froze once more, without counting it as stepping in.
        const froze = held ? [] : message.froze ?? arm?.mounts ?? [];
        const leftovers = froze.filter((m) => thawAndConfirm(freezer, m).wasFrozen);
        send({ event: "released", leftovers });
        input.close();
        resolve(0);
      }
    });
    input.on("close", () => {
      if (released) return;
      clearTimeout(deadline);
      clearInterval(repeat);
      if (arm) {
        // The agent died: thaw now, and tell the next run (the filesystems are writable again).
        thawAll("agent-died");
        // It may have died between expediting grace periods and putting the setting back.
        if (arm.restoreRcuExpedited) restoreGracePeriods();
        leaveReport();
        // One more round shortly after, for a freeze that was in flight when the agent died.
        // Only a round that found something new writes the report again: a recovery may have
        // shown and removed the first one already.
        setTimeout(() => {
          thawAll("agent-died");
          if (reportChanged) leaveReport();
          resolve(3);
        }, REPEAT_THAW_MS);
      } else {
        resolve(0);
      }
    });
  });
  return await done;
}

/** The agent's handle on its guard. */
export interface GuardClient {
  pid: number;
  /** Set when the guard thawed at the deadline. */
  expired(): GuardReport | undefined;
  /** True when the guard exited before it was released (killed). */
  died(): boolean;
  /**
   * Tells the guard the agent's thaw of `froze` is done; resolves with the
   * mounts the guard still found frozen.
   */
  release(froze: string[]): Promise<string[]>;
  /** The freeze of `mount` failed: the guard must never thaw it. */
  drop(mount: string): void;
  /** Kills the guard (used when arming failed). */
  kill(): void;
}

/**
 * Starts a guard, arms it with the mounts and deadline, and waits until it
 * confirms. Throws when it does not come up within `startTimeoutMs`.
 *
 * @example
 * ```ts
 * import { startGuard } from "./guard.ts";
 * const guard = await startGuard({
 *   op: "arm",
 *   runId: "20261126T050000Z-a1b2c3",
 *   mounts: ["/data"],
 *   maxFrozenMs: 60_000,
 *   stateDir: "/var/lib/vmsnap",
 * });
 * // ... freeze, snapshot, thaw ...
 * await guard.release(["/data"]);
 * ```
 */
export function startGuard(
  arm: ArmMessage,
  startTimeoutMs = GUARD_START_TIMEOUT_MS,
): Promise<GuardClient> {
  return spawnGuard().arm(arm, startTimeoutMs);
}

/** A guard started but not armed yet: it waits for `arm`, and exits at once on EOF. */
export interface GuardProcess {
  pid: number | undefined;
  /** Arms it and waits for its confirmation; throws when it does not come within the time. */
  arm(message: ArmMessage, timeoutMs?: number): Promise<GuardClient>;
  /** Lets an unarmed guard go (EOF: it exits without doing anything). */
  dismiss(): void;
}

/**
 * Starts a guard early (in parallel with the checks and quiesce), so that
 * arming it before the freeze costs one message, not a process start.
 *
 * @example
 * ```ts
 * import { spawnGuard } from "./guard.ts";
 * const early = spawnGuard();
 * // ... checks, quiesce ...
 * early.dismiss(); // or: const guard = await early.arm({ op: "arm", ... });
 * ```
 */
export function spawnGuard(): GuardProcess {
  const [command, ...args] = selfCommand(["__guard"]);
  const child = spawn(command, args, {
    detached: true,
    stdio: ["pipe", "pipe", "ignore"],
    env: { PATH: "/usr/sbin:/usr/bin:/sbin:/bin", LANG: "C" },
  });
  let expiredReport: GuardReport | undefined;
  const waiters: { event: GuardMessage["event"]; resolve(message: GuardMessage): void }[] = [];
  let exited = false;
  let released = false;
  const exitWaiters: (() => void)[] = [];
  child.on("exit", () => {
    exited = true;
    for (const w of exitWaiters.splice(0)) w();
  });
  createInterface({ input: child.stdout! }).on("line", (line) => {
    let message: GuardMessage;
    try {
      message = JSON.parse(line);
    } catch {
      return;
    }
    if (message?.event === "expired") expiredReport = message.report;
    for (const w of waiters.filter((w) => w.event === message?.event)) {
      waiters.splice(waiters.indexOf(w), 1);
      w.resolve(message);
    }
  });
  const waitFor = <E extends GuardMessage["event"]>(event: E, timeoutMs: number) =>
    new Promise<Extract<GuardMessage, { event: E }> | undefined>((resolve) => {
      const timer = setTimeout(() => resolve(undefined), timeoutMs);
      const done = () => {
        clearTimeout(timer);
        resolve(undefined);
      };
      if (exited) return done();
      exitWaiters.push(done);
      waiters.push({
        event,
        resolve: (m) => {
          clearTimeout(timer);
          resolve(m as Extract<GuardMessage, { event: E }>);
        },
      });
    });
  const kill = () => {
    try {
      child.kill("SIGKILL");
    } catch {
      // already gone
    }
  };
  child.stdin!.on("error", () => {});
  child.on("error", () => {});
  // The guard must not keep the agent alive, nor die with the agent's terminal.
  child.unref();
  const request = (message: GuardRequest) => child.stdin!.write(`${JSON.stringify(message)}\n`);
  let armed = false;
  const arm = (message: ArmMessage, startTimeoutMs = GUARD_START_TIMEOUT_MS) => {
    armed = true;
    request(message);
    return waitFor("armed", startTimeoutMs).then((answer): GuardClient => {
      if (!answer) {
        kill();
        throw new Error(
          `the freeze guard did not start within ${startTimeoutMs} ms (${command} __guard)`,
        );
      }
      return client;
    });
  };
  const client: GuardClient = {
    pid: child.pid!,
    expired: () => expiredReport,
    died: () => exited && !released,
    drop: (mount: string) => void request({ op: "drop", mount }),
    async release(froze: string[]) {
      if (exited) return [];
      released = true;
      request({ op: "release", froze });
      const answer = await waitFor("released", GUARD_RELEASE_TIMEOUT_MS);
      child.stdin!.end();
      return answer?.leftovers ?? [];
    },
    kill,
  };
  return {
    pid: child.pid,
    arm,
    dismiss() {
      if (!armed && !exited) child.stdin!.end();
    },
  };
}
