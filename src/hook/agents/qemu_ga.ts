/**
 * The QEMU guest agent (Proxmox, libvirt `--quiesce`, OpenStack). qemu-ga
 * freezes the filesystems itself; started with `-F`/`--fsfreeze-hook` it
 * first runs its hook with `freeze` (and `thaw` after). Where that hook is
 * qemu's hook script (Debian's `/etc/qemu/fsfreeze-hook`, RHEL's and
 * Fedora's `/etc/qemu-ga/fsfreeze-hook`), the script runs every file of its
 * hook directory with the same word: vmsnap's hook goes INTO that
 * directory, so the admin's own hooks keep running.
 *
 * What install finds on this system (src/hook/discover/qemu_ga.ts) decides
 * everything: where the hook goes and how the hook is switched on, the way
 * the distribution does it (a variable of `/etc/sysconfig/qemu-ga`, a
 * systemd drop-in, an OpenRC `conf.d` variable, `fsfreeze-hook` in
 * qemu-ga's config file). Where the distribution ships no hook script
 * (SUSE, Alpine), `-F` names vmsnap's hook file itself: nothing else was
 * running, the hook's exit status then reaches qemu-ga, and the file sits
 * in `fsfreeze-hook.d`, where a hook script installed later runs it. When
 * install cannot tell, it refuses with the paths it looked at and the flags
 * that name them (`--hook-dir`, `--agent-config`); it never replaces a
 * working hook.
 *
 * @module
 */
import { posix } from "node:path";
import { DEFAULT_CONFIG_PATH } from "../../config/config.ts";
import { VmsnapError } from "../../errors.ts";
import { readHookDir } from "../discover/hook_script.ts";
import {
  discoverQemuGa,
  type QemuGaSetup,
  QGA_DROPIN_NAME,
  QGA_SERVICE,
} from "../discover/qemu_ga.ts";
import { loadUnit, type UnitEntry, values } from "../../sys/unit_file.ts";
import { kindUnder } from "../../sys/under_root.ts";
import {
  type AgentSpec,
  type InstallPlan,
  type PlanInput,
  type PlannedFile,
  sh,
  type TargetSystem,
  wrapper,
} from "./agent.ts";
import { setEnvVar, setIniKey } from "./config_edit.ts";

/** The line that marks a file as vmsnap's hook. */
const MARK = "Installed by `vmsnap install --for qemu-ga`";
/** The hook scripts the packages ship, looked at when qemu-ga runs none yet. */
const RUNNERS = ["/etc/qemu-ga/fsfreeze-hook", "/etc/qemu/fsfreeze-hook"];
/** Where the drop-in goes. */
const DROPIN = posix.join("/etc/systemd/system", `${QGA_SERVICE}.service.d`, QGA_DROPIN_NAME);

/** Where vmsnap's hook goes, and the path `-F` must name for qemu-ga to run it. */
interface Placement {
  /** vmsnap's hook file. */
  hookFile: string;
  /** What qemu-ga must run: a hook script that runs the hook's directory, or the hook itself. */
  target: string;
  /** qemu-ga runs the target already: nothing to switch on. */
  enabled: boolean;
  /** What was found, in words. */
  found: string;
}

/** A refusal: what was found, every path looked at, and the flags that name what was not found. */
function cannotTell(setup: QemuGaSetup, what: string): VmsnapError {
  return new VmsnapError(
    "AgentSetupUnknown",
    `${what}; nothing was changed (looked at: ${
      setup.looked.join(", ")
    }). Fix: name the directory qemu-ga's hook script runs with --hook-dir DIR, or qemu-ga's config file with --agent-config FILE (vmsnap then sets fsfreeze-hook there), or install the qemu-guest-agent package.`,
  );
}

/** A hook script that runs a directory: the script, and the directory as it reads it. */
function runnerOf(root: string, script: string): { script: string; dir: string } | undefined {
  if (!kindUnder(root, script).executable) return undefined;
  const dir = readHookDir({ root, script }).path;
  return dir ? { script, dir } : undefined;
}

/** The line an admin's own hook script adds to call vmsnap (printed by the refusal). */
function hookLine(command: string[]): string {
  return `${command.map(sh).join(" ")} -- "$1"`;
}

/** Where the hook goes when qemu-ga already runs a hook. */
function placeEnabled(setup: QemuGaSetup, input: PlanInput): Placement {
  const running = setup.hook.path!;
  if (input.system.read(running)?.includes(MARK)) {
    return {
      hookFile: running,
      target: running,
      enabled: true,
      found: `qemu-ga runs vmsnap's hook ${running} (${setup.hook.detail})`,
    };
  }
  const dir = input.hookDir ?? setup.hookDir.path;
  if (!dir) {
    throw cannotTell(
      setup,
      `qemu-ga runs ${running} (${setup.hook.detail}), which runs no hook directory vmsnap can read (${setup.hookDir.detail}); vmsnap does not replace a hook that works. Or have ${running} call vmsnap itself: ${
        hookLine(input.hook())
      }`,
    );
  }
  return {
    hookFile: posix.join(dir, "vmsnap"),
    target: running,
    enabled: true,
    found: `qemu-ga runs ${running} (${setup.hook.detail}), which runs every file of ${dir}${
      input.hookDir ? " (--hook-dir)" : ""
    }`,
  };
}

