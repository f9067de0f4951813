/**
 * The private world verify works in: a mount, PID and network namespace
 * (`unshare --mount --net --pid --fork --kill-child`) whose first process
 * is `cat` reading verify's end of a pipe. Every command runs inside it
 * through `nsenter`; a tmpfs on the work directory holds the mounts, the
 * overlays' upper layers and the servers' sockets.
 *
 * The namespace ends with its first process: when verify closes the pipe
 * (or dies, SIGKILL included, and the kernel closes it), `cat` exits, the
 * kernel kills every process left in the PID namespace (the servers), and
 * the mount namespace, with every mount in it, goes with its last process.
 * Mount propagation is private before anything is mounted (checked), so no
 * mount ever shows outside.
 *
 * @module
 */
import { type ChildProcess, spawn } from "node:child_process";
import { readFileSync, readlinkSync } from "node:fs";
import process from "node:process";
import { processStart } from "../sys/process_identity.ts";
import { VerifyError } from "./codes.ts";
import { settle } from "./ledger.ts";
import { findTool } from "./tools.ts";

/** What a command got. */
export interface Ran {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  /** Killed by its timeout. */
  timedOut: boolean;
}

/** Resource limits of a process (prlimit); sizes in bytes. */
export interface Limits {
  /** RLIMIT_AS: address space. */
  addressSpace?: number;
  /** RLIMIT_NOFILE. */
  openFiles?: number;
  /** RLIMIT_NPROC (counts the user's processes machine-wide). */
  processes?: number;
  /** RLIMIT_FSIZE: the largest file the process may write. */
  fileSize?: number;
}

/** How a command runs inside. */
export interface InsideOptions {
  /** chroot into this directory (a path inside the namespace). */
  root?: string;
  /** Run as this user and its groups (a name from /etc/passwd). */
  user?: string;
  limits?: Limits;
  /** Niceness (0 to 19). */
  nice?: number;
}

/** A process started inside that runs until it is stopped. */
export interface Started {
  /** Its pid as the host sees it (0 until known). */
  pid(): number;
  /** Resolves when it exits. */
  exited: Promise<Ran>;
  /** True once it exited. */
  done(): boolean;
  /** What it wrote so far (the last 256 KiB of each stream). */
  output(): { stdout: string; stderr: string };
  /** SIGKILL and wait for it. */
  kill(): Promise<void>;
}

/** This process's hard limits by prlimit's name (a limit can only be lowered without CAP_SYS_RESOURCE). */
function hardLimits(): Record<string, number> {
  const names: Record<string, string> = {
    "Max address space": "as",
    "Max open files": "nofile",
    "Max processes": "nproc",
    "Max file size": "fsize",
  };
  const out: Record<string, number> = {};
  try {
    for (const line of readFileSync("/proc/self/limits", "utf8").split("\n")) {
      const name = Object.keys(names).find((n) => line.startsWith(n));
      if (!name) continue;
      const hard = line.slice(26).trim().split(/\s+/)[1];
      out[names[name]] = hard === "unlimited" ? Infinity : Number(hard);
    }
  } catch {
    // no /proc: ask for what was asked
  }
  return out;
}

/** prlimit's arguments for some limits, never above this process's hard limits. */
function rlimitArgs(limits: Limits): string[] {
  const hard = hardLimits();
  const wanted: [string, number | undefined][] = [
    ["as", limits.addressSpace],
    ["nofile", limits.openFiles],
    ["nproc", limits.processes],
    ["fsize", limits.fileSize],
  ];
  return wanted.filter(([, value]) => value !== undefined).map(([name, value]) =>
    `--${name}=${Math.min(value!, hard[name] ?? Infinity)}`
  );
}

/**
 * A user's uid and primary gid from /etc/passwd (the group need not share the
 * user's name: Debian's nobody is in nogroup).
 *
 * @example
 * ```ts
 * import { userIds } from "./sandbox.ts";
 * userIds("nobody"); // { uid: 65534, gid: 65534 }
 * ```
 */
export function userIds(name: string): { uid: number; gid: number } {
  for (const line of readFileSync("/etc/passwd", "utf8").split("\n")) {
    const [user, , uid, gid] = line.split(":");
    if (user === name) return { uid: Number(uid), gid: Number(gid) };
  }
  throw new VerifyError(
    "VerifyServerNotFound",
    `the service user ${name} does not exist here. Fix: install the server's package (it creates the user), or name another user in the verify options (users).`,
  );
}

/** The environment of everything run inside: nothing of verify's own. */
const ENV = {
  PATH: "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
  LANG: "C",
  LC_ALL: "C",
  HOME: "/nonexistent",
};

/** The most of each output stream kept (the tail). */
const KEEP_BYTES = 256 << 10;

/** Appends to a tail-limited buffer. */
function keep(buffer: string, chunk: string): string {
  const joined = buffer + chunk;
  return joined.length > KEEP_BYTES ? joined.slice(joined.length - KEEP_BYTES) : joined;
}

