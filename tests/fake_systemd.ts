/**
 * Just enough of systemd for a test of `vmsnap install --for qemu-ga` run
 * through qemu-ga's own `guest-exec` (this machine has no systemd): a
 * `qemu-guest-agent.service` whose processes live in their own cgroup
 * (`.../system.slice/qemu-guest-agent.service`, in the cgroup2 hierarchy and
 * in the `name=systemd` one), and `systemctl` / `systemd-run` commands on the
 * PATH the agent gives its children, served by the test process:
 *
 * - `systemctl [--no-block] restart|try-restart qemu-guest-agent[.service]`:
 *   as systemd does (KillMode=control-group), every process in the unit's
 *   cgroup is killed (the caller too, when it runs inside), then the agent is
 *   started again with the ExecStart of the drop-ins in
 *   `/etc/systemd/system/qemu-guest-agent.service.d/` (whether it passes
 *   `--fsfreeze-hook`). Without `--no-block` the command waits for the job.
 * - `systemctl daemon-reload`: nothing to do.
 * - `systemd-run [options] [--] CMD...`: CMD runs in a transient unit, outside
 *   the agent's cgroup (after `--on-active=SECONDS` when given).
 * - anything else: exit 1 ("unknown").
 *
 * Everything runs in a private view of the system (tests/private_system.ts),
 * so the install writes its files where it really would, on a copy.
 *
 * @module
 */
import { type ChildProcess, spawn } from "node:child_process";
import {
  existsSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  renameSync,
  rmdirSync,
  writeFileSync,
} from "node:fs";
import { join } from "node:path";
import process from "node:process";
import { alive, put, waitFor } from "./helpers.ts";
import type { PrivateSystem } from "./private_system.ts";

/** The unit's cgroup, in the cgroup2 hierarchy and in systemd's v1 one. */
const HIERARCHIES = ["/sys/fs/cgroup/unified", "/sys/fs/cgroup/systemd"];

/** The fake: the agent's unit, and what was asked of systemd. */
export interface FakeSystemd {
  /** The PATH to give the agent (the fake commands first). */
  path: string;
  /** The agent's current pid. */
  agentPid(): number;
  /** How many times the unit was restarted. */
  restarts(): number;
  /** Every command received, as argv. */
  requests(): string[][];
  /** The agent's command line (`/proc/<pid>/cmdline`). */
  agentCmdline(): string[];
  stop(): Promise<void>;
}

/** The fake commands: each hands its argv to the test and waits for the answer. */
function fakeCommand(spool: string): string {
  return [
    "#!/bin/sh",
    `spool="${spool}"`,
    'id="$$-$(date +%s%N)"',
    'printf "%s\\n" "$(basename "$0")" "$@" > "$spool/.$id"',
    'mv "$spool/.$id" "$spool/$id.req"',
    "i=0",
    'while [ ! -e "$spool/$id.done" ]; do sleep 0.05; i=$((i+1)); [ $i -gt 1200 ] && exit 1; done',
    'code=$(cat "$spool/$id.done"); rm -f "$spool/$id.done"',
    'exit "$code"',
    "",
  ].join("\n");
}

/** systemd-run's options that take a value as the next argument. */
const VALUED = new Set([
  "-u",
  "--unit",
  "-p",
  "--property",
  "--description",
  "--slice",
  "-E",
  "--setenv",
  "--uid",
  "--gid",
  "--working-directory",
  "--on-active",
  "--on-boot",
  "--on-calendar",
]);

/**
 * The command systemd-run starts, its `--on-active` delay (seconds), and
 * whether the caller waits for it (`--scope`, `--wait`).
 */
function systemdRunArgs(argv: string[]): { command: string[]; delay: number; wait: boolean } {
  let delay = 0;
  let wait = false;
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (arg === "--") return { command: argv.slice(i + 1), delay, wait };
    if (!arg.startsWith("-")) return { command: argv.slice(i), delay, wait };
    const [name, inline] = arg.split("=", 2);
    const value = inline ?? (VALUED.has(name) ? argv[++i] : undefined);
    if (name === "--on-active") delay = Number(value?.replace(/s$/, "") ?? 0);
    if (name === "--scope" || name === "--wait") wait = true;
  }
  return { command: [], delay, wait };
}

/**
 * Starts qemu-ga as `qemu-guest-agent.service` in the private view: `args`
 * are its base arguments (method, socket, state dir); `--fsfreeze-hook=...`
 * is added when a drop-in asks for it.
 */
