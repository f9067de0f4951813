/**
 * What every fault scenario asserts afterwards: no mount frozen (a write
 * succeeds within a second), no database lock held (a write succeeds), no
 * process of the run left, the run lock released.
 *
 * @module
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { existsSync } from "node:fs";
import { join } from "node:path";
import { findByEnvironment } from "../../src/sys/process_runner.ts";
import { BIN, timeToWrite, waitFor } from "../helpers.ts";
import { mariadbWrite } from "../db_servers.ts";

/** True when no guard process of the binary under test is running. */
export function noGuard(): boolean {
  return spawnSync("pgrep", ["-f", `${BIN} __guard`]).status === 1;
}

/**
 * The common aftermath of a fault: every mount takes writes within a second,
 * the database takes a write, no process carries the run's id, no guard is
 * left, the run lock is gone.
 */
export async function assertCleanAfterFault(options: {
  mounts: string[];
  stateDir: string;
  runId: string;
  db?: { socket: string; sql: string };
}): Promise<void> {
  for (const mount of options.mounts) {
    const ms = await timeToWrite(mount, 3000);
    assert.ok(ms < 1000, `${mount} takes writes (${ms} ms)`);
  }
  if (options.db) {
    const ms = await mariadbWrite(options.db.socket, options.db.sql);
    assert.ok(ms < 2000, `the database takes a write (${ms} ms)`);
  }
  await waitFor(
    "the run's processes to be gone",
    () => findByEnvironment("VMSNAP_RUN_ID", options.runId).length === 0,
    5000,
  );
  await waitFor("the guard to exit", noGuard, 5000);
  assert.ok(!existsSync(join(options.stateDir, "run.lock")), "the run lock is released");
  assert.ok(!existsSync(join(options.stateDir, "frozen.json")), "no freeze marker left");
}
