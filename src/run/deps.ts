/**
 * What a run depends on: the freezer, the guard, the mount table, the plugin
 * registry, the uid, the clock, the fault-injection pause, the permission
 * rules and the snapshot taker. Hook mode takes the same (src/hook/deps.ts). `PRODUCTION_DEPS` are the real ones (with the
 * test-only switches of src/run/test_switches.ts read once); tests that run
 * without root or real freezes pass their own.
 *
 * @module
 */
import process from "node:process";
import { GUARD_START_TIMEOUT_MS } from "../defaults.ts";
import { createFreezer } from "../freeze/freezer.ts";
import { spawnGuard, startGuard } from "../freeze/guard.ts";
import type { SessionDeps } from "../freeze/session.ts";
import { type Mount, readMounts } from "../sys/mountinfo.ts";
import { TRUST, type Trust } from "../preflight/preflight.ts";
import { takeSnapshot } from "./snapshot.ts";
import { pauseFor, type PausePoint, readTestSwitches, type TestSwitches } from "./test_switches.ts";
import type { PluginDefinition } from "../../plugins/plugin.ts";
import { PLUGINS } from "../../plugins/registry.ts";

export type { PausePoint } from "./test_switches.ts";

/** What a run depends on, replaced in tests that run without root or real freezes. */
export interface RunDeps extends SessionDeps {
  /** The mount table. */
  readMounts(): Mount[];
  /** Plugin types by their `"type"` value. */
  // deno-lint-ignore no-explicit-any
  plugins: ReadonlyMap<string, PluginDefinition<any>>;
  /** The uid the process runs as (root is 0). */
  uid(): number | undefined;
  /** The clock for the run's durations and the hook's deadlines, in ms (`performance.now()`). */
  now(): number;
  /** The fault-injection pause (a no-op unless a test switch names the phase). */
  pause(phase: PausePoint, signal: AbortSignal): Promise<void>;
  /** The permission rules for the config, directories and snapshot command. */
  trust: Trust;
  /** Takes the snapshot (command or external handshake). */
  takeSnapshot: typeof takeSnapshot;
}

/**
 * The production dependencies, with the test-only switches of the
 * environment read once (src/run/test_switches.ts).
 *
 * @example
 * ```ts
 * import { productionDeps } from "./deps.ts";
 * const deps = productionDeps({ pauseAt: [], pauseMs: 0 });
 * ```
 */
export function productionDeps(switches: TestSwitches = readTestSwitches()): RunDeps {
  return {
    createFreezer: () => createFreezer(switches.freezeMethod),
    startGuard: (arm) => startGuard(arm, GUARD_START_TIMEOUT_MS),
    spawnGuard: () => spawnGuard(),
    readMounts: () => readMounts(switches.mountinfo),
    plugins: PLUGINS,
    uid: () => process.getuid?.(),
    now: () => performance.now(),
    pause: pauseFor(switches),
    trust: TRUST,
    takeSnapshot,
  };
}

/** The production dependencies. */
export const PRODUCTION_DEPS: RunDeps = productionDeps();
