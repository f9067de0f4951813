/**
 * How `vmsnap hook` talks to its holder: a unix socket in a root-only
 * directory under stateDir (`<stateDir>/hook`, mode 0700), JSON lines both
 * ways. Three locks on the door:
 *
 * - the directory: only root can reach the socket;
 * - the peer's credentials (`SO_PEERCRED`): a connection from any uid but 0
 *   is closed unanswered;
 * - a token: a random secret in a 0600 file next to the socket, sent with
 *   every request (so a confused deputy that can connect but not read root's
 *   files is refused too).
 *
 * The directory also holds `holder.json` (pid, start time, run id) to tell a
 * live holder from a dead one.
 *
 * @module
 */
import { Buffer } from "node:buffer";
import { randomBytes, timingSafeEqual } from "node:crypto";
import { chmodSync, lstatSync, mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import net from "node:net";
import { join } from "node:path";
import process from "node:process";
import { createInterface } from "node:readline";
import { ownerAlive, processStart } from "../sys/process_identity.ts";
import { peerCredentials } from "../sys/descriptors.ts";

/** Where the holder's files are. */
export interface HolderPaths {
  dir: string;
  socket: string;
  token: string;
  pidFile: string;
}

/** What `holder.json` says about the holder. */
export interface HolderInfo {
  pid: number;
  started: string;
  runId: string;
  agent: string;
  since: string;
}

/** Hook → holder. */
export type HolderRequest =
  | { op: "attach" }
  | { op: "thaw"; event: "thaw" | "freezeFail" }
  | { op: "abort"; reason: string };

/**
 * The paths under a stateDir.
 *
 * @example
 * ```ts
 * import { holderPaths } from "./channel.ts";
 * holderPaths("/var/lib/vmsnap").socket; // "/var/lib/vmsnap/hook/holder.sock"
 * ```
 */
export function holderPaths(stateDir: string): HolderPaths {
  const dir = join(stateDir, "hook");
  return {
    dir,
    socket: join(dir, "holder.sock"),
    token: join(dir, "token"),
    pidFile: join(dir, "holder.json"),
  };
}

/**
 * The live holder, if any: its `holder.json`, when that process still runs.
 *
 * @example
 * ```ts
 * import { holderPaths, liveHolder } from "./channel.ts";
 * const holder = liveHolder(holderPaths("/var/lib/vmsnap"));
 * ```
 */
export function liveHolder(paths: HolderPaths): HolderInfo | undefined {
  try {
    const info = JSON.parse(readFileSync(paths.pidFile, "utf8")) as HolderInfo;
    return ownerAlive(info) ? info : undefined;
  } catch {
    return undefined;
  }
}

/** Reads `holder.json` whether or not its process lives. */
export function lastHolder(paths: HolderPaths): HolderInfo | undefined {
  try {
    return JSON.parse(readFileSync(paths.pidFile, "utf8")) as HolderInfo;
  } catch {
    return undefined;
  }
}

/** Removes what a holder left (socket, token, pid file). */
export function clearHolderFiles(paths: HolderPaths): void {
  for (const path of [paths.socket, paths.token, paths.pidFile]) rmSync(path, { force: true });
}

/** A listening holder. */
export interface HolderServer {
  close(): void;
  /** How the peer was checked: "SO_PEERCRED" or "token only" (the runtime hid the descriptor). */
  readonly peerCheck: () => string;
}

/** One connection: its request, and a way to answer (one JSON line) and close. */
export interface HolderConnection {
  request: HolderRequest;
  answer(message: Record<string, unknown>): void;
  /** Resolves when the peer closes its end (or the connection breaks). */
  closed: Promise<void>;
  isClosed(): boolean;
}

/**
 * Creates the root-only directory, the token and `holder.json`, and listens.
 * Each accepted connection that passes the checks and sends a request is
 * handed to `onRequest`.
 *
 * @example
 * ```ts
 * import { holderPaths, listenForHooks } from "./channel.ts";
 * const server = await listenForHooks(holderPaths("/var/lib/vmsnap"), { runId: "r1", agent: "gcp" }, (c) => c.answer({ ok: true }));
 * ```
 */
export async function listenForHooks(
  paths: HolderPaths,
  about: { runId: string; agent: string },
  onRequest: (connection: HolderConnection) => void,
): Promise<HolderServer> {
  const token = freshHolderDir(paths);
  let peerCheck = "SO_PEERCRED";
  const server = net.createServer((socket) =>
    accept(socket, { token, onRequest, tokenOnly: () => (peerCheck = "token only") })
  );
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(paths.socket, () => resolve());
  });
  chmodSync(paths.socket, 0o600);
  const info: HolderInfo = {
    pid: process.pid,
    started: processStart(process.pid) ?? "",
    runId: about.runId,
    agent: about.agent,
    since: new Date().toISOString(),
  };
  writeFileSync(paths.pidFile, JSON.stringify(info), { mode: 0o600 });
  return {
    close() {
      server.close();
      clearHolderFiles(paths);
    },
    peerCheck: () => peerCheck,
  };
}

