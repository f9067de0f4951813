/**
 * Restarting a backup agent after install or uninstall changed a file it
 * reads only when it starts (qemu-ga's `-F`, Google's
 * `instance_configs.cfg`), on the running system, with the init system that
 * runs it: systemd (`systemctl daemon-reload`, `systemctl try-restart`) or
 * OpenRC (`rc-service --ifstarted ... restart`).
 *
 * When vmsnap itself runs under that agent (`vmsnap install --for qemu-ga`
 * sent through qemu-ga's `guest-exec`: vmsnap is qemu-ga's child, in its
 * cgroup), a restart now would kill vmsnap with the agent and lose its
 * answer (qemu-ga keeps `guest-exec-status` in memory). The restart is then
 * queued to run outside the agent after a delay, once the answer has been
 * read: a transient systemd service (`systemd-run /bin/sh -c "sleep N;
 * exec systemctl try-restart ..."`), or under OpenRC a detached `sleep;
 * rc-service` in its own session.
 *
 * @module
 */
import { spawn, spawnSync } from "node:child_process";
import { existsSync, readFileSync, readlinkSync } from "node:fs";
import { posix } from "node:path";
import process from "node:process";
import { AGENT_RESTART_DELAY_SECONDS } from "../defaults.ts";
import { loadUnit } from "../sys/unit_file.ts";
import { readOpenrcService } from "../sys/init_system.ts";
import type { AgentService } from "./agents/agent.ts";

/** The init system running now: systemd's and OpenRC's runtime directories tell. */
export type RunningInit = "systemd" | "openrc" | "none";

/** How the agent is restarted: commands run now, one queued for later, or words for the admin. */
export interface RestartPlan {
  /** Run in order, now. */
  now: string[][];
  /** Run once, detached, `delaySeconds` from now (under systemd, the transient unit waits itself). */
  detached?: { argv: string[]; delaySeconds: number };
  /** What is done, in words. */
  say: string;
}

/**
 * The init system that runs this machine now (not the one a `--root`
 * image boots with).
 *
 * @example
 * ```ts
 * import { runningInit } from "./agent_restart.ts";
 * runningInit(); // "systemd" on a machine booted with systemd
 * ```
 */
export function runningInit(): RunningInit {
  if (existsSync("/run/systemd/system")) return "systemd";
  if (existsSync("/run/openrc")) return "openrc";
  return "none";
}

/** A process's parent pid, from /proc/<pid>/stat (the field after the command's parenthesis). */
function parentOf(pid: number): number | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    return Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]);
  } catch {
    return undefined;
  }
}

/** A process's executable name (its exe link, else its comm). */
function executableOf(pid: number): string | undefined {
  try {
    return posix.basename(readlinkSync(`/proc/${pid}/exe`).replace(/ \(deleted\)$/, ""));
  } catch {
    try {
      return readFileSync(`/proc/${pid}/comm`, "utf8").trim();
    } catch {
      return undefined;
    }
  }
}

/**
 * Whether this process runs under the agent: in a cgroup of the agent's
 * unit (systemd kills all of it on a restart), or a descendant of a
 * process running the agent's executable.
 *
 * @example
 * ```ts
 * import { insideAgent } from "./agent_restart.ts";
 * insideAgent({ units: ["qemu-guest-agent.service"], openrc: [], executables: ["qemu-ga"] });
 * ```
 */
export function insideAgent(service: AgentService): boolean {
  let cgroups = "";
  try {
    cgroups = readFileSync("/proc/self/cgroup", "utf8");
  } catch {
    // no /proc: look at the parents only
  }
  const inUnit = cgroups.split("\n").some((line) =>
    line.split(":").slice(2).join(":").split("/").some((part) => service.units.includes(part))
  );
  if (inUnit) return true;
  let pid = parentOf(process.pid);
  for (let depth = 0; pid !== undefined && pid > 1 && depth < 64; depth++) {
    const exe = executableOf(pid);
    // A comm is cut at 15 characters (google_guest_agent's is google_guest_ag).
    const matches = (name: string) => exe === name || (exe?.length === 15 && name.startsWith(exe));
    if (exe && service.executables.some(matches)) {
      return true;
    }
    pid = parentOf(pid);
  }
  return false;
}

