/**
 * Calling an installed hook file the way a backup agent does: no stdin,
 * stdout and stderr read until end of file (as VMware Tools, Google's guest
 * agent and the SSM agent do), the agent's small environment, and a limit
 * after which the test fails (an agent would hang).
 *
 * @module
 */
import { spawn } from "node:child_process";
import { readFileSync, readlinkSync } from "node:fs";
import { join } from "node:path";
import type { Ran } from "./helpers.ts";
import type { HookResult } from "../src/hook/holder.ts";

/** The environment agents give their hooks (root's minimal PATH). */
export const AGENT_ENV = { PATH: "/usr/sbin:/usr/bin:/sbin:/bin", LANG: "C" };

/**
 * Runs argv as an agent would and resolves when the process exited AND every
 * pipe it was given reached end of file. `extraPipe` hands it one more pipe
 * (fd 3), as a careless agent might. Rejects after `limitMs`.
 */
export function agentCall(
  argv: string[],
  options: { limitMs?: number; extraPipe?: boolean } = {},
): Promise<Ran & { ms: number }> {
  const started = performance.now();
  return new Promise((resolve, reject) => {
    const child = spawn(argv[0], argv.slice(1), {
      env: AGENT_ENV,
      stdio: ["ignore", "pipe", "pipe", ...(options.extraPipe ? ["pipe" as const] : [])],
    });
    let stdout = "";
    let stderr = "";
    child.stdout!.on("data", (d) => (stdout += d));
    child.stderr!.on("data", (d) => (stderr += d));
    const limitMs = options.limitMs ?? 60_000;
    const timer = setTimeout(
      () =>
        reject(
          new Error(
            `${
              argv.join(" ")
            }: its output did not reach end of file within ${limitMs} ms (an agent would hang)\n${stdout}\n${stderr}`,
          ),
        ),
      limitMs,
    );
    child.on("error", reject);
    // "close": the process exited and every stdio pipe is closed, by everyone holding it.
    child.on("close", (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout, stderr, ms: performance.now() - started });
    });
  });
}

/** The last result in a stateDir. */
export function lastResult(stateDir: string): HookResult {
  return JSON.parse(readFileSync(join(stateDir, "last-result.json"), "utf8"));
}

/** Where a process's descriptors point: fd → target. */
export function descriptors(pid: number): Record<string, string> {
  const out: Record<string, string> = {};
  const dir = `/proc/${pid}/fd`;
  for (const fd of Deno.readDirSync(dir)) {
    try {
      out[fd.name] = readlinkSync(join(dir, fd.name));
    } catch {
      // closed meanwhile
    }
  }
  return out;
}
