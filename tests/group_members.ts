/**
 * Group members as separate processes for the tests (`tests/group_driver.ts`),
 * each optionally in its own network namespace hanging from a bridge on this
 * machine (where etcd listens too), so that `cut(i)` (`ip link set … down`
 * on the member's side of the bridge) separates one member from etcd the way
 * a failed network does: its packets go nowhere, its connections hang.
 *
 * @module
 */
import { type ChildProcess, execFileSync, spawn } from "node:child_process";
import { join } from "node:path";
import process from "node:process";
import { ROOT } from "./helpers.ts";
import type { DriverConfig } from "./group_driver.ts";

const DENO = join(ROOT, "node_modules", "deno", "deno");
const DRIVER = join(ROOT, "tests", "group_driver.ts");

/** One line the driver printed. */
export interface DriverEvent {
  ev: string;
  /** This machine's wall clock (ms) when the driver printed it. */
  wall: number;
  // deno-lint-ignore no-explicit-any
  [field: string]: any;
}

/** A member process. */
export interface MemberProcess {
  name: string;
  child: ChildProcess;
  events: DriverEvent[];
  stderr(): string;
  /** Resolves with the first event that matches (rejects after `timeoutMs`). */
  waitFor(match: (e: DriverEvent) => boolean, timeoutMs?: number): Promise<DriverEvent>;
  /** The first event that matches, if printed. */
  find(match: (e: DriverEvent) => boolean): DriverEvent | undefined;
  /** Resolves with the exit code (null when killed) when it exits. */
  exited: Promise<number | null>;
  /** Sends a signal (process.kill: Deno loses a child's exit after child.kill("SIGCONT")). */
  signal(signal: NodeJS.Signals): void;
}

/** A group event of the driver's (`ev: "group"`) of the given type. */
export const groupEvent = (type: string) => (e: DriverEvent) =>
  e.ev === "group" && e.event?.type === type;

/**
 * Starts a member driver under Deno, or the compiled `driver` binary
 * ({@linkcode compileDriver}), in network namespace `netns` when given.
 *
 * @example
 * ```ts
 * const m = startMember({ endpoints, group: "g", member: "a", members: ["a", "b"] });
 * await m.waitFor((e) => e.ev === "closed");
 * ```
 */
export function startMember(
  config: DriverConfig,
  options: { netns?: string; driver?: string } = {},
): MemberProcess {
  const argv = options.driver
    ? [options.driver, JSON.stringify(config)]
    : [DENO, "run", "-A", DRIVER, JSON.stringify(config)];
  const [command, ...args] = options.netns ? ["ip", "netns", "exec", options.netns, ...argv] : argv;
  const child = spawn(command, args, {
    env: { PATH: process.env.PATH ?? "/usr/bin:/bin", HOME: process.env.HOME ?? "/root" },
    stdio: ["ignore", "pipe", "pipe"],
  });
  const events: DriverEvent[] = [];
  const listeners = new Set<() => void>();
  let stderr = "";
  let buffered = "";
  child.stdout!.setEncoding("utf8");
  child.stdout!.on("data", (chunk: string) => {
    buffered += chunk;
    let newline: number;
    while ((newline = buffered.indexOf("\n")) >= 0) {
      const line = buffered.slice(0, newline);
      buffered = buffered.slice(newline + 1);
      try {
        events.push(JSON.parse(line) as DriverEvent);
      } catch {
        stderr += `(stdout) ${line}\n`;
      }
    }
    for (const listener of [...listeners]) listener();
  });
  child.stderr!.on("data", (chunk) => (stderr += chunk));
  const exited = new Promise<number | null>((resolve) => {
    child.on("exit", (code) => {
      for (const listener of [...listeners]) listener();
      resolve(code);
    });
  });
  const member: MemberProcess = {
    name: config.member,
    child,
    events,
    stderr: () => stderr,
    exited,
    find: (match) => events.find(match),
    signal: (signal) => {
      if (child.exitCode === null && child.signalCode === null) process.kill(child.pid!, signal);
    },
    waitFor: (match, timeoutMs = 20_000) =>
      new Promise((resolve, reject) => {
        const check = () => {
          const found = events.find(match);
          if (found) return done(() => resolve(found));
          if (child.exitCode !== null || child.signalCode !== null) {
            done(() =>
              reject(
                new Error(
                  `member ${config.member} exited without the event; events:\n${
                    events.map((e) => JSON.stringify(e)).join("\n")
                  }\nstderr:\n${stderr}`,
                ),
              )
            );
          }
        };
        const timer = setTimeout(() =>
          done(() =>
            reject(
              new Error(
                `member ${config.member}: no such event within ${timeoutMs} ms; events:\n${
                  events.map((e) => JSON.stringify(e)).join("\n")
                }\nstderr:\n${stderr}`,
              ),
            )
          ), timeoutMs);
        const done = (settle: () => void) => {
          clearTimeout(timer);
          listeners.delete(check);
          settle();
        };
        listeners.add(check);
        check();
      }),
  };
  return member;
}

