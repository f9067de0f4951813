/**
 * Expedited RCU grace periods for the length of the FIFREEZE calls
 * (`freeze.expediteRcu`). FIFREEZE takes a filesystem's three per-CPU
 * rw-semaphores (`freeze_super` → `percpu_down_write`), and the first writer of
 * each after an idle period waits for an RCU grace period: ~25–45 ms of the
 * call on a 250 Hz kernel, two of them while writers are already blocked.
 * With `/sys/kernel/rcu_expedited` at 1 the kernel ends each grace period at
 * once (an IPI to every CPU) and FIFREEZE takes ~1 ms.
 *
 * The setting belongs to the whole machine, so vmsnap changes it only when
 * the config asks, only from 0 to 1, only around the FIFREEZE calls, and puts
 * back what it found right after them (the guard does it too if the agent
 * dies in between). It is a sysfs file, not a filesystem that can be frozen.
 *
 * @module
 */
import { readFileSync, writeFileSync } from "node:fs";
import { RCU_EXPEDITED_PATH } from "../defaults.ts";

/** What happened to the setting. */
export type ExpediteState =
  /** vmsnap set it to 1 and will put the 0 back. */
  | "set"
  /** It was already on (the administrator's setting): left as it is. */
  | "already"
  /** The file is missing or not writable here (a container, an old kernel): the freeze goes on without it. */
  | "unavailable";

/** An expedite in force; `restore()` puts back what was found (once). */
export interface Expedite {
  state: ExpediteState;
  /** Why it is unavailable. */
  error?: string;
  restore(): void;
}

/**
 * Turns expedited grace periods on, if they are off.
 *
 * @example
 * ```ts
 * import { expediteGracePeriods } from "./rcu_expedite.ts";
 * const expedite = expediteGracePeriods();
 * try {
 *   // FIFREEZE calls
 * } finally {
 *   expedite.restore();
 * }
 * ```
 */
export function expediteGracePeriods(path: string = RCU_EXPEDITED_PATH): Expedite {
  const found = readGracePeriods(path);
  if (found.error !== undefined) return unavailable(found.error);
  if (found.value !== "0") return { state: "already", restore() {} };
  try {
    writeFileSync(path, "1");
  } catch (error) {
    return unavailable(`cannot write ${path}: ${(error as Error).message}`);
  }
  let restored = false;
  return {
    state: "set",
    restore() {
      if (restored) return;
      restored = true;
      restoreGracePeriods(path);
    },
  };
}

/**
 * The setting as it is now (`"0"` when grace periods are not expedited).
 *
 * @example
 * ```ts
 * import { readGracePeriods } from "./rcu_expedite.ts";
 * const off = readGracePeriods().value === "0";
 * ```
 */
export function readGracePeriods(
  path: string = RCU_EXPEDITED_PATH,
): { value?: string; error?: string } {
  try {
    return { value: readFileSync(path, "utf8").trim() };
  } catch (error) {
    return { error: `cannot read ${path}: ${(error as Error).message}` };
  }
}

/**
 * Puts the setting back to 0 (what vmsnap found), ignoring errors: used by
 * the agent after its FIFREEZE calls and by the guard when the agent died
 * between setting and restoring it.
 *
 * @example
 * ```ts
 * import { restoreGracePeriods } from "./rcu_expedite.ts";
 * restoreGracePeriods();
 * ```
 */
export function restoreGracePeriods(path: string = RCU_EXPEDITED_PATH): void {
  try {
    writeFileSync(path, "0");
  } catch {
    // Nothing better to do: the setting only changes how fast grace periods end.
  }
}

function unavailable(error: string): Expedite {
  return { state: "unavailable", error, restore() {} };
}
