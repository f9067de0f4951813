/**
 * A real qemu-guest-agent for the hook tests: `qemu-ga` listening on a unix
 * socket the test owns (not virtio), its fsfreeze hook in a test prefix, its
 * state and pid file in the test directory. Driven with QMP JSON lines.
 *
 * Safety: the client refuses `guest-fsfreeze-freeze` (which freezes every
 * filesystem of this machine and hangs it); tests use
 * `guest-fsfreeze-freeze-list` with their own loop mounts only.
 *
 * @module
 */
import { spawn } from "node:child_process";
import { existsSync, mkdirSync } from "node:fs";
import net from "node:net";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { waitFor } from "./helpers.ts";

/** Debian's hook script, which runs every executable in fsfreeze-hook.d. */
export const DEBIAN_FSFREEZE_HOOK = "/etc/qemu/fsfreeze-hook";

/** A running qemu-ga. */
export interface QemuGa {
  socket: string;
  pid: number;
  /** Sends one QMP command and resolves with its `return` (rejects on `error`). */
  qmp(execute: string, args?: Record<string, unknown>): Promise<unknown>;
  /** What qemu-ga printed. */
  output(): string;
  /** Thaws (in case), closes the connection and stops qemu-ga. */
  stop(): Promise<void>;
}

/**
 * Starts `qemu-ga -m unix-listen -p <dir>/qga.sock -F<hook> -t <dir>/qga-state`
 * (-F takes its path only when attached) in a private mount namespace where
 * the only test filesystems are those under `keep` (the test's own).
 *
 * @example
 * ```ts
 * import { startQemuGa } from "./qemu_ga.ts";
 * const ga = await startQemuGa({
 *   dir: "/var/lib/vmsnap-test/t-1",
 *   hook: "/var/lib/vmsnap-test/t-1/root/etc/qemu/fsfreeze-hook",
 *   keep: ["/var/lib/vmsnap-test/t-1"],
 * });
 * try {
 *   await ga.qmp("guest-fsfreeze-freeze-list", { mountpoints: ["/var/lib/vmsnap-test/t-1/data"] });
 * } finally {
 *   await ga.stop();
 * }
 * ```
 */
export async function startQemuGa(
  options: { dir: string; hook: string; keep: string[] },
): Promise<QemuGa> {
  const socket = join(options.dir, "qga.sock");
  const state = join(options.dir, "qga-state");
  mkdirSync(state, { recursive: true, mode: 0o700 });
  const qga = [
    "qemu-ga",
    "-m",
    "unix-listen",
    "-p",
    socket,
    `-F${options.hook}`,
    "-t",
    state,
    "-f",
    join(options.dir, "qga.pid"),
  ];
  // guest-fsfreeze-thaw thaws EVERY mount qemu-ga sees, not only what it froze. Other tests on
  // this machine freeze their own loop filesystems: in a private mount namespace, qemu-ga sees
  // none of them (only the system's mounts, which nobody freezes, and the ones in `keep`).
  const keep = options.keep.map((k) => `${k.replace(/\/+$/, "")}/`);
  const hide = [
    "awk '{print $5}' /proc/self/mountinfo | sort -r | while read -r m; do",
    '  case "$m" in',
    ...keep.map((k) => `    ${k}*) ;;`),
    '    /var/lib/vmsnap-test/*|/var/lib/vmsnap-dbtest/*|/var/lib/vmsnap-bench/*|/tmp/*) umount -l "$m" 2>/dev/null ;;',
    "  esac",
    "done",
    'exec "$@"',
  ].join("\n");
  const child = spawn(
    "unshare",
    ["--mount", "--propagation", "private", "/bin/sh", "-c", hide, "sh", ...qga],
    { stdio: ["ignore", "pipe", "pipe"] },
  );
  let output = "";
  child.stdout.on("data", (d) => (output += d));
  child.stderr.on("data", (d) => (output += d));
  let exited = false;
  child.on("exit", () => (exited = true));
  await waitFor("qemu-ga's socket", () => {
    if (exited) throw new Error(`qemu-ga exited: ${output}`);
    return existsSync(socket);
  });
  const { qmp, close } = await qmpClient(socket);
  return {
    socket,
    pid: child.pid!,
    qmp,
    output: () => output,
    async stop() {
      if (!exited) {
        try {
          if (await qmp("guest-fsfreeze-status") === "frozen") await qmp("guest-fsfreeze-thaw");
        } catch {
          // It is going anyway.
        }
      }
      close();
      if (!exited) {
        child.kill("SIGTERM");
        await waitFor("qemu-ga to stop", () => exited, 10_000).catch(() => child.kill("SIGKILL"));
      }
    },
  };
}

/** A QMP connection to a qemu-ga socket. */
export interface QmpClient {
  /** Sends one command and resolves with its `return` (rejects on `error` or a lost connection). */
  qmp(execute: string, args?: Record<string, unknown>): Promise<unknown>;
  /** Whether the agent closed the connection (it died, or was restarted). */
  closed(): boolean;
  close(): void;
}

/**
 * Connects to a qemu-ga unix socket. Refuses `guest-fsfreeze-freeze` (it would
 * freeze every filesystem qemu-ga sees).
 *
 * @example
 * ```ts
 * import { qmpClient } from "./qemu_ga.ts";
 * const { qmp, close } = await qmpClient("/var/lib/vmsnap-test/t-1/qga.sock");
 * await qmp("guest-ping");
 * close();
 * ```
 */
export async function qmpClient(socket: string): Promise<QmpClient> {
  const connection = net.connect(socket);
  await new Promise<void>((resolve, reject) => {
    connection.once("connect", resolve);
    connection.once("error", reject);
  });
  let lost = false;
  const pending: ((line: string | undefined) => void)[] = [];
  connection.on("error", () => {});
  connection.on("close", () => {
    lost = true;
    for (const answer of pending.splice(0)) answer(undefined);
  });
  createInterface({ input: connection }).on("line", (line) => pending.shift()?.(line));
  const qmp = (execute: string, args?: Record<string, unknown>) => {
    if (execute === "guest-fsfreeze-freeze") {
      throw new Error(
        "guest-fsfreeze-freeze freezes every filesystem of this machine; use guest-fsfreeze-freeze-list",
      );
    }
    return new Promise<unknown>((resolve, reject) => {
      if (lost) return reject(new Error(`${execute}: the agent closed the connection`));
      pending.push((line) => {
        if (line === undefined) {
          return reject(new Error(`${execute}: the agent closed the connection`));
        }
        const reply = JSON.parse(line);
        if (reply.error) reject(new Error(`${execute}: ${JSON.stringify(reply.error)}`));
        else resolve(reply.return);
      });
      connection.write(`${JSON.stringify({ execute, ...(args ? { arguments: args } : {}) })}\n`);
    });
  };
  return { qmp, closed: () => lost, close: () => connection.destroy() };
}