/** The root-only directory, cleared of an earlier holder's files, with a new token; returns it. */
function freshHolderDir(paths: HolderPaths): string {
  mkdirSync(paths.dir, { recursive: true, mode: 0o700 });
  chmodSync(paths.dir, 0o700);
  const stat = lstatSync(paths.dir);
  if (!stat.isDirectory() || stat.uid !== 0) {
    throw new Error(`${paths.dir} is not a directory owned by root`);
  }
  clearHolderFiles(paths);
  const token = randomBytes(32).toString("hex");
  writeFileSync(paths.token, token, { mode: 0o600 });
  return token;
}

/**
 * One accepted connection: closed unanswered unless its peer is root (or the
 * runtime hides the peer: `tokenOnly`) and its first line carries the token
 * and a request, which goes to `onRequest`.
 */
async function accept(
  socket: net.Socket,
  door: { token: string; onRequest(connection: HolderConnection): void; tokenOnly(): void },
): Promise<void> {
  socket.on("error", () => {});
  const peer = await peerCredentials(socket);
  if (peer === undefined) door.tokenOnly();
  else if (peer.uid !== 0) return void socket.destroy();
  let open = true;
  const closed = new Promise<void>((resolve) => {
    socket.on("close", () => {
      open = false;
      resolve();
    });
  });
  const lines = createInterface({ input: socket, crlfDelay: Infinity });
  lines.once("line", (line) => {
    let message: { token?: string; request?: HolderRequest };
    try {
      message = JSON.parse(line);
    } catch {
      return socket.destroy();
    }
    const given = Buffer.from(String(message.token ?? ""));
    const expected = Buffer.from(door.token);
    if (given.length !== expected.length || !timingSafeEqual(given, expected)) {
      return socket.destroy();
    }
    if (!message.request) return socket.destroy();
    door.onRequest({
      request: message.request,
      answer(answer) {
        if (!open) return;
        socket.end(`${JSON.stringify(answer)}\n`);
      },
      closed,
      isClosed: () => !open,
    });
  });
}

/** Why a request got no answer. */
export type NoAnswer = "no-holder" | "refused" | "timeout" | "closed";

/**
 * Sends one request and waits for the one-line answer, at most `timeoutMs`.
 *
 * @example
 * ```ts
 * import { askHolder, holderPaths } from "./channel.ts";
 * const reply = await askHolder(holderPaths("/var/lib/vmsnap"), { op: "thaw", event: "thaw" }, 30_000);
 * ```
 */
export function askHolder(
  paths: HolderPaths,
  request: HolderRequest,
  timeoutMs: number,
): Promise<
  { answer: Record<string, unknown> } | { failed: NoAnswer; detail: string; sent?: boolean }
> {
  let token: string;
  try {
    token = readFileSync(paths.token, "utf8");
  } catch (error) {
    return Promise.resolve({ failed: "no-holder", detail: (error as Error).message });
  }
  return new Promise((resolve) => {
    const socket = net.connect(paths.socket);
    let done = false;
    // The request reached the holder's socket (it acts on it even if its answer comes late).
    let sent = false;
    const finish = (
      value: { answer: Record<string, unknown> } | { failed: NoAnswer; detail: string },
    ) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      socket.destroy();
      resolve("failed" in value ? { ...value, sent } : value);
    };
    const timer = setTimeout(
      () => finish({ failed: "timeout", detail: `no answer within ${timeoutMs} ms` }),
      timeoutMs,
    );
    socket.on("error", (error: NodeJS.ErrnoException) =>
      finish({
        failed: error.code === "ENOENT" || error.code === "ECONNREFUSED" ? "no-holder" : "refused",
        detail: error.message,
      }));
    socket.on("connect", () => {
      socket.write(`${JSON.stringify({ token, request })}\n`, () => (sent = true));
    });
    const lines = createInterface({ input: socket, crlfDelay: Infinity });
    lines.once("line", (line) => {
      try {
        finish({ answer: JSON.parse(line) });
      } catch {
        finish({ failed: "refused", detail: `not JSON: ${line.slice(0, 200)}` });
      }
    });
    socket.on(
      "close",
      () =>
        finish({ failed: "closed", detail: "the holder closed the connection without an answer" }),
    );
  });
}
