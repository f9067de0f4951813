/**
 * `vmsnap recover`: undoes what dead runs left in the config's stateDir (the
 * default one when there is no config), but only when the config and the
 * stateDir pass the permission rules: a marker in a directory a user could
 * write may be forged. Only root can thaw or kill.
 *
 * @module
 */
import process from "node:process";
import { describeRecovery, recoverAll, type Recovery } from "../../state/recover.ts";
import { trustedStateDir } from "../../preflight/preflight.ts";
import type { Problem } from "../../errors.ts";
import { EXIT, exitCodeOf } from "../../exit_codes.ts";
import { redact } from "../../secrets.ts";
import { escapeForTerminal } from "../../sys/terminal.ts";
import type { CommandSpec, Invocation } from "../command.ts";
import type { Io } from "../io.ts";

/** `vmsnap recover`'s help. */
export const spec: CommandSpec = {
  summary: "undo what a dead run left: frozen filesystems, its processes, database locks",
  usage: "vmsnap recover [--config PATH] [--json]",
  description:
    `Thaws the filesystems a dead run's freeze marker lists (when its agent and guard both
died), kills processes that run started, releases database locks that outlive their
connection (MongoDB's fsync lock), and shows what the freeze guard did. Every vmsnap
start does the same first; this command only does that, and says so.
Exit 0 when everything left was undone (or nothing was left), 1 when something could not be,
2 when it refused (not root, an untrusted config or stateDir).`,
  options: {},
};

/**
 * Recovers, as root, from a trusted stateDir; refuses otherwise.
 *
 * @example
 * ```ts
 * import { handler } from "./recover.ts";
 * const io = { stdout: (t: string) => console.log(t), stderr: (t: string) => console.error(t), env: {} };
 * await handler({ command: "recover", configPath: "/etc/x.json", configGiven: true, json: false, help: false, positionals: [] }, io);
 * ```
 */
export async function handler(args: Invocation, io: Io): Promise<number> {
  const refuse = (problems: Problem[]) => {
    for (const p of problems) io.stderr(`vmsnap recover: [${p.code}] ${redact(p.message)}\n`);
    if (args.json) io.stdout(`${redact(JSON.stringify({ ok: false, problems }))}\n`);
    return exitCodeOf(problems[0].code);
  };
  if (process.getuid?.() !== 0) {
    return refuse([{
      code: "NotRoot",
      message: "vmsnap recover must run as root (it thaws filesystems and kills processes).",
    }]);
  }
  const trusted = trustedStateDir(args.configPath);
  if (!trusted.stateDir) return refuse(trusted.problems);
  return reportRecovery(await recoverAll(trusted.stateDir), args.json, io);
}

/** `vmsnap recover`'s output and exit code. */
function reportRecovery(recovery: Recovery, json: boolean, io: Io): number {
  const failed = recovery.thawed.some((t) => !t.confirmed) ||
    recovery.pluginLocks.some((l) => l.error) || (recovery.unkillable?.length ?? 0) > 0;
  const lines = describeRecovery(recovery).map((p) => p.message);
  const text = json
    ? JSON.stringify({ ok: !failed, ...recovery })
    : lines.length
    ? escapeForTerminal(lines.join("\n"))
    : "nothing to recover: no run left anything behind.";
  io.stdout(`${redact(text)}\n`);
  return failed ? EXIT.degraded : EXIT.ok;
}
