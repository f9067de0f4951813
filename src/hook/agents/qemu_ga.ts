/**
 * The QEMU guest agent (Proxmox, libvirt `--quiesce`, OpenStack). qemu-ga
 * freezes the filesystems itself; started with `-F`/`--fsfreeze-hook` it
 * first runs `/etc/qemu/fsfreeze-hook freeze`, which runs every file of
 * `/etc/qemu/fsfreeze-hook.d/` with the same word (and `thaw` after).
 * Install puts vmsnap's hook there and, when systemd starts qemu-ga without
 * the hook, a drop-in that adds it to the command line the unit (and the
 * admin's own drop-ins) give.
 *
 * @module
 */
import { basename, join } from "node:path";
import { DEFAULT_CONFIG_PATH } from "../../config/config.ts";
import {
  type AgentSpec,
  type InstallPlan,
  type PlanInput,
  type PlannedFile,
  type TargetSystem,
  wrapper,
} from "./agent.ts";

/** The drop-in that makes systemd start qemu-ga with its fsfreeze hook. */
const DROPIN = "/etc/systemd/system/qemu-guest-agent.service.d/vmsnap-fsfreeze-hook.conf";
/** Where systemd reads the unit's drop-ins, most important first. */
const DROPIN_DIRS = [
  "/etc/systemd/system/qemu-guest-agent.service.d",
  "/run/systemd/system/qemu-guest-agent.service.d",
  "/usr/local/lib/systemd/system/qemu-guest-agent.service.d",
  "/lib/systemd/system/qemu-guest-agent.service.d",
  "/usr/lib/systemd/system/qemu-guest-agent.service.d",
];
const UNITS = [
  "/etc/systemd/system/qemu-guest-agent.service",
  "/lib/systemd/system/qemu-guest-agent.service",
  "/usr/lib/systemd/system/qemu-guest-agent.service",
];
/** Debian's ExecStart, when no unit is found to read it from. */
const DEFAULT_EXEC = "-/usr/sbin/qemu-ga";
/** The script qemu-ga runs, which runs the files of fsfreeze-hook.d. */
const HOOK = "/etc/qemu/fsfreeze-hook";
/** vmsnap's file in it. */
const HOOK_FILE = "/etc/qemu/fsfreeze-hook.d/vmsnap";

/** Every ExecStart= of a unit file's text, in order ("" resets). */
function execStarts(text: string): string[] {
  return [...text.matchAll(/^\s*ExecStart\s*=(.*)$/gm)].map((m) => m[1].trim());
}

/** The unit's drop-ins by file name: the first directory that has a name wins, as in systemd. */
function dropins(system: TargetSystem): Map<string, string> {
  const found = new Map<string, string>();
  for (const dir of DROPIN_DIRS) {
    for (const name of system.list(dir) ?? []) {
      if (name.endsWith(".conf") && !found.has(name)) found.set(name, join(dir, name));
    }
  }
  return found;
}

/**
 * qemu-ga's command line as systemd runs it without vmsnap's drop-in: the
 * unit's ExecStart, then every drop-in's (by file name, as systemd orders
 * them), so an admin's override (say, --blacklist=guest-exec) is kept. Also
 * the drop-ins that come after vmsnap's and set ExecStart (they would win).
 */
function execStart(system: TargetSystem): { exec: string; after: string[] } {
  const unit = UNITS.map((u) => system.read(u)).find((u) => u !== undefined);
  let execs = unit === undefined ? [] : execStarts(unit);
  const ours = basename(DROPIN);
  const found = dropins(system);
  const after: string[] = [];
  for (const name of [...found.keys()].sort()) {
    if (name === ours) continue;
    const lines = execStarts(system.read(found.get(name)!) ?? "");
    if (lines.length === 0) continue;
    if (name > ours) after.push(found.get(name)!);
    else execs = [...execs, ...lines];
  }
  const last = execs.lastIndexOf("");
  const exec = execs.slice(last + 1)[0] ?? (unit === undefined ? DEFAULT_EXEC : "");
  return { exec: exec || DEFAULT_EXEC, after };
}

/** The drop-in that restarts qemu-ga with `--fsfreeze-hook`, on the command line it has. */
function dropin(exec: string): PlannedFile {
  return {
    path: DROPIN,
    content: [
      "# Installed by `vmsnap install --for qemu-ga`: start qemu-ga with its fsfreeze hook.",
      "# (-F takes its path only when attached: --fsfreeze-hook=PATH.)",
      "[Service]",
      "ExecStart=",
      `ExecStart=${exec} --fsfreeze-hook=${HOOK}`,
      "",
    ].join("\n"),
    mode: 0o644,
    dirMode: 0o755,
  };
}

/** The hook file, and the drop-in unless qemu-ga already starts with its hook. */
function plan({ system, hook }: PlanInput): InstallPlan {
  const files: PlannedFile[] = [{
    path: HOOK_FILE,
    content: wrapper({
      agent: "qemu-ga",
      purpose:
        "qemu-ga -F runs /etc/qemu/fsfreeze-hook freeze|thaw, which runs this file with the same word.",
      command: hook(),
      tail: ' -- "$1"',
    }),
    mode: 0o700,
    dirMode: 0o755,
  }];
  const notes: string[] = [];
  if (!system.exists(HOOK)) {
    notes.push(
      `${HOOK} is missing: install the qemu-guest-agent package, which ships the script that runs fsfreeze-hook.d.`,
    );
  }
  const { exec, after } = execStart(system);
  for (const name of after) {
    notes.push(
      `WARNING: the drop-in ${name} sets ExecStart after vmsnap's (${DROPIN}), so systemd uses its command line, without --fsfreeze-hook. Fix: add --fsfreeze-hook=${HOOK} there, or remove its ExecStart.`,
    );
  }
  if (/(^|\s)(-F|--fsfreeze-hook)/.test(exec)) {
    notes.push(`qemu-ga already starts with its fsfreeze hook (${exec}); no drop-in needed.`);
  } else {
    files.push(dropin(exec));
  }
  notes.push(
    "Debian's fsfreeze-hook always exits 0: a failed vmsnap freeze does not stop qemu-ga's freeze; vmsnap status and the log say what happened.",
  );
  return { files, notes };
}

/** The QEMU guest agent. */
export const qemuGa: AgentSpec = {
  name: "qemu-ga",
  title: "QEMU guest agent (Proxmox, libvirt --quiesce, OpenStack)",
  freezes: true,
  timeoutSeconds: 60,
  defaultConfig: DEFAULT_CONFIG_PATH,
  plan,
  // systemd reads the drop-in on daemon-reload; a running qemu-ga takes -F when restarted.
  reload: (system) =>
    system.exists("/run/systemd/system")
      ? [["systemctl", "daemon-reload"], ["systemctl", "try-restart", "qemu-guest-agent.service"]]
      : [],
};