/**
 * Compiles the driver with Bun (`bun build --compile`, as the vmsnap binary
 * is built) into `dir`: the protocol as it runs in the binary.
 */
export function compileDriver(dir: string): string {
  const outfile = join(dir, "group-driver");
  execFileSync(join(ROOT, "node_modules", "bun", "bin", "bun.exe"), [
    "build",
    "--compile",
    "--outfile",
    outfile,
    DRIVER,
  ], { cwd: ROOT, stdio: "pipe" });
  return outfile;
}

/** Kills every member still running and waits for them. */
export async function stopMembers(members: MemberProcess[]): Promise<void> {
  for (const m of members) {
    m.signal("SIGCONT");
    m.signal("SIGKILL");
  }
  await Promise.all(members.map((m) => m.exited));
}

/** Network namespaces for members, on a bridge whose address etcd can listen on. */
export interface MemberNet {
  /** The bridge's address on this machine (etcd listens there). */
  hostIp: string;
  /** The namespaces, one per member. */
  namespaces: string[];
  /** Cuts member `i` off (its side of the bridge down). */
  cut(i: number): void;
  /** Reconnects member `i`. */
  restore(i: number): void;
  /** Removes the namespaces, the links and the bridge. */
  cleanup(): void;
}

/**
 * Makes `count` network namespaces, each with a veth to a new bridge on a
 * private 10.231.x.0/24 subnet unused on this machine.
 */
export function makeMemberNet(count: number): MemberNet {
  const ip = (...args: string[]) => execFileSync("ip", args, { stdio: "pipe" });
  const tag = Math.floor(Math.random() * 0xffff).toString(16).padStart(4, "0");
  const used = execFileSync("ip", ["-4", "-o", "addr"], { encoding: "utf8" });
  let subnet = 0;
  do subnet = 1 + Math.floor(Math.random() * 250); while (used.includes(`10.231.${subnet}.`));
  const bridge = `vsgb${tag}`;
  const hostSide = (i: number) => `vsg${tag}h${i}`;
  const namespaces = Array.from({ length: count }, (_, i) => `vsg${tag}m${i}`);
  const net: MemberNet = {
    hostIp: `10.231.${subnet}.1`,
    namespaces,
    cut: (i) => ip("link", "set", hostSide(i), "down"),
    restore: (i) => ip("link", "set", hostSide(i), "up"),
    cleanup: () => {
      for (const [i, ns] of namespaces.entries()) {
        try {
          ip("link", "del", hostSide(i));
        } catch { /* already gone */ }
        try {
          ip("netns", "del", ns);
        } catch { /* already gone */ }
      }
      try {
        ip("link", "del", bridge);
      } catch { /* already gone */ }
    },
  };
  try {
    ip("link", "add", bridge, "type", "bridge");
    ip("addr", "add", `${net.hostIp}/24`, "dev", bridge);
    ip("link", "set", bridge, "up");
    for (const [i, ns] of namespaces.entries()) {
      ip("netns", "add", ns);
      ip("link", "add", hostSide(i), "type", "veth", "peer", "name", `vsg${tag}p${i}`);
      ip("link", "set", `vsg${tag}p${i}`, "netns", ns);
      ip("link", "set", hostSide(i), "master", bridge);
      ip("link", "set", hostSide(i), "up");
      ip("-n", ns, "addr", "add", `10.231.${subnet}.${10 + i}/24`, "dev", `vsg${tag}p${i}`);
      ip("-n", ns, "link", "set", `vsg${tag}p${i}`, "up");
      ip("-n", ns, "link", "set", "lo", "up");
    }
  } catch (error) {
    net.cleanup();
    throw error;
  }
  return net;
}
