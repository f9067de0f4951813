/**
 * How VMware Tools (open-vm-tools) on a target system runs freeze scripts,
 * read under a root. vmtoolsd's vmbackup plugin (services/plugins/vmbackup:
 * scriptOps.c, stateMachine.c) runs, on a quiesced snapshot:
 *
 * - the legacy `/usr/sbin/pre-freeze-script` first (and `/usr/sbin/post-thaw-script`
 *   last), when either exists;
 * - every regular file of `/etc/vmware-tools/backupScripts.d`, sorted by
 *   name, with `freeze`, then `thaw` or `freezeFail` in reverse order;
 * - unless `[vmbackup] execScripts = false` in `tools.conf` (read for the
 *   host's plain `vmbackup.start`; the host's `startWithOpts` carries its
 *   own execScripts).
 *
 * @module
 */
import { kindUnder, readUnder } from "../../sys/under_root.ts";
import { type AgentService, findAgentService } from "./agent_service.ts";
import { iniBool, parseIni } from "./ini.ts";

/** vmtoolsd's configuration directory on Linux (GuestApp_GetConfPath). */
export const VMWARE_CONF_DIR = "/etc/vmware-tools";
/** The directory vmtoolsd runs every file of. */
export const VMWARE_SCRIPTS_DIR = `${VMWARE_CONF_DIR}/backupScripts.d`;
/** The legacy scripts vmtoolsd still runs (scriptOps.c LEGACY_FREEZE_SCRIPT / LEGACY_THAW_SCRIPT). */
export const VMWARE_LEGACY = {
  freeze: "/usr/sbin/pre-freeze-script",
  thaw: "/usr/sbin/post-thaw-script",
};

/** A file vmtoolsd may run. */
export interface ScriptFile {
  path: string;
  exists: boolean;
  executable: boolean;
}

/** VMware Tools' setup on a target system. */
export interface VmwareSetup {
  binary?: string;
  service: AgentService;
  /** `tools.conf`: whether found, and its `[vmbackup]` keys (lowercased). */
  toolsConf: { path: string; found: boolean; vmbackup: Record<string, string> };
  /** `[vmbackup] execScripts`: false when tools.conf switches the scripts off. */
  execScripts: boolean;
  /** The scripts directory and whether it exists. */
  scriptsDir: { path: string; exists: boolean };
  /** The legacy scripts, which run before (freeze) and after (thaw) the directory's. */
  legacy: { freeze: ScriptFile; thaw: ScriptFile };
  looked: string[];
}

function scriptFile(root: string, path: string): ScriptFile {
  const kind = kindUnder(root, path);
  return { path, exists: kind.kind === "file", executable: kind.executable };
}

/**
 * Reads VMware Tools' setup under a root (`toolsConf`: tools.conf, when the
 * admin names it).
 *
 * @example
 * ```ts
 * import { discoverVmware } from "./vmware.ts";
 * const vm = discoverVmware({ root: "/" });
 * console.log(vm.service.path ?? "no vmtoolsd", vm.execScripts, vm.legacy.freeze.exists);
 * ```
 */
export function discoverVmware(options: { root: string; toolsConf?: string }): VmwareSetup {
  const { root } = options;
  const service = findAgentService({
    root,
    units: ["vmtoolsd.service", "open-vm-tools.service"],
    openrc: ["open-vm-tools", "vmtoolsd"],
  });
  const binaries = [service.argv[0], "/usr/bin/vmtoolsd"].filter((p): p is string => !!p);
  const binary = binaries.find((p) => kindUnder(root, p).kind === "file");
  const confPath = options.toolsConf ?? `${VMWARE_CONF_DIR}/tools.conf`;
  const text = readUnder(root, confPath);
  const vmbackup = text === undefined ? {} : parseIni(text).vmbackup ?? {};
  return {
    binary,
    service,
    toolsConf: { path: confPath, found: text !== undefined, vmbackup },
    execScripts: iniBool(vmbackup.execscripts) ?? true,
    scriptsDir: {
      path: VMWARE_SCRIPTS_DIR,
      exists: kindUnder(root, VMWARE_SCRIPTS_DIR).kind === "directory",
    },
    legacy: {
      freeze: scriptFile(root, VMWARE_LEGACY.freeze),
      thaw: scriptFile(root, VMWARE_LEGACY.thaw),
    },
    looked: [
      ...binaries,
      ...service.looked,
      confPath,
      VMWARE_SCRIPTS_DIR,
      VMWARE_LEGACY.freeze,
      VMWARE_LEGACY.thaw,
    ],
  };
}