/** Where the hook goes when qemu-ga runs none yet, and what `-F` will name. */
function placeDisabled(setup: QemuGaSetup, input: PlanInput): Placement {
  const { root } = input.system;
  const candidates = [...new Set([setup.defaultHook, ...RUNNERS])];
  const runners = candidates.map((s) => runnerOf(root, s)).filter((r) => r !== undefined);
  const before = setup.hook.disabled
    ? `qemu-ga's hook is switched off (${setup.hook.detail})`
    : setup.hook.path
    ? `qemu-ga's hook ${setup.hook.path} (${setup.hook.detail}) is ${
      setup.hook.exists ? "not executable" : "missing"
    }`
    : setup.hook.detail;
  if (input.hookDir) {
    const runner = runners.find((r) => r.dir === input.hookDir);
    const hookFile = posix.join(input.hookDir, "vmsnap");
    return {
      hookFile,
      target: runner?.script ?? hookFile,
      enabled: false,
      found: `${before}; --hook-dir ${input.hookDir}${
        runner ? `, run by ${runner.script}` : ", which no hook script runs"
      }`,
    };
  }
  if (runners.length > 0) {
    const [runner] = runners;
    return {
      hookFile: posix.join(runner.dir, "vmsnap"),
      target: runner.script,
      enabled: false,
      found: `${before}; ${runner.script} runs every file of ${runner.dir}`,
    };
  }
  // No hook script (SUSE, Alpine): vmsnap's hook is what qemu-ga runs.
  const dirs = [posix.join(setup.confdir.path, "fsfreeze-hook.d"), "/etc/qemu-ga/fsfreeze-hook.d"];
  const dir = dirs.find((d) => kindUnder(root, d).kind === "directory") ?? dirs[0];
  const hookFile = posix.join(dir, "vmsnap");
  return {
    hookFile,
    target: hookFile,
    enabled: false,
    found: `${before}; no hook script here (looked at ${
      candidates.join(", ")
    }): qemu-ga will run vmsnap's hook itself`,
  };
}

/** The entries of the unit and its drop-ins, without vmsnap's; and the drop-ins that come after it. */
function unitWithoutOurs(system: TargetSystem): { entries: UnitEntry[]; after: string[] } {
  const unit = loadUnit({ root: system.root, name: `${QGA_SERVICE}.service` });
  const entries = unit.entries.filter((e) => posix.basename(e.file) !== QGA_DROPIN_NAME);
  const after = unit.dropins.filter((d) =>
    posix.basename(d) > QGA_DROPIN_NAME &&
    values(unit.entries.filter((e) => e.file === d), "Service", "ExecStart").length > 0
  );
  return { entries, after };
}

/** Removes `-F...` and `--fsfreeze-hook...` from a command line as systemd reads it. */
function withoutHookOption(exec: string): string {
  return exec.replace(/(^|\s)(-F\S*|--fsfreeze-hook(=\S*)?)(?=\s|$)/g, "").trim();
}

/** The drop-in that makes systemd start qemu-ga with `--fsfreeze-hook=TARGET`. */
function dropin(system: TargetSystem, target: string): { file: PlannedFile; notes: string[] } {
  const { entries, after } = unitWithoutOurs(system);
  const exec = values(entries, "Service", "ExecStart")[0]?.value ?? "-/usr/sbin/qemu-ga";
  const notes = after.map((name) =>
    `WARNING: the drop-in ${name} sets ExecStart after vmsnap's (${DROPIN}), so systemd uses its command line, without --fsfreeze-hook. Fix: add --fsfreeze-hook=${target} there, or remove its ExecStart.`
  );
  const file: PlannedFile = {
    path: DROPIN,
    content: [
      "# Installed by `vmsnap install --for qemu-ga`: start qemu-ga with its fsfreeze hook.",
      "# (-F takes its path only when attached: --fsfreeze-hook=PATH.)",
      "[Service]",
      "ExecStart=",
      `ExecStart=${withoutHookOption(exec)} --fsfreeze-hook=${target}`,
      "",
    ].join("\n"),
    mode: 0o644,
    dirMode: 0o755,
    restart: true,
  };
  return { file, notes };
}

/** A file of the agent changed in place: the admin's mode kept. */
function edited(system: TargetSystem, path: string, content: string): PlannedFile {
  return { path, content, mode: system.mode(path) ?? 0o644, dirMode: 0o755, restart: true };
}

