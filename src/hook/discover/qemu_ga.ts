/**
 * How the QEMU guest agent on a target system is set up, read from its files
 * under a root: the service that starts it (systemd unit with drop-ins and
 * environment files, or OpenRC script with conf.d), its effective command
 * line, its config file, the fsfreeze hook it will run (or none), the hook
 * directory that script runs, whether the freeze commands are blocked, and
 * how the hook is enabled on this system.
 *
 * Every answer names the paths it was read from; `looked` lists every path
 * looked at, so a caller can refuse with them and the flags to name the
 * right ones (`--hook-dir`, `--agent-config`).
 *
 * @module
 */
import { posix } from "node:path";
import { detectInitSystem, type InitSystem, readOpenrcService } from "../../sys/init_system.ts";
import { effectiveExecStart, loadUnit } from "../../sys/unit_file.ts";
import { kindUnder, readUnder } from "../../sys/under_root.ts";
import {
  blockedFreezeCommands,
  parseQemuGaArgs,
  parseQemuGaConfig,
  type QemuGaArgs,
} from "./qemu_ga_args.ts";
import { readHookDir } from "./hook_script.ts";

/** The systemd unit and OpenRC service names of the QEMU guest agent. */
export const QGA_SERVICE = "qemu-guest-agent";
/** Where the packages put the qemu-ga binary. */
const QGA_BINARIES = ["/usr/bin/qemu-ga", "/usr/sbin/qemu-ga"];
/** qemu-ga's short options that take a value as the next word. */
const VALUE_OPTIONS = "mplftbacs";
/** Where the packages put the fsfreeze-hook script (RHEL, Fedora: /etc/qemu-ga; Debian: /etc/qemu). */
const QGA_HOOK_SCRIPTS = ["/etc/qemu-ga/fsfreeze-hook", "/etc/qemu/fsfreeze-hook"];
/** The drop-in vmsnap writes when the unit has no hook variable to set. */
export const QGA_DROPIN_NAME = "vmsnap-fsfreeze-hook.conf";

/** The service that starts qemu-ga, as found. */
export interface QgaService {
  kind: "systemd" | "openrc" | "none";
  /** The unit file or init script (a path on the target system). */
  path?: string;
  /** systemd drop-ins applied, in order. */
  dropins: string[];
  /** Environment files read (`EnvironmentFile=`), or the OpenRC conf.d file. */
  envFiles: { path: string; found: boolean }[];
  /** The environment the command line was expanded with. */
  env: Record<string, string>;
  /** The command line as written (ExecStart= or command_args=). */
  raw?: string;
  /** Where the command line was read. */
  rawFrom?: string;
}

/** The fsfreeze hook qemu-ga will run. */
export interface QgaHook {
  /** The path qemu-ga runs, when a hook is enabled. */
  path?: string;
  /** Where the path came from. */
  source: "command-line" | "config-file" | "none";
  /** In words: the option or key, and the file it was read from. */
  detail: string;
  /** Set to /dev/null (the vendors' way to switch it off). */
  disabled: boolean;
  exists: boolean;
  executable: boolean;
}

/** How to enable the hook on this system. */
export interface QgaEnable {
  /**
   * `already`: qemu-ga already runs an existing hook. `sysconfig`: set a
   * variable of the unit's environment file. `systemd-dropin`: add a drop-in
   * that restarts qemu-ga with `--fsfreeze-hook=`. `openrc-confd`: set a
   * conf.d variable the init script passes to qemu-ga. `qemu-ga-conf`: set
   * `fsfreeze-hook` in qemu-ga's config file. `unknown`: no service found.
   */
  method: "already" | "sysconfig" | "systemd-dropin" | "openrc-confd" | "qemu-ga-conf" | "unknown";
  /** The file to change (a path on the target system). */
  file?: string;
  /** The variable or key to set in it. */
  variable?: string;
  detail: string;
}

/** The QEMU guest agent's setup on a target system. */
export interface QemuGaSetup {
  /** The qemu-ga binary, when found. */
  binary?: string;
  init: InitSystem;
  service: QgaService;
  /** qemu-ga's effective command line (variables expanded). */
  argv: string[];
  /** qemu-ga's CONFDIR (where its default hook and config file live), and why. */
  confdir: { path: string; why: string };
  /** qemu-ga's config file and its `[general]` keys. */
  config: { path: string; found: boolean; why: string; keys: Record<string, string> };
  hook: QgaHook;
  /** The default hook path (`-F` without a path), which a hook must be at if enabled that way. */
  defaultHook: string;
  /**
   * The hook script whose directory vmsnap's hook goes in: the hook qemu-ga
   * runs, else the first of qemu-ga's default and the packages' scripts that
   * exists (undefined when none does).
   */
  hookScript?: string;
  /** The directory the hook script runs every executable of, read from the script. */
  hookDir: { path?: string; detail: string; exists: boolean };
  /** Freeze commands disabled by block or allow lists, and by what. */
  rpc: { blockedFreeze: string[]; detail: string };
  enable: QgaEnable;
  /** Every path looked at. */
  looked: string[];
}

