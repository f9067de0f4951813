/**
 * The switches the production binary reads for tests only, named here and
 * nowhere else. Black-box tests drive `dist/vmsnap` through them where no
 * dependency can be injected into a separate process; a test that calls the
 * library injects `RunDeps` (src/run/deps.ts) instead. They are read
 * once, into `PRODUCTION_DEPS`, and documented in CONTRIBUTING.md ("Tests").
 *
 * - `VMSNAP_TEST_MOUNTINFO=FILE`: the mount table is read from FILE instead
 *   of /proc/self/mountinfo, so that the default freeze (`"auto"`) sees only
 *   the test's own filesystems.
 * - `VMSNAP_PAUSE_AT=quiesce,frozen,thaw,resume` (comma-separated): the run
 *   pauses at each phase named for `VMSNAP_PAUSE_MS` milliseconds (default
 *   3000, at most 60000) and says so on stderr, so that a test can deliver a
 *   signal or a fault in a known phase; a signal ends the pause at once.
 * - `VMSNAP_FREEZE_METHOD=fsfreeze`: the `fsfreeze` command instead of the
 *   ioctl (the fallback where FFI cannot be loaded).
 *
 * Only the process started by the test reads them: the guard and the holder
 * are started with an environment of their own and never see them.
 *
 * @module
 */
import process from "node:process";

/** A phase where the fault-injection pause can stop a run. */
export type PausePoint = "quiesce" | "frozen" | "thaw" | "resume";

/** The environment variables, by what they switch. */
export const TEST_SWITCH_NAMES = {
  mountinfo: "VMSNAP_TEST_MOUNTINFO",
  pauseAt: "VMSNAP_PAUSE_AT",
  pauseMs: "VMSNAP_PAUSE_MS",
  freezeMethod: "VMSNAP_FREEZE_METHOD",
} as const;

/** The switches as read. */
export interface TestSwitches {
  /** A mountinfo file to read instead of /proc/self/mountinfo. */
  mountinfo?: string;
  /** The phases to pause at. */
  pauseAt: readonly string[];
  /** How long each pause lasts. */
  pauseMs: number;
  /** Forces the `fsfreeze` fallback. */
  freezeMethod?: "fsfreeze";
}

/**
 * Reads the switches from an environment (the process's by default).
 *
 * @example
 * ```ts
 * import { readTestSwitches } from "./test_switches.ts";
 * readTestSwitches({ VMSNAP_PAUSE_AT: "frozen" }).pauseAt; // ["frozen"]
 * ```
 */
export function readTestSwitches(
  env: Record<string, string | undefined> = process.env,
): TestSwitches {
  return {
    mountinfo: env[TEST_SWITCH_NAMES.mountinfo] || undefined,
    pauseAt: (env[TEST_SWITCH_NAMES.pauseAt] ?? "").split(","),
    pauseMs: Math.min(Number(env[TEST_SWITCH_NAMES.pauseMs] ?? 3000), 60_000),
    freezeMethod: env[TEST_SWITCH_NAMES.freezeMethod] === "fsfreeze" ? "fsfreeze" : undefined,
  };
}

/**
 * The fault-injection pause the switches ask for: at a phase they name, says
 * so on stderr and waits (a signal to vmsnap ends the wait at once);
 * elsewhere it returns at once.
 *
 * @example
 * ```ts
 * import { pauseFor, readTestSwitches } from "./test_switches.ts";
 * const pause = pauseFor(readTestSwitches());
 * await pause("frozen", new AbortController().signal);
 * ```
 */
export function pauseFor(
  switches: TestSwitches,
): (phase: PausePoint, signal: AbortSignal) => Promise<void> {
  return async (phase, signal) => {
    if (!switches.pauseAt.includes(phase)) return;
    process.stderr.write(`vmsnap: paused at ${phase} (${TEST_SWITCH_NAMES.pauseAt})\n`);
    await new Promise<void>((resolve) => {
      const timer = setTimeout(resolve, switches.pauseMs);
      signal.addEventListener("abort", () => {
        clearTimeout(timer);
        resolve();
      }, { once: true });
    });
  };
}
