/**
 * Shared by the plugin end-to-end tests: the result of a --json run, and a
 * scan of everything a run wrote for a secret.
 *
 * @module
 */
import assert from "node:assert/strict";
import { existsSync, readFileSync } from "node:fs";
import type { Ran } from "../helpers.ts";

/** The result line of a --json run. */
// deno-lint-ignore no-explicit-any
export function resultOf(stdout: string): any {
  const last = stdout.trim().split("\n").filter(Boolean).map((l) => JSON.parse(l)).at(-1);
  assert.equal(last?.event, "result", stdout);
  return last;
}

/** The codes of a result's errors. */
// deno-lint-ignore no-explicit-any
export const codes = (result: any): string[] => result.errors.map((e: { code: string }) => e.code);

/** Asserts that a secret appears nowhere: stdout, stderr, the result, the log file. */
export function assertNoSecret(secret: string, ran: Ran, logFile?: string): void {
  assert.ok(!ran.stdout.includes(secret), "secret in stdout");
  assert.ok(!ran.stderr.includes(secret), "secret in stderr");
  if (logFile && existsSync(logFile)) {
    assert.ok(!readFileSync(logFile, "utf8").includes(secret), "secret in the log");
  }
}
