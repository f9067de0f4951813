/**
 * VMware Tools (open-vm-tools). vmtoolsd freezes the filesystems itself; for
 * a quiesced snapshot it first runs every file of
 * `/etc/vmware-tools/backupScripts.d/` with `freeze`, then `thaw` or
 * `freezeFail` (the directory is fixed in vmtoolsd). Install puts vmsnap's
 * hook there, gives it a `--timeout` below the quiesce limit of
 * `tools.conf` (`[vmbackup] timeout`), switches the scripts on where
 * `tools.conf` switched them off, and keeps the admin's legacy
 * `/usr/sbin/pre-freeze-script` and `post-thaw-script`, which vmtoolsd runs
 * before (freeze) and after (thaw) the directory's.
 *
 * @module
 */
import { DEFAULT_CONFIG_PATH } from "../../config/config.ts";
import { discoverVmware, type VmwareSetup } from "../discover/vmware.ts";
import {
  type AgentSpec,
  belowAgent,
  type InstallPlan,
  type PlanInput,
  type PlannedFile,
  wrapper,
} from "./agent.ts";
import { setIniKey } from "./config_edit.ts";

/** The hook's own timeout for VMware when tools.conf sets no lower limit. */
const HOOK_TIMEOUT = 60;

/**
 * VMware's quiesce limit from tools.conf (`[vmbackup] timeout`, seconds; 0
 * or absent: vmtoolsd's 15 minutes).
 *
 * @example
 * ```ts
 * import { vmwareQuiesceLimit } from "./vmware.ts";
 * vmwareQuiesceLimit({ timeout: "20" }); // 20
 * ```
 */
export function vmwareQuiesceLimit(vmbackup: Record<string, string>): number {
  const seconds = Number(vmbackup.timeout);
  return Number.isInteger(seconds) && seconds > 0 ? seconds : 900;
}

/** What was found, and the notes on the legacy scripts vmtoolsd also runs. */
function foundNotes(setup: VmwareSetup): string[] {
  const notes = [
    setup.service.path
      ? `found: ${setup.service.kind} ${setup.service.path}; vmtoolsd runs every file of ${setup.scriptsDir.path}.`
      : `VMware Tools was not found (looked at: ${
        setup.looked.join(", ")
      }); vmtoolsd runs ${setup.scriptsDir.path} once it is installed.`,
  ];
  for (const script of [setup.legacy.freeze, setup.legacy.thaw]) {
    if (!script.exists) continue;
    notes.push(
      script.executable
        ? `${script.path} (the admin's legacy script) is kept: vmtoolsd runs it ${
          script === setup.legacy.freeze ? "before vmsnap's freeze" : "after vmsnap's thaw"
        }.`
        : `WARNING: ${script.path} exists but is not executable: vmtoolsd fails the quiesce when it cannot run it. Fix: chmod 700 ${script.path}, or remove it.`,
    );
  }
  return notes;
}

/** The hook file, run with the event word (and an optional argument); the scripts switched on. */
function plan({ system, hook, agentConfig }: PlanInput): InstallPlan {
  const setup = discoverVmware({ root: system.root, toolsConf: agentConfig });
  const limit = vmwareQuiesceLimit(setup.toolsConf.vmbackup);
  const timeout = Math.min(HOOK_TIMEOUT, belowAgent(limit));
  const files: PlannedFile[] = [{
    path: `${setup.scriptsDir.path}/vmsnap`,
    content: wrapper({
      agent: "vmware",
      purpose:
        `vmtoolsd runs every file here with freeze, then thaw or freezeFail (and an optional argument); its quiesce limit is ${limit} s.`,
      command: [...hook(), "--timeout", String(timeout)],
      tail: ' -- "$@"',
    }),
    mode: 0o700,
    dirMode: 0o755,
  }];
  const notes = foundNotes(setup);
  if (!setup.execScripts) {
    const conf = setup.toolsConf.path;
    files.push({
      path: conf,
      content: setIniKey(system.read(conf) ?? "", {
        section: "vmbackup",
        key: "execScripts",
        value: "true",
        ignoreCase: true,
      }),
      mode: system.mode(conf) ?? 0o644,
    });
    notes.push(
      `${conf} had [vmbackup] execScripts off, so vmtoolsd ran no script: switched on (vmtoolsd rereads tools.conf by itself).`,
    );
  }
  return { files, notes };
}

/** VMware Tools. */
export const vmware: AgentSpec = {
  name: "vmware",
  title: "VMware Tools (open-vm-tools)",
  freezes: true,
  timeoutSeconds: HOOK_TIMEOUT,
  defaultConfig: DEFAULT_CONFIG_PATH,
  plan,
};