/** The files that make qemu-ga run `target`, the way this system starts it. */
function enableFiles(
  setup: QemuGaSetup,
  placement: Placement,
  input: PlanInput,
): { files: PlannedFile[]; notes: string[] } {
  const { system } = input;
  const { enable } = setup;
  const { target } = placement;
  const how = (file: string, what: string) => [`enabled by ${what} in ${file}`];
  if (enable.method === "sysconfig" && enable.file && enable.variable) {
    const text = setEnvVar(system.read(enable.file) ?? "", enable.variable, target);
    return {
      files: [edited(system, enable.file, text)],
      notes: how(enable.file, `${enable.variable}=${target}`),
    };
  }
  if (enable.method === "openrc-confd" && enable.file && enable.variable) {
    const current = withoutHookOption(setup.service.env[enable.variable] ?? "");
    const value = `${current ? `${current} ` : ""}--fsfreeze-hook=${target}`;
    const text = setEnvVar(system.read(enable.file) ?? "", enable.variable, value);
    return {
      files: [edited(system, enable.file, text)],
      notes: how(enable.file, `${enable.variable}="${value}"`),
    };
  }
  if (enable.method === "systemd-dropin" || enable.method === "sysconfig") {
    const { file, notes } = dropin(system, target);
    return { files: [file], notes: [...notes, ...how(file.path, `--fsfreeze-hook=${target}`)] };
  }
  const conf = input.agentConfig ?? (enable.method === "qemu-ga-conf" ? enable.file : undefined);
  if (conf) {
    const text = setIniKey(system.read(conf) ?? "", {
      section: "general",
      key: "fsfreeze-hook",
      value: target,
      separator: "=",
    });
    const unsure = enable.method === "unknown"
      ? [
        `no qemu-guest-agent service was found: make sure qemu-ga reads ${conf} (its default, or -c ${conf}).`,
      ]
      : [];
    return {
      files: [edited(system, conf, text)],
      notes: [...how(conf, `[general] fsfreeze-hook=${target}`), ...unsure],
    };
  }
  if (input.hookDir) {
    return {
      files: [],
      notes: [
        `WARNING: no qemu-guest-agent service was found, so vmsnap could not switch the hook on: make sure qemu-ga runs with -F${target}.`,
      ],
    };
  }
  throw cannotTell(setup, `${enable.detail}, so vmsnap cannot tell how to make qemu-ga run a hook`);
}

/** What qemu-ga's exit status handling means for the admin, for the placement chosen. */
function statusNote(placement: Placement): string {
  return placement.target === placement.hookFile
    ? "qemu-ga runs vmsnap's hook itself: its exit status reaches qemu-ga, so a freeze hook that fails (a plugin with continueBackupOnFailure false) makes the freeze, and the snapshot, fail."
    : `${placement.target} runs every file of ${
      posix.dirname(placement.hookFile)
    } and, as qemu's script does, exits 0 whatever they return: a failed vmsnap freeze does not stop qemu-ga's freeze; vmsnap status and the log say what happened.`;
}

/** The hook file, and what switches qemu-ga's hook on where it is not yet. */
function plan(input: PlanInput): InstallPlan {
  const setup = discoverQemuGa({ root: input.system.root, agentConfig: input.agentConfig });
  const service = setup.service.path
    ? `${setup.service.kind} ${setup.service.path}`
    : `no ${QGA_SERVICE} service`;
  const enabledAlready = setup.enable.method === "already";
  if (setup.service.kind === "none" && !enabledAlready && !input.hookDir && !input.agentConfig) {
    throw cannotTell(setup, `no ${QGA_SERVICE} service was found (systemd unit or OpenRC script)`);
  }
  const placement = enabledAlready ? placeEnabled(setup, input) : placeDisabled(setup, input);
  const files: PlannedFile[] = [{
    path: placement.hookFile,
    content: wrapper({
      agent: "qemu-ga",
      purpose: placement.target === placement.hookFile
        ? "qemu-ga -F runs this file with freeze|thaw."
        : `qemu-ga -F runs ${placement.target} freeze|thaw, which runs this file with the same word.`,
      command: input.hook(),
      tail: ' -- "$1"',
    }),
    mode: 0o700,
    dirMode: 0o755,
  }];
  const notes = [`found: ${service}; ${placement.found}.`];
  if (!placement.enabled) {
    const enabling = enableFiles(setup, placement, input);
    files.push(...enabling.files);
    notes.push(...enabling.notes);
  }
  if (setup.rpc.blockedFreeze.length > 0) {
    notes.push(
      `WARNING: ${setup.rpc.detail}, so qemu-ga refuses every freeze and never runs the hook. Fix: take them out of ${
        setup.service.envFiles.find((f) => f.found)?.path ?? setup.service.path ??
          setup.config.path
      }.`,
    );
  }
  notes.push(statusNote(placement));
  return { files, notes, selinuxEntrypoint: placement.hookFile };
}

/** The QEMU guest agent. */
export const qemuGa: AgentSpec = {
  name: "qemu-ga",
  title: "QEMU guest agent (Proxmox, libvirt --quiesce, OpenStack)",
  freezes: true,
  timeoutSeconds: 60,
  defaultConfig: DEFAULT_CONFIG_PATH,
  plan,
  service: { units: [`${QGA_SERVICE}.service`], openrc: [QGA_SERVICE], executables: ["qemu-ga"] },
};