/** A required tool's path, or a coded error naming the package. */
function tool(name: string): string {
  const path = findTool(name);
  if (!path) {
    throw new VerifyError(
      "VerifyNamespaceFailed",
      `${name} is not installed (vmsnap's PATH). Fix: install util-linux and coreutils.`,
    );
  }
  return path;
}

/**
 * One shell word for any text (single quotes).
 *
 * @example
 * ```ts
 * import { shellQuote } from "./sandbox.ts";
 * shellQuote("it's"); // "'it'\\''s'"
 * ```
 */
export function shellQuote(text: string): string {
  return `'${text.replace(/'/g, "'\\''")}'`;
}

/** Whether `promise` settles within `ms` (its timer cleared either way: it keeps no process alive). */
async function within(promise: Promise<unknown>, ms: number): Promise<boolean> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const late = new Promise<false>((resolve) => (timer = setTimeout(() => resolve(false), ms)));
  try {
    return await Promise.race([promise.then(() => true), late]);
  } finally {
    clearTimeout(timer);
  }
}

/** The children of a process (first thread's list). */
function childrenOf(pid: number): number[] {
  try {
    return readFileSync(`/proc/${pid}/task/${pid}/children`, "utf8").trim().split(/\s+/)
      .filter(Boolean).map(Number);
  } catch {
    return [];
  }
}

/** A process's name, or "" when it is gone. */
function commOf(pid: number): string {
  try {
    return readFileSync(`/proc/${pid}/comm`, "utf8").trim();
  } catch {
    return "";
  }
}

/** What to record about the namespace as it comes up. */
export interface SandboxHooks {
  /** Called with the anchor and first process as soon as they are known (before any mount). */
  started(anchor: { pid: number; started: string }, init: {
    pid: number;
    started: string;
    mntNs: string;
  }): void;
}

/** The namespace and the commands run in it. */
export class Sandbox {
  private closed = false;

  private constructor(
    private readonly anchor: ChildProcess,
    private readonly anchorExit: Promise<void>,
    /** The namespace's first process (host pid). */
    readonly initPid: number,
    /** Its mount namespace (`mnt:[…]`). */
    readonly mntNs: string,
  ) {}

  /**
   * Makes the namespaces and waits until their first process runs with
   * private propagation.
   *
   * @example
   * ```ts
   * import { Sandbox } from "./sandbox.ts";
   * const sandbox = await Sandbox.open({ started: () => {} });
   * try { await sandbox.run(["true"]); } finally { await sandbox.close(); }
   * ```
   */
  static async open(hooks: SandboxHooks): Promise<Sandbox> {
    const unshare = tool("unshare");
    const cat = tool("cat");
    const anchor = spawn(unshare, [
      "--mount",
      "--net",
      "--pid",
      "--fork",
      "--kill-child",
      "--propagation",
      "private",
      "--",
      cat,
    ], { stdio: ["pipe", "ignore", "pipe"], env: ENV });
    let stderr = "";
    anchor.stderr!.on("data", (d) => (stderr = keep(stderr, String(d))));
    anchor.stdin!.on("error", () => {});
    const anchorExit = new Promise<void>((resolve) => anchor.on("close", () => resolve()));
    const fail = (why: string): never => {
      anchor.kill("SIGKILL");
      throw new VerifyError(
        "VerifyNamespaceFailed",
        `cannot make the private namespaces: ${why}${stderr ? ` (${stderr.trim()})` : ""}.`,
      );
    };
    let init = 0;
    const up = await settle(() => {
      if (anchor.exitCode !== null || anchor.signalCode !== null) return true;
      init = childrenOf(anchor.pid!).find((pid) => commOf(pid) === "cat") ?? 0;
      return init !== 0;
    }, 10_000);
    if (!up || init === 0) fail(up ? "unshare exited" : "unshare did not start its process");
    const own = readlinkSync("/proc/self/ns/mnt");
    const mntNs = readlinkSync(`/proc/${init}/ns/mnt`);
    if (mntNs === own) fail("the new process shares verify's mount namespace");
    if (/ shared:\d+/.test(readFileSync(`/proc/${init}/mountinfo`, "utf8"))) {
      fail("a mount in the new namespace still propagates to the host");
    }
    hooks.started(
      { pid: anchor.pid!, started: processStart(anchor.pid!) ?? "" },
      { pid: init, started: processStart(init) ?? "", mntNs },
    );
    return new Sandbox(anchor, anchorExit, init, mntNs);
  }

  /**
   * A path inside the namespace as this process can reach it
   * (`/proc/<init>/root/…`). Only for files verify wrote or reads itself:
   * a symbolic link met on the way resolves on the host.
   */
  path(inside: string): string {
    return `/proc/${this.initPid}/root${inside}`;
  }

