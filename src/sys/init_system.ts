/**
 * Which init system starts the services of a target system (systemd or
 * OpenRC), and how OpenRC starts one service: `/etc/init.d/<svc>` with the
 * variables of `/etc/conf.d/<svc>` (openrc-run(8) sources conf.d before the
 * script, so the script's `${VAR:-default}` take conf.d's values).
 *
 * @module
 */
import { posix } from "node:path";
import { kindUnder, readUnder, resolveUnder } from "./under_root.ts";
import { parseEnvironmentFile, splitWords } from "./unit_file.ts";

/** An init system vmsnap knows how to enable a hook with. */
export type InitKind = "systemd" | "openrc" | "unknown";

/** What was found, and from which path. */
export interface InitSystem {
  kind: InitKind;
  /** The path that told (a path on the target system). */
  evidence?: string;
  /** Every path looked at. */
  looked: string[];
}

/** Paths that tell systemd, in the order they are looked at. */
const SYSTEMD_MARKS = ["/run/systemd/system", "/usr/lib/systemd/systemd", "/lib/systemd/systemd"];
/** Paths that tell OpenRC. */
const OPENRC_MARKS = ["/sbin/openrc-run", "/sbin/openrc", "/usr/sbin/openrc-run"];

/**
 * Finds the init system under a root: where `/sbin/init` leads (systemd or
 * OpenRC's init), else systemd's runtime directory or binary, else OpenRC's
 * `openrc-run`.
 *
 * @example
 * ```ts
 * import { detectInitSystem } from "./init_system.ts";
 * console.log(detectInitSystem({ root: "/" }).kind);
 * ```
 */
export function detectInitSystem(options: { root: string }): InitSystem {
  const { root } = options;
  const looked = ["/sbin/init"];
  const init = resolveUnder(root, "/sbin/init");
  if (init && posix.basename(init) === "systemd") {
    return { kind: "systemd", evidence: `/sbin/init -> ${init}`, looked };
  }
  if (init && posix.basename(init) === "openrc-init") {
    return { kind: "openrc", evidence: `/sbin/init -> ${init}`, looked };
  }
  for (const mark of SYSTEMD_MARKS) {
    looked.push(mark);
    if (kindUnder(root, mark).kind !== "missing") {
      return { kind: "systemd", evidence: mark, looked };
    }
  }
  for (const mark of OPENRC_MARKS) {
    looked.push(mark);
    if (kindUnder(root, mark).kind !== "missing") return { kind: "openrc", evidence: mark, looked };
  }
  return { kind: "unknown", looked };
}

/** An OpenRC service as its init script and conf.d file define it. */
export interface OpenrcService {
  name: string;
  /** `/etc/init.d/<name>`, when it exists. */
  script?: string;
  /** `/etc/conf.d/<name>`, when it exists. */
  confd?: string;
  /** The conf.d variables. */
  conf: Record<string, string>;
  /** `command=`, expanded. */
  command?: string;
  /** `command_args=` as written in the script. */
  rawArgs?: string;
  /** The arguments, conf.d's variables substituted and split into words. */
  args: string[];
  /** Variables the arguments use (conf.d may set them). */
  variables: string[];
  looked: string[];
}

/**
 * Substitutes `$VAR`, `${VAR}`, `${VAR:-default}` and `${VAR-default}` as
 * sh would, from the given variables.
 *
 * @example
 * ```ts
 * import { substitute } from "./init_system.ts";
 * substitute("-m ${GA_METHOD:-virtio-serial}", {}); // "-m virtio-serial"
 * ```
 */
export function substitute(text: string, vars: Record<string, string>): string {
  return text
    .replace(
      /\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?)-([^}]*))?\}/g,
      (_, name: string, colon: string, fallback?: string) => {
        const value = vars[name];
        if (fallback === undefined) return value ?? "";
        if (value === undefined || (colon === ":" && value === "")) return fallback;
        return value;
      },
    )
    .replace(/\$([A-Za-z_][A-Za-z0-9_]*)/g, (_, name: string) => vars[name] ?? "");
}

/** The variables a text uses (`$VAR`, `${VAR...}`). */
function variablesOf(text: string): string[] {
  return [...new Set([...text.matchAll(/\$\{?([A-Za-z_][A-Za-z0-9_]*)/g)].map((m) => m[1]))];
}

/** A top-level `name=value` or `name="value"` assignment of a shell script. */
function assignment(script: string, name: string): string | undefined {
  const line = script.split("\n").reverse().find((l) => new RegExp(`^\\s*${name}=`).test(l));
  if (!line) return undefined;
  const value = line.replace(new RegExp(`^\\s*${name}=`), "").trim();
  const quoted = value.match(/^"(.*)"$/) ?? value.match(/^'(.*)'$/);
  return quoted ? quoted[1] : value;
}

/**
 * Reads an OpenRC service under a root: its script's `command` and
 * `command_args`, with the conf.d file's variables substituted.
 *
 * @example
 * ```ts
 * import { readOpenrcService } from "./init_system.ts";
 * const svc = readOpenrcService({ root: "/", name: "qemu-guest-agent" });
 * console.log(svc.command, svc.args);
 * ```
 */
export function readOpenrcService(options: { root: string; name: string }): OpenrcService {
  const { root, name } = options;
  const scriptPath = `/etc/init.d/${name}`;
  const confdPath = `/etc/conf.d/${name}`;
  const script = readUnder(root, scriptPath);
  const confText = readUnder(root, confdPath);
  const conf = confText === undefined ? {} : parseEnvironmentFile(confText);
  const rawArgs = script === undefined ? undefined : assignment(script, "command_args");
  const command = script === undefined ? undefined : assignment(script, "command");
  return {
    name,
    script: script === undefined ? undefined : scriptPath,
    confd: confText === undefined ? undefined : confdPath,
    conf,
    command: command === undefined ? undefined : substitute(command, conf),
    rawArgs,
    args: rawArgs === undefined ? [] : splitWords(substitute(rawArgs, conf)),
    variables: rawArgs === undefined ? [] : variablesOf(rawArgs),
    looked: [scriptPath, confdPath],
  };
}
