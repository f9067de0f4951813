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
import { type ChildProcess, spawn } from "node:child_process";
import { renameSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import process from "node:process";
import { createInterface } from "node:readline";
import {
  createFreezer,
  EMERGENCY_THAW_ORDER,
  type Freezer,
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
  ReleaseMessage,
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

/** Writes one message to the agent; an agent gone (pipe closed) is no reason to stop thawing. */
function send(message: GuardMessage): void {
  try {
    process.stdout.write(`${JSON.stringify(message)}\n`);
  } catch {
    // The agent is gone; the pipe is closed. Keep thawing.
  }
}

/** What the guard holds and has done: armed by the agent, released by it, or stepping in. */
class Guard {
  readonly #freezer: Freezer;
  #arm?: ArmMessage;
  /** What the agent froze (or is freezing), when it says so; else every planned mount. */
  #held?: Set<string>;
  #armedAt = 0;
  released = false;
  #report?: GuardReport;
  /** A later round found something new; the report left in stateDir must be written again. */
  #reportChanged = false;
  #deadline?: ReturnType<typeof setTimeout>;
  #repeat?: ReturnType<typeof setInterval>;

  constructor(freezer: Freezer) {
    this.#freezer = freezer;
  }

  /** Armed once: the deadline starts, after which it thaws, and keeps thawing until released. */
  arm(message: ArmMessage): void {
    if (this.#arm) return;
    const arm = this.#arm = message;
    this.#held = arm.held ? new Set(arm.held) : undefined;
    this.#armedAt = performance.now();
    this.#deadline = setTimeout(() => {
      send({ event: "expired", report: this.#thawAll("deadline") });
      // Keep thawing until released: a freeze blocked in the kernel may complete late.
      this.#repeat = setInterval(() => this.#thawAll("deadline"), REPEAT_THAW_MS);
    }, arm.maxFrozenMs);
    send({ event: "armed", pid: process.pid });
  }

  /** The freeze of `mount` failed (maybe someone else's): never thaw it. */
  drop(mount: string): void {
    this.#held?.delete(mount);
  }

  /**
   * The agent's thaw is done. An agent that says what it holds confirmed its
   * own thaw: the guard disarms and thaws nothing more (a later freeze of the
   * same mount is someone else's). An older agent: check what it froze once
   * more, without counting it as stepping in.
   */
  release(message: ReleaseMessage): void {
    this.released = true;
    this.#stopTimers();
    const froze = this.#held ? [] : message.froze ?? this.#arm?.mounts ?? [];
    const leftovers = froze.filter((m) => thawAndConfirm(this.#freezer, m).wasFrozen);
    send({ event: "released", leftovers });
  }

  /**
   * The agent died (EOF on its pipe): thaw now and tell the next run (the
   * filesystems are writable again), then once more shortly after, for a
   * freeze that was in flight. Resolves with the exit code.
   */
  agentGone(): Promise<number> {
    this.#stopTimers();
    const arm = this.#arm;
    if (!arm) return Promise.resolve(0);
    this.#thawAll("agent-died");
    // It may have died between expediting grace periods and putting the setting back.
    if (arm.restoreRcuExpedited) restoreGracePeriods();
    this.#leaveReport();
    // Only a round that found something new writes the report again: a recovery may have shown
    // and removed the first one already.
    return new Promise((resolve) =>
      setTimeout(() => {
        this.#thawAll("agent-died");
        if (this.#reportChanged) this.#leaveReport();
        resolve(3);
      }, REPEAT_THAW_MS)
    );
  }

  #stopTimers(): void {
    clearTimeout(this.#deadline);
    clearInterval(this.#repeat);
  }

  /** Thaws what it holds, in the emergency order (freeze order: see ThawOrder in freezer.ts). */
  #thawAll(reason: GuardReport["reason"]): GuardReport {
    const arm = this.#arm;
    const mounts = (arm?.mounts ?? []).filter((m) => !this.#held || this.#held.has(m));
    const thawed = inThawOrder(mounts, EMERGENCY_THAW_ORDER).map((mount): GuardThaw => ({
      mount,
      ...thawIfPlanned(this.#freezer, mount, arm?.mountIds?.[mount]),
    }));
    if (!this.#report) {
      this.#report = {
        runId: arm?.runId ?? "",
        reason,
        at: new Date().toISOString(),
        afterMs: Math.round(performance.now() - this.#armedAt),
        thawed,
      };
      return this.#report;
    }
    // Later rounds: record any mount found frozen again (a freeze that completed late).
    for (const t of thawed) {
      const before = this.#report.thawed.find((r) => r.mount === t.mount);
      if (before && t.wasFrozen && !before.wasFrozen) {
        before.wasFrozen = true;
        this.#reportChanged = true;
      }
    }
    return this.#report;
  }

  /** The report for the next run, written whole, then renamed: a reader never sees half of it. */
  #leaveReport(): void {
    if (!this.#report || !this.#arm) return;
    try {
      const path = guardReportPath(this.#arm.stateDir, this.#arm.runId);
      writeFileSync(`${path}.tmp`, JSON.stringify(this.#report), { mode: 0o600 });
      renameSync(`${path}.tmp`, path);
    } catch {
      // Nothing more can be done; the thaw itself is what matters.
    }
  }
}

/**
 * The guard's main loop: its agent's requests on stdin, until it is released
 * or the agent dies. Returns the exit code.
 *
 * @example
 * ```ts
 * // Started by the agent as `vmsnap __guard`; not for people.
 * ```
 */
export async function guardMain(): Promise<number> {
  const guard = new Guard(await createFreezer());
  const input = createInterface({ input: process.stdin, crlfDelay: Infinity });
  return await new Promise<number>((resolve) => {
    input.on("line", (line) => {
      let message: GuardRequest;
      try {
        message = JSON.parse(line);
      } catch {
        return;
      }
      if (message?.op === "arm") guard.arm(message);
      else if (message?.op === "drop") guard.drop(message.mount);
      else if (message?.op === "release") {
        guard.release(message);
        input.close();
        resolve(0);
      }
    });
    input.on("close", () => {
      if (!guard.released) guard.agentGone().then(resolve);
    });
  });
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

/** The agent's end of the pipes to a guard: its requests out, its messages in. */
interface GuardLink {
  request(message: GuardRequest): void;
  /** The next message of this kind, or undefined when the guard exits or the time passes. */
  waitFor<E extends GuardMessage["event"]>(
    event: E,
    timeoutMs: number,
  ): Promise<Extract<GuardMessage, { event: E }> | undefined>;
  /** The guard's report, once it stepped in at the deadline. */
  expired(): GuardReport | undefined;
  exited(): boolean;
}

function guardLink(child: ChildProcess): GuardLink {
  let expiredReport: GuardReport | undefined;
  const waiters: { event: GuardMessage["event"]; resolve(message: GuardMessage): void }[] = [];
  let exited = false;
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
  return {
    request: (message) => void child.stdin!.write(`${JSON.stringify(message)}\n`),
    waitFor: <E extends GuardMessage["event"]>(event: E, timeoutMs: number) =>
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
      }),
    expired: () => expiredReport,
    exited: () => exited,
  };
}

/** The agent's handle on an armed guard. */
function guardClient(child: ChildProcess, link: GuardLink): GuardClient {
  let released = false;
  return {
    pid: child.pid!,
    expired: link.expired,
    died: () => link.exited() && !released,
    drop: (mount: string) => link.request({ op: "drop", mount }),
    async release(froze: string[]) {
      if (link.exited()) return [];
      released = true;
      link.request({ op: "release", froze });
      const answer = await link.waitFor("released", GUARD_RELEASE_TIMEOUT_MS);
      child.stdin!.end();
      return answer?.leftovers ?? [];
    },
    kill() {
      try {
        child.kill("SIGKILL");
      } catch {
        // already gone
      }
    },
  };
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
  const link = guardLink(child);
  child.stdin!.on("error", () => {});
  child.on("error", () => {});
  // The guard must not keep the agent alive, nor die with the agent's terminal.
  child.unref();
  const client = guardClient(child, link);
  let armed = false;
  return {
    pid: child.pid,
    async arm(message: ArmMessage, startTimeoutMs = GUARD_START_TIMEOUT_MS) {
      armed = true;
      link.request(message);
      if (await link.waitFor("armed", startTimeoutMs)) return client;
      client.kill();
      throw new Error(
        `the freeze guard did not start within ${startTimeoutMs} ms (${command} __guard)`,
      );
    },
    dismiss() {
      if (!armed && !link.exited()) child.stdin!.end();
    },
  };
}
