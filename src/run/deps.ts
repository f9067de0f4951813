/**
 * What a run depends on: the freezer, the guard, the mount table, the plugin
 * registry, the root check, the fault-injection pause, the permission rules
 * and the snapshot taker. `PRODUCTION_DEPS` are the real ones; tests that run
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
import type { PluginDefinition } from "../../plugins/plugin.ts";
import { PLUGINS } from "../../plugins/registry.ts";

/** A phase where the fault-injection hook can pause a run. */
export type PausePoint = "quiesce" | "frozen" | "thaw" | "resume";

/** What a run depends on, replaced in tests that run without root or real freezes. */
export interface RunDeps extends SessionDeps {
  /** The mount table. */
  readMounts(): Mount[];
  /** Plugin types by their `"type"` value. */
  // deno-lint-ignore no-explicit-any
  plugins: ReadonlyMap<string, PluginDefinition<any>>;
  /** True when the process runs as root. */
  isRoot(): boolean;
  /** The fault-injection pause (a no-op unless `VMSNAP_PAUSE_AT` names the phase). */
  pause(phase: PausePoint, signal: AbortSignal): Promise<void>;
  /** The permission rules for the config, directories and snapshot command. */
  trust: Trust;
  /** Takes the snapshot (command or external handshake). */
  takeSnapshot: typeof takeSnapshot;
}

/**
 * Fault injection for tests: `VMSNAP_PAUSE_AT=frozen` (comma-separated
 * phases) pauses the run at that phase for `VMSNAP_PAUSE_MS` (default 3000)
 * and says so on stderr, so a test can deliver a signal in a known phase. A
 * signal to vmsnap ends the pause at once.
 *
 * @example
 * ```ts
 * import { pauseFromEnvironment } from "./deps.ts";
 * await pauseFromEnvironment("frozen", new AbortController().signal);
 * ```
 */
export async function pauseFromEnvironment(
  phase: PausePoint,
  signal: AbortSignal,
): Promise<void> {
  if (!(process.env.VMSNAP_PAUSE_AT ?? "").split(",").includes(phase)) return;
  process.stderr.write(`vmsnap: paused at ${phase} (VMSNAP_PAUSE_AT)\n`);
  const ms = Math.min(Number(process.env.VMSNAP_PAUSE_MS ?? 3000), 60_000);
  await new Promise<void>((resolve) => {
    const timer = setTimeout(resolve, ms);
    signal.addEventListener("abort", () => {
      clearTimeout(timer);
      resolve();
    }, { once: true });
  });
}

/** The production dependencies. */
export const PRODUCTION_DEPS: RunDeps = {
  createFreezer: () => createFreezer(),
  startGuard: (arm) => startGuard(arm, GUARD_START_TIMEOUT_MS),
  spawnGuard: () => spawnGuard(),
  // A test seam: a mount table that lists only the test's own filesystems (the default freeze is auto).
  readMounts: () => readMounts(process.env.VMSNAP_TEST_MOUNTINFO || undefined),
  plugins: PLUGINS,
  isRoot: () => process.getuid?.() === 0,
  pause: pauseFromEnvironment,
  trust: TRUST,
  takeSnapshot,
};