export async function fakeSystemd(
  options: { dir: string; system: PrivateSystem; agentArgs: string[] },
): Promise<FakeSystemd> {
  const { system } = options;
  const spool = join(options.dir, "systemd-spool");
  const bin = join(options.dir, "systemd-bin");
  mkdirSync(spool, { recursive: true, mode: 0o700 });
  for (const name of ["systemctl", "systemd-run"]) put(join(bin, name), fakeCommand(spool), 0o755);
  const slice = `vmsnap-test-${process.pid}-${Date.now()}`;
  const cgroups = HIERARCHIES.map((h) =>
    join(h, slice, "system.slice", "qemu-guest-agent.service")
  );
  for (const cgroup of cgroups) mkdirSync(cgroup, { recursive: true });
  const path = `${bin}:/usr/sbin:/usr/bin:/sbin:/bin`;
  const requests: string[][] = [];
  const transient: ChildProcess[] = [];
  let agent: ChildProcess | undefined;
  let restarts = 0;

  const dropInHook = () => {
    const dir = system.path("/etc/systemd/system/qemu-guest-agent.service.d");
    if (!existsSync(dir)) return [];
    const execs = readdirSync(dir).sort().flatMap((name) =>
      readFileSync(join(dir, name), "utf8").split("\n").filter((l) => l.startsWith("ExecStart="))
    );
    const last = execs.at(-1) ?? "";
    const hook = last.match(/(?:--fsfreeze-hook=|-F)(\S+)/);
    return hook ? [`--fsfreeze-hook=${hook[1]}`] : [];
  };
  const start = () => {
    // Joins the unit's cgroups, then becomes qemu-ga, inside the private view.
    const enter = cgroups.map((c) => `echo $$ > "${c}/cgroup.procs"`).join("; ");
    agent = spawn(
      "nsenter",
      [
        `--mount=/proc/${system.pid}/ns/mnt`,
        "--",
        "/bin/sh",
        "-c",
        `${enter}; exec "$@"`,
        "sh",
        "qemu-ga",
        ...options.agentArgs,
        ...dropInHook(),
      ],
      { stdio: "ignore", env: { PATH: path, LANG: "C" }, cwd: "/" },
    );
  };
  const members = () =>
    readFileSync(join(cgroups[0], "cgroup.procs"), "utf8").split("\n").filter(Boolean).map(Number);
  const restart = async () => {
    // KillMode=control-group: SIGTERM to all, then SIGKILL to what is left.
    for (const pid of members()) process.kill(pid, "SIGTERM");
    await waitFor("the unit's processes to end", () => members().length === 0, 3000).catch(() => {
      writeFileSync(join(cgroups[0], "cgroup.kill"), "1");
    });
    await waitFor("the unit's cgroup to empty", () => members().length === 0, 5000);
    restarts++;
    start();
  };
  const transientRun = (argv: string[]): Promise<number> => {
    const { command, delay, wait } = systemdRunArgs(argv);
    return new Promise((resolve) => {
      setTimeout(() => {
        const child = spawn("nsenter", [`--mount=/proc/${system.pid}/ns/mnt`, "--", ...command], {
          stdio: "ignore",
          env: { PATH: path, LANG: "C" },
          cwd: "/",
        });
        transient.push(child);
        child.on("exit", (code) => wait && resolve(code ?? 1));
        child.on("error", () => resolve(1));
        if (!wait) resolve(0);
      }, Math.round(delay * 1000));
    });
  };
  const answer = (id: string, code: number) => writeFileSync(join(spool, `.${id}`), String(code));
  const handle = async (id: string, argv: string[]) => {
    const [command, ...rest] = argv;
    const args = rest.filter((a) => !a.startsWith("-"));
    const noBlock = rest.includes("--no-block");
    const done = (code: number) => {
      answer(id, code);
      renameSync(join(spool, `.${id}`), join(spool, `${id}.done`));
    };
    if (command === "systemd-run") return done(await transientRun(rest));
    if (args[0] === "daemon-reload") return done(0);
    if (
      ["restart", "try-restart"].includes(args[0]) && /^qemu-guest-agent(\.service)?$/.test(args[1])
    ) {
      if (noBlock) {
        done(0);
        await new Promise((r) => setTimeout(r, 200));
        return await restart();
      }
      await restart();
      return done(0);
    }
    done(1);
  };
  start();
  await waitFor("the agent in its unit's cgroup", () => members().length > 0, 5000);
  let running = true;
  const serve = (async () => {
    while (running) {
      for (const name of readdirSync(spool).filter((n) => n.endsWith(".req"))) {
        const id = name.slice(0, -4);
        const argv = readFileSync(join(spool, name), "utf8").split("\n").slice(0, -1);
        Deno.removeSync(join(spool, name));
        requests.push(argv);
        await handle(id, argv);
      }
      await new Promise((r) => setTimeout(r, 50));
    }
  })();
  return {
    path,
    agentPid: () => agent!.pid!,
    restarts: () => restarts,
    requests: () => requests,
    agentCmdline: () =>
      readFileSync(`/proc/${agent!.pid}/cmdline`, "utf8").split("\0").filter(Boolean),
    async stop() {
      running = false;
      await serve;
      for (const child of transient) if (child.pid && alive(child.pid)) child.kill("SIGKILL");
      try {
        writeFileSync(join(cgroups[0], "cgroup.kill"), "1");
      } catch {
        // already empty
      }
      await waitFor("the unit to end", () => members().length === 0, 5000).catch(() => {});
      for (const cgroup of cgroups) {
        for (const dir of [cgroup, join(cgroup, ".."), join(cgroup, "..", "..")]) {
          try {
            rmdirSync(dir);
          } catch {
            // still used, or gone
          }
        }
      }
    },
  };
}
