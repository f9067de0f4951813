/**
 * `vmsnap status`: the last result of run or hook, as src/state/record.ts
 * recorded it, and a hold in progress.
 *
 * @module
 */
import { statSync } from "node:fs";
import { EXIT } from "../../exit_codes.ts";
import type { HolderInfo } from "../../hook/channel.ts";
import { redact } from "../../secrets.ts";
import { escapeForTerminal } from "../../sys/terminal.ts";
import type { CommandSpec, Invocation } from "../command.ts";
import type { Io } from "../io.ts";

/** `vmsnap status`'s help. */
export const spec: CommandSpec = {
  summary: "show the last result of run or hook: when, status, consistency, errors",
  usage: "vmsnap status [--config PATH] [--json]",
  description: `Shows the result the last run (or hook hold) recorded in stateDir: when it ended,
its status and consistency, how long filesystems were frozen and each database held,
and its errors. Exit: the last result's exit code (0, 1, 2); 2 when nothing is recorded.`,
  options: {},
};

/**
 * Shows the last result; exits with its code.
 *
 * @example
 * ```ts
 * import { handler } from "./status.ts";
 * const io = { stdout: (t: string) => console.log(t), stderr: (t: string) => console.error(t), env: {} };
 * await handler({ command: "status", configPath: "/etc/x.json", configGiven: true, json: false, help: false, positionals: [] }, io);
 * ```
 */
export async function handler(args: Invocation, io: Io): Promise<number> {
  const status = await readStatus({ configPath: args.configPath });
  io.stdout(`${args.json ? redact(JSON.stringify(status)) : formatStatus(status)}\n`);
  return status.lastResult?.exitCode ?? EXIT.failed;
}

/** The last result and when it was recorded, or why there is none. */
export interface Status {
  ok: boolean;
  stateDir: string;
  /** When the result was written (the file's time). */
  recordedAt?: string;
  ageSeconds?: number;
  // deno-lint-ignore no-explicit-any
  lastResult?: any;
  message?: string;
  /** A hook's holder holding right now (between a freeze and its thaw). */
  holding?: HolderInfo;
}

/**
 * Reads the last result under the config's stateDir.
 *
 * @example
 * ```ts
 * import { readStatus } from "./status.ts";
 * const status = await readStatus({ configPath: "/etc/azure/VMSnapshotScriptPluginConfig.json" });
 * ```
 */
export async function readStatus(options: { configPath: string; now?: Date }): Promise<Status> {
  // Loaded here, not at every start: node:net and node:crypto come with them (issue 12).
  const [{ holderPaths, liveHolder }, { recordPlaces }, { lastResultPath, readLastResult }] =
    await Promise.all([
      import("../../hook/channel.ts"),
      import("../../state/record.ts"),
      import("../../state/last_result.ts"),
    ]);
  const { stateDir } = recordPlaces(options.configPath);
  const lastResult = readLastResult(stateDir);
  const holder = liveHolder(holderPaths(stateDir));
  const holding = holder ? { holding: holder } : {};
  if (!lastResult) {
    return {
      ok: false,
      stateDir,
      ...holding,
      message: `no result recorded in ${stateDir}: vmsnap has not run here yet (or cannot read ${
        lastResultPath(stateDir)
      }). Fix: run vmsnap run, or check the timer: systemctl list-timers vmsnap.timer.`,
    };
  }
  const mtime = statSync(lastResultPath(stateDir)).mtime;
  return {
    ok: lastResult.exitCode === 0,
    stateDir,
    recordedAt: mtime.toISOString(),
    ageSeconds: Math.round(((options.now ?? new Date()).getTime() - mtime.getTime()) / 1000),
    lastResult,
    ...holding,
  };
}

/** "3 h 12 min" */
function age(seconds: number): string {
  if (seconds < 90) return `${seconds} s`;
  const minutes = Math.round(seconds / 60);
  if (minutes < 90) return `${minutes} min`;
  const hours = Math.floor(minutes / 60);
  if (hours < 48) return `${hours} h ${minutes % 60} min`;
  return `${Math.floor(hours / 24)} days ${hours % 24} h`;
}

/**
 * `vmsnap status` in words.
 *
 * @example
 * ```ts
 * import { formatStatus, readStatus } from "./status.ts";
 * console.log(formatStatus(await readStatus({ configPath: "/etc/azure/VMSnapshotScriptPluginConfig.json" })));
 * ```
 */
export function formatStatus(status: Status): string {
  const h = status.holding;
  const holding = h
    ? `a hold is in progress: run ${h.runId} (${h.agent}), holder pid ${h.pid}, since ${h.since}\n`
    : "";
  if (!status.lastResult) return `${holding}vmsnap status: ${status.message}`;
  const r = status.lastResult;
  const mode = r.mode === "hook" ? `hook (${r.hook?.agent})` : "run";
  const lines = [
    `last ${mode} ${r.runId}: ${r.status}, ${r.consistency}-consistent${
      r.snapshotTaken ? "" : " (no snapshot)"
    }, exit ${r.exitCode}`,
    `  recorded ${status.recordedAt} (${
      age(status.ageSeconds ?? 0)
    } ago), took ${r.durationMs} ms, frozen ${r.freeze?.frozenMs ?? 0} ms`,
  ];
  for (const p of r.plugins ?? []) {
    const hold = p.resume?.facts?.holdMs;
    const ok = p.quiesce?.ok && p.resume?.ok
      ? "ok"
      : p.checks?.length
      ? `not run: ${p.checks[0].code}`
      : "failed";
    lines.push(
      `  plugin ${p.name} (${p.type}): ${ok}${typeof hold === "number" ? `, held ${hold} ms` : ""}`,
    );
  }
  for (const e of r.errors ?? []) {
    lines.push(`  [${e.code}]${e.plugin ? ` (${e.plugin})` : ""} ${e.message}`);
  }
  // Error messages may quote script output: never raw escape sequences on a terminal.
  return redact(escapeForTerminal(holding + lines.join("\n")));
}