/** Finds qemu-ga's service under the root: a systemd unit or an OpenRC script. */
function findService(root: string, init: InitSystem, looked: string[]): QgaService {
  if (init.kind !== "openrc") {
    const unit = loadUnit({ root, name: `${QGA_SERVICE}.service` });
    looked.push(...unit.looked);
    const exec = unit.path ? effectiveExecStart({ root, unit }) : undefined;
    if (unit.path) {
      return {
        kind: "systemd",
        path: unit.path,
        dropins: unit.dropins,
        envFiles: exec?.environment.files ?? [],
        env: exec?.environment.env ?? {},
        raw: exec?.raw,
        rawFrom: exec?.file,
      };
    }
  }
  const svc = readOpenrcService({ root, name: QGA_SERVICE });
  looked.push(...svc.looked);
  if (init.kind !== "systemd" && svc.script) {
    return {
      kind: "openrc",
      path: svc.script,
      dropins: [],
      envFiles: [{ path: `/etc/conf.d/${QGA_SERVICE}`, found: svc.confd !== undefined }],
      env: svc.conf,
      raw: svc.rawArgs,
      rawFrom: svc.script,
    };
  }
  return { kind: "none", dropins: [], envFiles: [], env: {} };
}

/** The command line the service runs. */
function serviceArgv(root: string, service: QgaService): string[] {
  if (service.kind === "systemd") {
    const unit = loadUnit({ root, name: `${QGA_SERVICE}.service` });
    return effectiveExecStart({ root, unit })?.argv ?? [];
  }
  if (service.kind === "openrc") {
    const svc = readOpenrcService({ root, name: QGA_SERVICE });
    return [svc.command ?? "qemu-ga", ...svc.args];
  }
  return [];
}

/**
 * qemu-ga's CONFDIR: its build's sysconfdir plus suffix. RHEL builds with
 * `--with-suffix=qemu-kvm` (its data lands in /usr/share/qemu-kvm), every
 * other distribution with the default, /etc/qemu.
 */
function findConfdir(root: string, looked: string[]): { path: string; why: string } {
  for (const mark of ["/usr/share/qemu-kvm", "/etc/qemu-kvm"]) {
    looked.push(mark);
    if (kindUnder(root, mark).kind === "directory") {
      return { path: "/etc/qemu-kvm", why: `${mark} exists (RHEL's qemu-kvm build)` };
    }
  }
  return { path: "/etc/qemu", why: "qemu's default CONFDIR (no /usr/share/qemu-kvm)" };
}

/**
 * qemu-ga's config file: the one the admin names (`--agent-config`), else
 * `--config`, else `QGA_CONF` from the service's environment, else CONFDIR's.
 */
function findConfig(
  root: string,
  args: QemuGaArgs,
  service: QgaService,
  paths: { confdir: string; named?: string },
): QemuGaSetup["config"] {
  const confdir = paths.confdir;
  const [path, why] = paths.named
    ? [paths.named, "named with --agent-config"]
    : args.config
    ? [args.config, "--config on qemu-ga's command line"]
    : service.env.QGA_CONF
    ? [service.env.QGA_CONF, "QGA_CONF in the service's environment"]
    : [posix.join(confdir, "qemu-ga.conf"), "qemu-ga's default (CONFDIR/qemu-ga.conf)"];
  const text = readUnder(root, path);
  return { path, found: text !== undefined, why, keys: text ? parseQemuGaConfig(text) : {} };
}

