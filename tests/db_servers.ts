/**
 * Real database servers for the plugin tests: MariaDB and PostgreSQL, each on
 * a loop-mounted filesystem the test makes, on a private socket. `stop()` in
 * a `finally`.
 *
 * @module
 */
import { execFileSync, spawn, spawnSync } from "node:child_process";
import {
  chmodSync,
  chownSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  openSync,
  rmSync,
  writeFileSync,
} from "node:fs";
import process from "node:process";
import { join } from "node:path";
import { connect, createServer, type Socket } from "node:net";
import { type LoopFs, makeLoopFs } from "./loop.ts";
import assert from "node:assert/strict";
import { alive, codes, resultOf, runBin, startBin, waitFor } from "./helpers.ts";
import type { RunFixture } from "./run_fixture.ts";

/**
 * A write from another session to MariaDB, started now; resolves with how long
 * it took, or Infinity when it failed or did not finish within `limitMs`.
 */
export function mariadbWrite(socket: string, sql: string, limitMs = 5000): Promise<number> {
  return timedCommand("mariadb", ["--no-defaults", `--socket=${socket}`, "-e", sql], limitMs);
}

/**
 * Runs a client command now; resolves with how long it took, or Infinity
 * when it failed or did not finish within `limitMs` (then it is killed).
 */
export function timedCommand(command: string, args: string[], limitMs = 5000): Promise<number> {
  return new Promise((resolve) => {
    const started = performance.now();
    const child = spawn(command, args, { stdio: "ignore" });
    const timer = setTimeout(() => {
      child.kill("SIGKILL");
      resolve(Infinity);
    }, limitMs);
    child.on("exit", (code) => {
      clearTimeout(timer);
      resolve(code === 0 ? performance.now() - started : Infinity);
    });
  });
}

/** PostgreSQL's binaries. */
export const PG_BIN = "/usr/lib/postgresql/15/bin";
const PG_UID = Number(execFileSync("id", ["-u", "postgres"], { encoding: "utf8" }).trim());
const PG_GID = Number(execFileSync("id", ["-g", "postgres"], { encoding: "utf8" }).trim());

/**
 * A directory other users may traverse (PostgreSQL runs as `postgres`), under
 * which the servers' filesystems are mounted. vmsnap's own files stay in the
 * root-only test directories.
 */
