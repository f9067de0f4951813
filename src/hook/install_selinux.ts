/**
 * The SELinux part of `vmsnap install`: where SELinux is on, the files
 * install wrote get the policy's labels (`restorecon`), the hook qemu-ga
 * runs gets the vendor's way out of qemu-ga's confinement (a `semanage
 * fcontext` rule where the policy has none, the boolean only with
 * `--selinux-boolean`, src/sys/selinux.ts), and what was added is recorded
 * so `uninstall` takes exactly that away. On the running system the
 * commands are run; under `--root` (an image) they are printed, to run on
 * that system.
 *
 * @module
 */
import { VmsnapError } from "../errors.ts";
import { sh } from "./agents/agent.ts";
import {
  detectSelinux,
  parseGetsebool,
  planSelinux,
  QGA_UNCONFINED_BOOLEAN,
  runSelinuxCommands,
  type SelinuxState,
  type SelinuxTool,
} from "../sys/selinux.ts";

/** What install asks of SELinux. */
export interface SelinuxRequest {
  root: string;
  /** The target system is the running one (root "/"): commands are run. */
  live: boolean;
  /** Files install wrote or changed (target paths). */
  written: string[];
  /** The hook the agent executes that must leave its domain (qemu-ga), if any. */
  entrypoint?: string;
  /** The vmsnap binary the hooks exec. */
  binary: string;
  /** `--selinux-boolean`: turn the agent's boolean on. */
  setBoolean: boolean;
}

/** The commands for SELinux, their undo, and what to say. */
export interface SelinuxSteps {
  commands: string[][];
  undo: string[][];
  notes: string[];
}

/** Whether a boolean is on now (running system, getsebool present). */
function booleanOn(state: SelinuxState, name: string): boolean | undefined {
  const getsebool = state.tools.getsebool;
  if (!getsebool) return undefined;
  const [ran] = runSelinuxCommands([[getsebool, name]], {});
  return parseGetsebool(ran.stdout);
}

/**
 * The SELinux commands install runs (or prints) and records the undo of:
 * nothing where SELinux is off, or when nothing was written and the rule
 * and the boolean are in place already (a second install changes nothing).
 *
 * @example
 * ```ts
 * import { planInstallSelinux } from "./install_selinux.ts";
 * const steps = planInstallSelinux({
 *   root: "/", live: true, written: ["/etc/qemu-ga/fsfreeze-hook.d/vmsnap"],
 *   entrypoint: "/etc/qemu-ga/fsfreeze-hook.d/vmsnap", binary: "/usr/bin/vmsnap", setBoolean: false,
 * });
 * for (const argv of steps.commands) console.log(argv.join(" "));
 * ```
 */
export function planInstallSelinux(request: SelinuxRequest): SelinuxSteps {
  const state = detectSelinux({ root: request.root, live: request.live });
  if (state.mode === "absent" || state.mode === "disabled") {
    return { commands: [], undo: [], notes: [] };
  }
  const { entrypoint, binary } = request;
  const label = entrypoint
    ? planSelinux({ state, root: request.root, hook: entrypoint, binary, setBoolean: false })
    : undefined;
  const rule = label?.commands.find((argv) => argv[0] === "semanage");
  const relabel = [...new Set([...request.written, ...(rule && entrypoint ? [entrypoint] : [])])];
  const commands: string[][] = [];
  const undo: string[][] = [];
  if (rule) {
    commands.push(rule);
    undo.push(["semanage", "fcontext", "-d", rule[rule.length - 1]]);
  }
  if (relabel.length > 0) commands.push(["restorecon", "-v", ...relabel, binary]);
  const notes = label ? [label.notes[0]] : [];
  if (entrypoint) {
    const on = request.live ? booleanOn(state, QGA_UNCONFINED_BOOLEAN) : undefined;
    if (request.setBoolean && on !== true) {
      commands.push(["setsebool", "-P", QGA_UNCONFINED_BOOLEAN, "on"]);
      undo.push(["setsebool", "-P", QGA_UNCONFINED_BOOLEAN, "off"]);
    } else if (!request.setBoolean && on !== true) {
      notes.push(label!.notes[1]);
    }
  }
  const missing = [...new Set(commands.map((argv) => argv[0] as SelinuxTool))]
    .filter((tool) => !state.tools[tool]);
  if (missing.length > 0 && request.live) {
    throw new VmsnapError(
      "InstallFailed",
      `SELinux is ${state.mode} (${state.modeSource}), but ${missing.join(" and ")} ${
        missing.length > 1 ? "are" : "is"
      } missing, so the files just installed cannot be labelled; they are in place. Fix: install policycoreutils-python-utils (semanage) and policycoreutils, then run vmsnap install again (or run: ${
        commands.map((a) => a.map(sh).join(" ")).join(" && ")
      }).`,
    );
  }
  return { commands, undo, notes: notes.filter((n) => n) };
}

/**
 * Runs SELinux commands (each tool from where the system has it), stopping
 * at the first failure with an `InstallFailed` error naming it; returns the
 * commands run.
 *
 * @example
 * ```ts
 * import { runSelinuxSteps } from "./install_selinux.ts";
 * runSelinuxSteps({ root: "/", commands: [] });
 * ```
 */
export function runSelinuxSteps(options: { root: string; commands: string[][] }): string[][] {
  const state = detectSelinux({ root: options.root });
  const ran: string[][] = [];
  for (const argv of options.commands) {
    const program = state.tools[argv[0] as SelinuxTool] ?? argv[0];
    const [result] = runSelinuxCommands([[program, ...argv.slice(1)]], {});
    if (result.status !== 0) {
      throw new VmsnapError(
        "InstallFailed",
        `${argv.map(sh).join(" ")} failed (exit ${result.status}): ${
          (result.stderr || result.stdout).trim()
        }. Fix: run it by hand to see why, then run vmsnap install again.`,
      );
    }
    ran.push(argv);
  }
  return ran;
}