/** The hook qemu-ga runs: the command line's `-F` wins over the config file's key. */
function findHook(
  root: string,
  args: QemuGaArgs,
  setup: Pick<QemuGaSetup, "config" | "service">,
  defaultHook: string,
): QgaHook {
  let path: string | undefined;
  let source: QgaHook["source"] = "none";
  let detail = "qemu-ga runs no fsfreeze hook: no -F/--fsfreeze-hook on its command line" +
    ` and no fsfreeze-hook in ${setup.config.path}`;
  if (args.hook !== undefined) {
    source = "command-line";
    path = args.hook === null || args.hook === "" ? defaultHook : args.hook;
    detail = args.hook === null || args.hook === ""
      ? `-F without a path on the command line (${setup.service.rawFrom}): qemu-ga's default ${defaultHook}`
      : `-F${args.hook} on the command line (${setup.service.rawFrom}${
        setup.service.raw?.includes("$") ? `, expanded from ${envFilesOf(setup.service)}` : ""
      })`;
  } else if (setup.config.keys["fsfreeze-hook"] !== undefined) {
    source = "config-file";
    path = setup.config.keys["fsfreeze-hook"] || undefined;
    detail = `fsfreeze-hook in ${setup.config.path}`;
  }
  const kind = path ? kindUnder(root, path) : undefined;
  return {
    path,
    source,
    detail,
    disabled: path === "/dev/null",
    exists: kind?.kind === "file",
    executable: kind?.executable ?? false,
  };
}

/** The environment files a service read, for messages. */
function envFilesOf(service: QgaService): string {
  return service.envFiles.filter((f) => f.found).map((f) => f.path).join(", ") || "its environment";
}