export function dbDir(): { dir: string; cleanup(): void } {
  mkdirSync("/var/lib/vmsnap-dbtest", { recursive: true, mode: 0o711 });
  chmodSync("/var/lib/vmsnap-dbtest", 0o711);
  const dir = mkdtempSync("/var/lib/vmsnap-dbtest/d-");
  chmodSync(dir, 0o711);
  return { dir, cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}

/** A running server. */
export interface DbServer {
  /** The filesystem the data lives on (freeze this one). */
  fs: LoopFs;
  pid: number;
  /** Runs SQL as the superuser and returns the output (tab-separated, no headers). */
  sql(query: string): string;
  /** Stops the server cleanly. */
  stop(): Promise<void>;
  /** SIGKILL. */
  kill(): void;
}

/**
 * MariaDB on its own loop filesystem, socket `<mount>/mysqld.sock`, binary
 * logging on. With `image`, the server starts on a copy of another server's
 * filesystem (a restored snapshot) instead of a new one.
 */
export async function startMariaDb(
  dir: string,
  name = "mariadb",
  options: { image?: string } = {},
): Promise<DbServer & { socket: string }> {
  const fs = makeLoopFs({ dir, name, sizeMiB: 256, image: options.image });
  const data = join(fs.mountPoint, "data");
  const socket = join(fs.mountPoint, "mysqld.sock");
  // A private temporary directory, off the frozen filesystem: the shared /tmp may be cleaned
  // under the server (mariadb-install-db then fails removing its temporary tables).
  const tmp = join(dir, `${name}-tmp`);
  mkdirSync(tmp, { recursive: true, mode: 0o700 });
  try {
    if (!options.image) {
      execFileSync("mariadb-install-db", [
        "--no-defaults",
        "--user=root",
        `--datadir=${data}`,
        `--tmpdir=${tmp}`,
        "--auth-root-authentication-method=socket",
        "--skip-test-db",
      ], { stdio: "pipe" });
    }
  } catch (error) {
    fs.cleanup();
    throw error;
  }
  const server = spawn("mariadbd", [
    "--no-defaults",
    "--user=root",
    `--datadir=${data}`,
    `--socket=${socket}`,
    `--tmpdir=${tmp}`,
    `--pid-file=${join(fs.mountPoint, "mysqld.pid")}`,
    "--skip-networking",
    "--log-bin=binlog",
    "--server-id=1",
    "--innodb-buffer-pool-size=32M",
    "--innodb-log-file-size=16M",
    `--log-error=${join(fs.mountPoint, "error.log")}`,
  ], { stdio: "ignore", detached: true });
  const sql = (query: string) =>
    execFileSync("mariadb", ["--no-defaults", `--socket=${socket}`, "-N", "-B", "-e", query], {
      encoding: "utf8",
      stdio: ["ignore", "pipe", "pipe"],
    }).trim();
  const pid = server.pid!;
  try {
    await waitFor("MariaDB to accept connections", () => {
      if (!alive(pid)) throw new Error(`mariadbd exited; see ${join(fs.mountPoint, "error.log")}`);
      return existsSync(socket) &&
        spawnSync("mariadb", ["--no-defaults", `--socket=${socket}`, "-e", "SELECT 1"]).status ===
          0;
    }, 30_000);
  } catch (error) {
    process.kill(pid, "SIGKILL");
    fs.cleanup();
    throw error;
  }
  return {
    fs,
    pid,
    socket,
    sql,
    async stop() {
      if (alive(pid)) {
        process.kill(pid, "SIGTERM");
        await waitFor("mariadbd to stop", () => !alive(pid), 30_000).catch(() =>
          process.kill(pid, "SIGKILL")
        );
      }
      fs.cleanup();
    },
    kill: () => process.kill(pid, "SIGKILL"),
  };
}

/** PostgreSQL 15 on its own loop filesystem, socket directory = the mount point. */
export async function startPostgres(
  dir: string,
  options: {
    name?: string;
    port?: number;
    conf?: string[];
    /** Start on this image (a restored snapshot) instead of a new cluster. */
    image?: string;
    /** Called with the data directory before the server starts (restore files). */
    prepare?: (data: string) => void;
  } = {},
): Promise<DbServer & { socketDir: string; port: number; logFile: string }> {
  const fs = makeLoopFs({ dir, name: options.name ?? "pg", sizeMiB: 256, image: options.image });
  const port = options.port ?? 54000 + Math.floor(Math.random() * 1000);
  chownSync(fs.mountPoint, PG_UID, PG_GID);
  chmodSync(fs.mountPoint, 0o755);
  const data = join(fs.mountPoint, "data");
  const asPostgres = (command: string, args: string[], opts: Record<string, unknown> = {}) =>
    execFileSync("setpriv", [
      "--reuid=postgres",
      "--regid=postgres",
      "--init-groups",
      command,
      ...args,
    ], { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"], ...opts });
  const logFile = join(dir, `${options.name ?? "pg"}.log`);
  try {
    if (options.image) {
      options.prepare?.(data);
      for (const stale of ["postmaster.pid"]) rmSync(join(data, stale), { force: true });
    } else {
      asPostgres(join(PG_BIN, "initdb"), [
        "-D",
        data,
        "-A",
        "trust",
        "-U",
        "postgres",
        "--no-sync",
      ]);
      writeFileSync(
        join(data, "pg_hba.conf"),
        "local all pwuser scram-sha-256\nlocal all all trust\n",
      );
      writeFileSync(join(data, "postgresql.auto.conf"), [...(options.conf ?? []), ""].join("\n"));
      options.prepare?.(data);
    }
  } catch (error) {
    fs.cleanup();
    throw error;
  }
  const server = spawn("setpriv", [
    "--reuid=postgres",
    "--regid=postgres",
    "--init-groups",
    join(PG_BIN, "postgres"),
    "-D",
    data,
    "-k",
    fs.mountPoint,
    "-p",
    String(port),
    "-c",
    "listen_addresses=",
  ], { stdio: ["ignore", openSync(logFile, "a"), openSync(logFile, "a")], detached: true });
  const pid = server.pid!;
  const sql = (query: string) =>
    asPostgres(join(PG_BIN, "psql"), [
      "-h",
      fs.mountPoint,
      "-p",
      String(port),
      "-U",
      "postgres",
      "-At",
      "-v",
      "ON_ERROR_STOP=1",
      "-c",
      query,
    ]).trim();
  try {
    await waitFor("PostgreSQL to accept connections", () => {
      if (!alive(pid)) throw new Error("postgres exited");
      return spawnSync(join(PG_BIN, "pg_isready"), ["-h", fs.mountPoint, "-p", String(port)])
        .status === 0;
    }, 30_000);
  } catch (error) {
    process.kill(pid, "SIGKILL");
    fs.cleanup();
    throw error;
  }
  return {
    fs,
    pid,
    socketDir: fs.mountPoint,
    port,
    logFile,
    sql,
    async stop() {
      if (alive(pid)) {
        process.kill(pid, "SIGINT"); // fast shutdown
        await waitFor("postgres to stop", () => !alive(pid), 30_000).catch(() =>
          process.kill(pid, "SIGKILL")
        );
      }
      fs.cleanup();
    },
    kill: () => process.kill(pid, "SIGKILL"),
  };
}

/** A proxy in front of a real server that goes silent at a chosen request. */
export interface StallingProxy {
  /** Where clients connect: a unix socket path. */
  socket: string;
  /** True once the proxy has swallowed a request. */
  stalled(): boolean;
  /** Connections the proxy holds open now (a closed session is gone from here). */
  open(): number;
  close(): Promise<void>;
}

/**
 * A unix-socket proxy to a server's socket that forwards everything (the
 * handshake, the login) until a client request matches `stallWhen`; from
 * then on that connection is silent both ways, as a server that accepted
 * the login and then stopped answering. Other connections pass through.
 */
export async function stallingProxy(
  options: {
    target: string;
    socket: string;
    /** Without it, the proxy never goes silent (it only rewrites). */
    stallWhen?: RegExp;
    /** Rewrites what the server sends (keep lengths: a protocol may count bytes). */
    rewrite?: (chunk: Buffer) => Buffer;
  },
): Promise<StallingProxy> {
  let stalled = false;
  const sockets = new Set<Socket>();
  const server = createServer((client) => {
    const upstream = connect(options.target);
    let silent = false;
    sockets.add(client);
    sockets.add(upstream);
    client.on("data", (chunk: Buffer) => {
      if (!silent && options.stallWhen?.test(chunk.toString("latin1"))) {
        silent = true;
        stalled = true;
      }
      if (!silent) upstream.write(chunk);
    });
    upstream.on("data", (chunk: Buffer) => {
      if (!silent) client.write(options.rewrite ? options.rewrite(chunk) : chunk);
    });
    const end = () => {
      client.destroy();
      upstream.destroy();
      sockets.delete(client);
      sockets.delete(upstream);
    };
    for (const s of [client, upstream]) {
      s.on("error", end);
      s.on("close", end);
    }
  });
  await new Promise<void>((resolve) => server.listen(options.socket, resolve));
  return {
    socket: options.socket,
    stalled: () => stalled,
    open: () => [...sockets].filter((s) => !s.destroyed).length / 2,
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
}

/**
 * `vmsnap run --json` (no freeze) with the given plugins and a post-script
 * that appends a line to `post-ran` (so a test sees the other plugins
 * resume); asserts that vmsnap ended on its own within `limitSeconds`.
 */
export async function runBeside(
  f: RunFixture,
  plugins: unknown[],
  options: { name?: string; limitSeconds?: number } = {},
  // deno-lint-ignore no-explicit-any
): Promise<any> {
  const post = f.script("post.sh", `echo x >> "${f.path("post-ran")}"`);
  const limit = options.limitSeconds ?? 15;
  const started = performance.now();
  const ran = await runBin([
    "run",
    "--json",
    "--config",
    f.config({ fsFreezeEnabled: false, postScriptLocation: post, plugins }, options.name),
  ], { timeoutMs: 30_000 });
  const seconds = (performance.now() - started) / 1000;
  assert.equal(ran.signal, null, `vmsnap hung and was killed after ${seconds.toFixed(1)} s`);
  assert.ok(seconds < limit, `the run ended in ${seconds.toFixed(1)} s`);
  return resultOf(ran.stdout);
}

/**
 * redis-server (never the packaged service) on its own loop filesystem,
 * unix socket `<mount>/redis.sock`, no TCP. `aof`: append-only file with
 * `appendfsync everysec`; `rdb`: snapshots only (no automatic save points).
 * With `image`, the server starts on a copy (a restored snapshot).
 */
export async function startRedis(
  dir: string,
  options: { name?: string; persistence?: "aof" | "rdb"; image?: string; extra?: string[] } = {},
): Promise<
  DbServer & { socket: string; cli(...args: string[]): string; restart(): Promise<void> }
> {
  const name = options.name ?? "redis";
  const fs = makeLoopFs({ dir, name, sizeMiB: 64, image: options.image });
  const data = join(fs.mountPoint, "data");
  mkdirSync(data, { recursive: true });
  const socket = join(fs.mountPoint, "redis.sock");
  const args = [
    "--port",
    "0",
    "--unixsocket",
    socket,
    "--unixsocketperm",
    "700",
    "--dir",
    data,
    "--appendonly",
    options.persistence === "rdb" ? "no" : "yes",
    "--appendfsync",
    "everysec",
    "--save",
    "",
    "--logfile",
    join(fs.mountPoint, "redis.log"),
    ...(options.extra ?? []),
  ];
  const cli = (...command: string[]) =>
    execFileSync("redis-cli", ["-s", socket, ...command], {
      encoding: "utf8",
      stdio: ["ignore", "pipe", "pipe"],
    }).trim();
  let pid = 0;
  const start = async () => {
    rmSync(socket, { force: true });
    const server = spawn("redis-server", args, { stdio: "ignore", detached: true });
    pid = server.pid!;
    await waitFor("redis-server to accept connections", () => {
      if (!alive(pid)) {
        throw new Error(`redis-server exited; see ${join(fs.mountPoint, "redis.log")}`);
      }
      return existsSync(socket) && spawnSync("redis-cli", ["-s", socket, "PING"]).stdout?.toString()
            .trim() === "PONG";
    }, 30_000);
  };
  const stopServer = async () => {
    if (alive(pid)) {
      process.kill(pid, "SIGTERM");
      await waitFor("redis-server to stop", () => !alive(pid), 30_000).catch(() =>
        process.kill(pid, "SIGKILL")
      );
    }
  };
  try {
    await start();
  } catch (error) {
    if (pid && alive(pid)) process.kill(pid, "SIGKILL");
    fs.cleanup();
    throw error;
  }
  return {
    fs,
    get pid() {
      return pid;
    },
    socket,
    cli,
    sql: (query: string) => cli(...query.split(" ")),
    async restart() {
      await stopServer();
      await start();
    },
    async stop() {
      await stopServer();
      fs.cleanup();
    },
    kill: () => process.kill(pid, "SIGKILL"),
  };
}

/**
 * Starts `vmsnap run --json` (no freeze) with the given plugins and a
 * post-script, sends SIGTERM once `hung()` says a plugin waits on a silent
 * server, and asserts that vmsnap exits within 5 s with `Interrupted` and
 * that the post-script ran (the other plugins resumed). Returns the result.
 */
export async function sigtermWhileHung(
  f: RunFixture,
  plugins: unknown[],
  hung: () => boolean,
  // deno-lint-ignore no-explicit-any
): Promise<any> {
  const post = f.script("post.sh", `touch "${f.path("post-ran")}"`);
  const run = startBin([
    "run",
    "--json",
    "--config",
    f.config({ fsFreezeEnabled: false, postScriptLocation: post, plugins }),
  ]);
  await waitFor("the silent server", hung, 20_000);
  await new Promise((r) => setTimeout(r, 300));
  const signalled = performance.now();
  process.kill(run.child.pid!, "SIGTERM");
  const stop = setTimeout(() => run.child.kill("SIGKILL"), 20_000);
  const ran = await run.done;
  clearTimeout(stop);
  const seconds = (performance.now() - signalled) / 1000;
  assert.equal(ran.signal, null, "vmsnap ignored SIGTERM and was killed");
  assert.ok(seconds < 5, `vmsnap exited ${seconds.toFixed(1)} s after SIGTERM`);
  const result = resultOf(ran.stdout);
  assert.ok(codes(result).includes("Interrupted"), ran.stdout);
  assert.equal(result.snapshotTaken, false);
  assert.ok(f.exists("post-ran"), "the script plugin resumed");
  return result;
}