/**
 * How to restart the agent's service: the first of its units (systemd) or
 * services (OpenRC) installed under the root, restarted only if it runs
 * (`try-restart`, `--ifstarted`); queued after `delaySeconds` when vmsnap
 * runs inside the agent.
 *
 * @example
 * ```ts
 * import { planRestart } from "./agent_restart.ts";
 * const plan = planRestart({
 *   root: "/",
 *   service: { units: ["qemu-guest-agent.service"], openrc: ["qemu-guest-agent"], executables: ["qemu-ga"] },
 *   init: "systemd",
 *   inside: true,
 * });
 * console.log(plan.say);
 * ```
 */
export function planRestart(
  options: {
    root: string;
    service: AgentService;
    init: RunningInit;
    inside: boolean;
    delaySeconds?: number;
  },
): RestartPlan {
  const { root, service, init, inside } = options;
  const delay = options.delaySeconds ?? AGENT_RESTART_DELAY_SECONDS;
  if (init === "systemd") {
    const unit = service.units.find((name) => loadUnit({ root, name }).path) ?? service.units[0];
    const restart = ["systemctl", "try-restart", unit];
    if (!inside) {
      return { now: [["systemctl", "daemon-reload"], restart], say: `restarted ${unit}` };
    }
    // A transient service of its own (outside the agent's cgroup) that waits, then restarts.
    const queued = [
      "systemd-run",
      `--description=vmsnap install: restart ${unit} in ${delay} s`,
      "/bin/sh",
      "-c",
      `sleep ${delay}; exec ${restart.join(" ")}`,
    ];
    return {
      now: [["systemctl", "daemon-reload"], queued],
      say:
        `${unit} restarts in ${delay} s, from a transient systemd service outside its cgroup: this command runs inside it (guest-exec), and a restart now would kill it before its answer is read`,
    };
  }
  if (init === "openrc") {
    const name = service.openrc.find((n) => readOpenrcService({ root, name: n }).script) ??
      service.openrc[0];
    const restart = ["rc-service", "--ifstarted", name, "restart"];
    if (!inside) return { now: [restart], say: `restarted ${name}` };
    return {
      now: [],
      detached: { argv: restart, delaySeconds: delay },
      say:
        `${name} restarts in ${delay} s, from a process of its own session: this command runs inside it (guest-exec), and a restart now would lose its answer`,
    };
  }
  const unit = service.units[0];
  return {
    now: [],
    say:
      `no running systemd or OpenRC was found: restart the agent yourself (systemctl restart ${unit}, or rc-service ${
        service.openrc[0]
      } restart) for the change to take effect`,
  };
}

/** One command run: its argv and exit status. */
export interface RanRestart {
  argv: string[];
  status: number | null;
  detail?: string;
}

/**
 * Runs a restart plan: the commands now, in order (stopping at a failure),
 * then the detached one, which outlives this process.
 *
 * @example
 * ```ts
 * import { planRestart, runRestart } from "./agent_restart.ts";
 * const service = { units: ["google-guest-agent.service"], openrc: [], executables: ["google_guest_agent"] };
 * runRestart(planRestart({ root: "/", service, init: "none", inside: false }));
 * ```
 */
export function runRestart(plan: RestartPlan): RanRestart[] {
  const ran: RanRestart[] = [];
  for (const argv of plan.now) {
    const result = spawnSync(argv[0], argv.slice(1), {
      stdio: ["ignore", "ignore", "pipe"],
      encoding: "utf8",
      timeout: 120_000,
    });
    const detail = (result.stderr ?? "").trim() || (result.error ? String(result.error) : "");
    ran.push({ argv, status: result.status, ...(detail ? { detail } : {}) });
    if (result.status !== 0) return ran;
  }
  if (plan.detached) {
    const { argv, delaySeconds } = plan.detached;
    // `sleep N; exec CMD`, in a session of its own (spawn's detached: setsid), reading nothing.
    const script = `sleep ${delaySeconds}; exec "$@"`;
    const child = spawn("/bin/sh", ["-c", script, "vmsnap-restart", ...argv], {
      detached: true,
      stdio: "ignore",
      cwd: "/",
    });
    child.unref();
    ran.push({ argv: ["sh", "-c", script, ...argv], status: 0 });
  }
  return ran;
}