/** The variable an ExecStart's `-F` is built from (`-F${FSFREEZE_HOOK_PATHNAME}`). */
function hookVariable(raw: string | undefined): string | undefined {
  return raw?.match(/(?:^|\s)(?:-F|--fsfreeze-hook=)"?\$\{?([A-Za-z_][A-Za-z0-9_]*)/)?.[1];
}

/** The environment file that sets a variable (the last one read that sets it). */
function fileSetting(root: string, service: QgaService, variable: string): string | undefined {
  const files = service.envFiles.filter((f) => f.found).map((f) => f.path).reverse();
  return files.find((file) =>
    new RegExp(`^\\s*${variable}=`, "m").test(readUnder(root, file) ?? "")
  ) ??
    files[0];
}

/** How to enable the hook on this system. */
function chooseEnable(root: string, setup: Omit<QemuGaSetup, "enable" | "looked">): QgaEnable {
  const { service, hook } = setup;
  if (hook.path && !hook.disabled && hook.exists && hook.executable) {
    return { method: "already", detail: `qemu-ga already runs ${hook.path} (${hook.detail})` };
  }
  const variable = service.kind === "systemd" ? hookVariable(service.raw) : undefined;
  if (variable) {
    const file = fileSetting(root, service, variable);
    return {
      method: "sysconfig",
      file,
      variable,
      detail: `${service.path} starts qemu-ga with -F\${${variable}}: set ${variable} in ${file}`,
    };
  }
  if (service.kind === "systemd") {
    const file = posix.join("/etc/systemd/system", `${QGA_SERVICE}.service.d`, QGA_DROPIN_NAME);
    return {
      method: "systemd-dropin",
      file,
      detail: `${service.path} starts qemu-ga without -F: a drop-in adds --fsfreeze-hook`,
    };
  }
  if (service.kind === "openrc") return chooseOpenrc(root, setup);
  return {
    method: "unknown",
    detail: "no qemu-guest-agent service (systemd unit or OpenRC script) was found",
  };
}

/** OpenRC: a conf.d variable the script passes through, else qemu-ga's config file. */
function chooseOpenrc(root: string, setup: Omit<QemuGaSetup, "enable" | "looked">): QgaEnable {
  const svc = readOpenrcService({ root, name: QGA_SERVICE });
  // A variable that is an option's value (-m ${GA_METHOD}) cannot carry another option.
  const free = svc.variables.filter((name) =>
    !new RegExp(`-[${VALUE_OPTIONS}]\\s+"?\\$\\{?${name}\\b`).test(svc.rawArgs ?? "")
  );
  if (free.length > 0) {
    return {
      method: "openrc-confd",
      file: `/etc/conf.d/${QGA_SERVICE}`,
      variable: free[0],
      detail: `${svc.script} passes \$${free[0]} to qemu-ga: set it in /etc/conf.d/${QGA_SERVICE}`,
    };
  }
  return {
    method: "qemu-ga-conf",
    file: setup.config.path,
    variable: "fsfreeze-hook",
    detail:
      `${svc.script} passes no variable for extra options to qemu-ga: set fsfreeze-hook in ${setup.config.path} ([general])`,
  };
}

/** Which freeze commands are blocked, by the command line or the config file. */
function findBlocked(args: QemuGaArgs, config: QemuGaSetup["config"]): QemuGaSetup["rpc"] {
  const keys = config.keys;
  const fromConfig = [keys["block-rpcs"], keys.blacklist].filter((v) => v).join(",");
  const blocked = [...args.blocked, ...fromConfig.split(",").filter((s) => s.trim() !== "")];
  const allowed = args.allowed ??
    (keys["allow-rpcs"] !== undefined
      ? keys["allow-rpcs"].split(",").map((s) => s.trim()).filter((s) => s)
      : undefined);
  const blockedFreeze = blockedFreezeCommands({ blocked, allowed });
  const detail = blockedFreeze.length === 0
    ? "guest-fsfreeze-freeze and guest-fsfreeze-thaw are allowed"
    : `${blockedFreeze.join(" and ")} ${
      blockedFreeze.length > 1 ? "are" : "is"
    } disabled by qemu-ga's ${allowed ? "allow list (--allow-rpcs / allow-rpcs)" : "block list"}`;
  return { blockedFreeze, detail };
}

/**
 * Reads how the QEMU guest agent is set up under a root (`agentConfig`:
 * qemu-ga's config file, when the admin names it).
 *
 * @example
 * ```ts
 * import { discoverQemuGa } from "./qemu_ga.ts";
 * const qga = discoverQemuGa({ root: "/" });
 * console.log(qga.hook.path ?? "no hook", qga.hookDir.path, qga.enable.method);
 * ```
 */
export function discoverQemuGa(options: { root: string; agentConfig?: string }): QemuGaSetup {
  const { root } = options;
  const looked: string[] = [...QGA_BINARIES];
  const init = detectInitSystem({ root });
  looked.push(...init.looked);
  const service = findService(root, init, looked);
  const argv = serviceArgv(root, service);
  const binary = [argv[0], ...QGA_BINARIES].find((p) => p && kindUnder(root, p).kind === "file");
  const args = parseQemuGaArgs(argv);
  const confdir = findConfdir(root, looked);
  const config = findConfig(root, args, service, {
    confdir: confdir.path,
    named: options.agentConfig,
  });
  looked.push(config.path);
  const defaultHook = posix.join(confdir.path, "fsfreeze-hook");
  const hook = findHook(root, args, { config, service }, defaultHook);
  const candidates = [
    ...(hook.path && !hook.disabled ? [hook.path] : []),
    defaultHook,
    ...QGA_HOOK_SCRIPTS,
  ];
  looked.push(...candidates);
  const hookScript = candidates.find((p) => kindUnder(root, p).kind === "file");
  const hookDir = readHookDir({ root, script: hookScript ?? candidates[0] });
  const rpc = findBlocked(args, config);
  const partial = {
    binary,
    init,
    service,
    argv,
    confdir,
    config,
    hook,
    defaultHook,
    hookScript,
    hookDir,
    rpc,
  };
  return { ...partial, enable: chooseEnable(root, partial), looked: [...new Set(looked)] };
}

/**
 * What stands between this setup and qemu-ga running vmsnap's hook, each
 * with the fix (and the flag that names a path vmsnap could not find); empty
 * when the hook can be installed as found.
 *
 * @example
 * ```ts
 * import { discoverQemuGa, qemuGaProblems } from "./qemu_ga.ts";
 * for (const p of qemuGaProblems(discoverQemuGa({ root: "/" }))) console.log(p);
 * ```
 */
export function qemuGaProblems(setup: QemuGaSetup): string[] {
  const problems: string[] = [];
  const looked = (paths: string[]) => `looked at: ${paths.join(", ")}`;
  if (setup.service.kind === "none") {
    problems.push(
      `no qemu-guest-agent service was found (${
        looked(setup.looked.filter((p) => /qemu-guest-agent/.test(p)))
      }). Fix: install the qemu-guest-agent package, or name qemu-ga's config with --agent-config.`,
    );
  }
  if (!setup.hookDir.path || !setup.hookDir.exists) {
    const scripts = setup.looked.filter((p) => p.endsWith("/fsfreeze-hook"));
    problems.push(
      `no hook directory that qemu-ga's fsfreeze hook runs was found: ${setup.hookDir.detail} (${
        looked(scripts)
      }). Fix: name it with --hook-dir.`,
    );
  }
  if (setup.rpc.blockedFreeze.length > 0) {
    problems.push(
      `${setup.rpc.detail}, so no freeze reaches the hook. Fix: allow them in ${
        setup.service.envFiles.find((f) => f.found)?.path ?? setup.service.path ?? setup.config.path
      }.`,
    );
  }
  return problems;
}