  /** The argv that runs `argv` inside, as asked. */
  private argv(argv: string[], options: InsideOptions, timeoutMs?: number): string[] {
    const out = [tool("nsenter"), "--target", String(this.initPid), "--mount", "--net", "--pid"];
    out.push("--");
    if (timeoutMs !== undefined) {
      out.push(tool("timeout"), "--kill-after=5", `${Math.ceil(timeoutMs / 1000)}`);
    }
    if (options.root) out.push(tool("chroot"), options.root);
    if (options.limits) out.push(tool("prlimit"), "--core=0", ...rlimitArgs(options.limits), "--");
    if (options.user) {
      const { uid, gid } = userIds(options.user);
      out.push(tool("setpriv"), `--reuid=${uid}`, `--regid=${gid}`);
      out.push("--init-groups", "--inh-caps=-all", "--no-new-privs", "--");
    }
    if (options.nice) out.push(tool("nice"), "-n", String(options.nice));
    return [...out, ...argv];
  }

  /**
   * Runs a command inside and waits for it (killed after `timeoutMs`,
   * default 10 minutes).
   *
   * @example
   * ```ts
   * import type { Sandbox } from "./sandbox.ts";
   * declare const sandbox: Sandbox;
   * const ran = await sandbox.run(["mount", "-t", "tmpfs", "x", "/mnt"]);
   * ```
   */
  run(
    argv: string[],
    options: InsideOptions & { timeoutMs?: number; input?: string } = {},
  ): Promise<Ran> {
    const timeoutMs = options.timeoutMs ?? 600_000;
    const [command, ...args] = this.argv(argv, options, timeoutMs);
    return new Promise((resolve) => {
      const child = spawn(command, args, { stdio: ["pipe", "pipe", "pipe"], env: ENV });
      let stdout = "";
      let stderr = "";
      child.stdout!.on("data", (d) => (stdout = keep(stdout, String(d))));
      child.stderr!.on("data", (d) => (stderr = keep(stderr, String(d))));
      child.stdin!.on("error", () => {});
      child.stdin!.end(options.input ?? "");
      child.on("error", (error) => {
        resolve({ code: null, signal: null, stdout, stderr: String(error), timedOut: false });
      });
      child.on("close", (code, signal) => {
        // timeout(1) exits 124 when it stopped the command, 137 when it had to kill it.
        resolve({ code, signal, stdout, stderr, timedOut: code === 124 || code === 137 });
      });
    });
  }

  /**
   * Runs shell commands inside as one `sh -c` (each argv quoted; the first
   * that fails stops the rest and is named on stderr): dozens of mounts
   * cost one process start instead of dozens.
   *
   * @example
   * ```ts
   * import type { Sandbox } from "./sandbox.ts";
   * declare const sandbox: Sandbox;
   * await sandbox.script([["mkdir", "-p", "/w/a"], ["mount", "-t", "tmpfs", "x", "/w/a"]]);
   * ```
   */
  script(lines: (string[] | { sh: string })[], timeoutMs = 120_000): Promise<Ran> {
    const text = lines.map((line) => {
      const command = "sh" in line ? line.sh : line.map(shellQuote).join(" ");
      return `${command} || { echo ${shellQuote(`failed: ${command}`)} >&2; exit 1; }`;
    }).join("\n");
    return this.run(["/bin/sh", "-c", text], { timeoutMs });
  }

  /**
   * Starts a long-running process inside (a database server).
   *
   * @example
   * ```ts
   * import type { Sandbox } from "./sandbox.ts";
   * declare const sandbox: Sandbox;
   * const server = sandbox.start(["redis-server", "--port", "0"], { user: "redis" });
   * await server.kill();
   * ```
   */
  start(argv: string[], options: InsideOptions = {}): Started {
    const [command, ...args] = this.argv(argv, options);
    const child = spawn(command, args, { stdio: ["ignore", "pipe", "pipe"], env: ENV });
    let stdout = "";
    let stderr = "";
    let pid = 0;
    let finished = false;
    child.stdout!.on("data", (d) => (stdout = keep(stdout, String(d))));
    child.stderr!.on("data", (d) => (stderr = keep(stderr, String(d))));
    const exited = new Promise<Ran>((resolve) => {
      child.on("error", (error) => {
        finished = true;
        resolve({ code: null, signal: null, stdout, stderr: String(error), timedOut: false });
      });
      child.on("close", (code, signal) => {
        finished = true;
        resolve({ code, signal, stdout, stderr, timedOut: false });
      });
    });
    // nsenter forks the command into the PID namespace: its one child is the server.
    const serverPid = () => pid || (pid = childrenOf(child.pid ?? 0)[0] ?? 0);
    return {
      pid: serverPid,
      exited,
      done: () => finished,
      output: () => ({ stdout, stderr }),
      async kill() {
        await settle(() => finished || serverPid() !== 0, 2_000);
        const target = serverPid();
        if (target && !finished) {
          try {
            process.kill(target, "SIGKILL");
          } catch {
            // already gone
          }
        }
        if (!await within(exited, 10_000)) child.kill("SIGKILL");
      },
    };
  }

  /**
   * Ends the namespace: closes the pipe (its first process exits, the kernel
   * kills what is left and unmounts everything) and waits for the last of
   * its processes.
   */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.anchor.stdin!.end();
    if (!await within(this.anchorExit, 10_000)) {
      this.anchor.kill("SIGKILL");
      await this.anchorExit;
    }
  }
}
