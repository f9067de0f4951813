/**
 * Test helpers: private root-owned directories (the permission rules refuse
 * /tmp), files with exact owners and modes, and running the compiled binary.
 *
 * @module
 */
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import {
  chmodSync,
  chownSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from "node:fs";
import { dirname, join } from "node:path";
import process from "node:process";

/** The repository root. */
export const ROOT = join(dirname(new URL(import.meta.url).pathname), "..");

/** The binary under test: `VMSNAP_BIN`, else `dist/vmsnap`. */
export const BIN = process.env.VMSNAP_BIN ?? join(ROOT, "dist", "vmsnap");

/** uid/gid of `nobody`, the non-root owner in permission tests. */
export const NOBODY = 65534;

const BASE = process.env.VMSNAP_TEST_DIR ?? "/var/lib/vmsnap-test";

/**
 * A fresh directory that passes the permission rules: every directory from /
 * down is root-owned and not group/other-writable. Removed by `cleanup`.
 */
export function secureDir(prefix = "t-"): { dir: string; cleanup(): void } {
  mkdirSync(BASE, { recursive: true, mode: 0o700 });
  chmodSync(BASE, 0o700);
  const dir = mkdtempSync(join(BASE, prefix));
  chmodSync(dir, 0o700);
  return { dir, cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}

/** Writes a file with an exact mode and owner (root unless given). */
export function put(path: string, content: string, mode: number, uid = 0): string {
  mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
  writeFileSync(path, content);
  chownSync(path, uid, uid);
  chmodSync(path, mode);
  return path;
}

/** Writes a config (an object is serialized; a string is written as is), root 0600. */
export function putConfig(dir: string, config: unknown, name = "vmsnap.json"): string {
  const text = typeof config === "string" ? config : JSON.stringify(config, null, 2);
  return put(join(dir, name), text, 0o600);
}

/** What a finished process gave. */
export interface Ran {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/** Runs the compiled binary with arguments; resolves when it exits. */
export function runBin(
  args: string[],
  options: { env?: Record<string, string>; input?: string; timeoutMs?: number } = {},
): Promise<Ran> {
  return new Promise((resolve, reject) => {
    const child = spawn(BIN, args, {
      env: { PATH: "/usr/sbin:/usr/bin:/sbin:/bin", ...options.env },
      stdio: ["pipe", "pipe", "pipe"],
    });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d) => (stdout += d));
    child.stderr.on("data", (d) => (stderr += d));
    const timer = setTimeout(() => child.kill("SIGKILL"), options.timeoutMs ?? 60_000);
    child.on("error", reject);
    child.on("close", (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout, stderr });
    });
    child.stdin.end(options.input ?? "");
  });
}

/** Parses the JSON that `check --json` prints. */
export function json<T = Record<string, unknown>>(ran: Ran): T {
  try {
    return JSON.parse(ran.stdout) as T;
  } catch {
    throw new Error(`not JSON (exit ${ran.code}):\n${ran.stdout}\n--- stderr:\n${ran.stderr}`);
  }
}

/** A binary started in the background. */
export interface Started {
  child: import("node:child_process").ChildProcessWithoutNullStreams;
  /** Resolves when it exits. */
  done: Promise<Ran>;
  /** stdout so far. */
  stdout(): string;
  /** stderr so far. */
  stderr(): string;
}

/** Starts the binary without waiting for it. */
export function startBin(
  args: string[],
  options: { env?: Record<string, string> } = {},
): Started {
  const child = spawn(BIN, args, {
    env: { PATH: "/usr/sbin:/usr/bin:/sbin:/bin", ...options.env },
    stdio: ["pipe", "pipe", "pipe"],
  });
  let stdout = "";
  let stderr = "";
  child.stdout.on("data", (d) => (stdout += d));
  child.stderr.on("data", (d) => (stderr += d));
  const done = new Promise<Ran>((resolve) => {
    child.on("close", (code, signal) => resolve({ code, signal, stdout, stderr }));
  });
  return { child, done, stdout: () => stdout, stderr: () => stderr };
}

/** Whether a process with this pid exists (signal 0). */
export function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** Polls until the predicate holds; throws after the timeout. */
export async function waitFor(
  what: string,
  predicate: () => boolean,
  timeoutMs = 10_000,
): Promise<void> {
  const until = performance.now() + timeoutMs;
  while (!predicate()) {
    if (performance.now() > until) {
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    }
    await new Promise((r) => setTimeout(r, 10));
  }
}

/**
 * Creates a file on a mount from another process and returns how long that
 * took (a frozen filesystem blocks the creation until it is thawed). Gives up
 * after `limitMs` and reports Infinity; the blocked writer is left to finish on
 * the thaw.
 */
export function timeToWrite(mountPoint: string, limitMs = 5_000): Promise<number> {
  return new Promise((resolve) => {
    const started = performance.now();
    const child = spawn("/bin/sh", ["-c", `echo probe > "${mountPoint}/.probe-$$"`], {
      stdio: "ignore",
    });
    const timer = setTimeout(() => resolve(Infinity), limitMs);
    child.on("exit", () => {
      clearTimeout(timer);
      resolve(performance.now() - started);
    });
  });
}

/** The result object: the last line of a `run --json` (asserted to be the result). */
// deno-lint-ignore no-explicit-any
export function resultOf<T = any>(stdout: string): T {
  const last = stdout.trim().split("\n").filter(Boolean).map((l) => JSON.parse(l)).at(-1);
  assert.equal(last?.event, "result", stdout);
  return last as T;
}

/** The codes of a result's errors. */
export const codes = (result: { errors: { code: string }[] }): string[] =>
  result.errors.map((e) => e.code);

/** Asserts that a secret appears nowhere: stdout, stderr, the log file. */
export function assertNoSecret(secret: string, ran: Ran, logFile?: string): void {
  assert.ok(!ran.stdout.includes(secret), "secret in stdout");
  assert.ok(!ran.stderr.includes(secret), "secret in stderr");
  if (logFile && existsSync(logFile)) {
    assert.ok(!readFileSync(logFile, "utf8").includes(secret), "secret in the log");
  }
}
