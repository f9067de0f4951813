/**
 * Restoring a guest snapshot on the host: the qcow2 chain is converted to a
 * raw image (qemu-nbd needs the nbd module, which this machine lacks),
 * loop-mounted, and the guest's MariaDB and PostgreSQL data directories are
 * started by the host's servers (the same Debian packages) on private sockets,
 * as the proof suite restores its copies. Each check is returned, not thrown,
 * so the report shows every one.
 *
 * @module
 */
import { execFileSync, spawn, spawnSync } from "node:child_process";
import {
  chownSync,
  existsSync,
  mkdirSync,
  openSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from "node:fs";
import { join } from "node:path";
import process from "node:process";
import { alive, waitFor } from "../helpers.ts";
import { makeLoopFs } from "../loop.ts";
import { PG_BIN } from "../db_servers.ts";

/** One check's outcome. */
export interface Check {
  name: string;
  ok: boolean;
  detail: string;
}

/** What a database held after the restore. */
export interface DbRestore {
  checks: Check[];
  rows: number;
  startMs: number;
  /** The recovery lines of the server's log. */
  recovery: string[];
  gtid?: string;
}

/** What the restore is checked against. */
export interface Expected {
  /** Commits acknowledged before the quiesce (all must be there). */
  ackedBefore: number;
  /** Rows may exceed ackedBefore by at most this (commits in flight at the freeze). */
  slack: number;
  /** MariaDB: the GTID position vmsnap recorded. */
  gtid?: string;
}

/** A mounted copy of the snapshot. */
export interface OpenedSnapshot {
  mountPoint: string;
  convertMs: number;
  cleanup(): void;
}

/**
 * Converts the snapshot's qcow2 chain to a raw image and mounts it.
 *
 * @example
 * ```ts
 * const snap = openSnapshot("/var/tmp/vm/disk0.qcow2", dir, "case1");
 * try { ... } finally { snap.cleanup(); }
 * ```
 */
export function openSnapshot(image: string, dir: string, name: string): OpenedSnapshot {
  const raw = join(dir, `${name}.raw`);
  const started = performance.now();
  execFileSync("qemu-img", ["convert", "-U", "-f", "qcow2", "-O", "raw", image, raw]);
  const convertMs = performance.now() - started;
  // The raw copy attached as an existing image: its cleanup unmounts, detaches and removes it.
  const fs = makeLoopFs({ dir, name, image: raw });
  return { mountPoint: fs.mountPoint, convertMs, cleanup: fs.cleanup };
}

async function stopServer(pid: number, signal: NodeJS.Signals): Promise<void> {
  if (!alive(pid)) return;
  process.kill(pid, signal);
  await waitFor("the restored server to stop", () => !alive(pid), 60_000).catch(() =>
    process.kill(pid, "SIGKILL")
  );
}

/** Rows 1..k with nothing missing; returns the checks and k. */
function rowChecks(rows: number[], expected: Expected): { k: number; checks: Check[] } {
  const gap = rows.findIndex((seq, i) => seq !== i + 1);
  const k = rows.length;
  return {
    k,
    checks: [
      {
        name: "rows are 1..k, none missing",
        ok: gap < 0,
        detail: gap < 0 ? `k = ${k}` : `row ${gap + 1} is ${rows[gap]}`,
      },
      {
        name: "every commit acknowledged before the quiesce is there",
        ok: k >= expected.ackedBefore && k <= expected.ackedBefore + expected.slack,
        detail: `${k} rows, ${expected.ackedBefore} acknowledged before the quiesce` +
          (expected.slack === 0
            ? " (exactly: the lock held every later commit)"
            : Number.isFinite(expected.slack)
            ? ` (at most ${expected.slack} more in flight)`
            : " (later commits in flight at the freeze may be there too)"),
      },
    ],
  };
}

/**
 * Starts the host's MariaDB on the restored /var/lib/mysql and checks it.
 *
 * @example
 * ```ts
 * const r = await restoreMariaDb(snap.mountPoint, dir, "c1", { ackedBefore: 40, slack: 0, gtid: "0-1-41" });
 * ```
 */
export async function restoreMariaDb(
  mountPoint: string,
  dir: string,
  table: string,
  expected: Expected,
): Promise<DbRestore> {
  const data = join(mountPoint, "var", "lib", "mysql");
  const socket = join(dir, `${table}-mysqld.sock`);
  const errorLog = join(dir, `${table}-mariadb.err`);
  const started = performance.now();
  const server = spawn("mariadbd", [
    "--no-defaults",
    "--user=root",
    `--datadir=${data}`,
    `--socket=${socket}`,
    `--pid-file=${join(dir, `${table}-mysqld.pid`)}`,
    "--skip-networking",
    "--log-bin=binlog",
    "--server-id=1",
    "--innodb-buffer-pool-size=64M",
    `--log-error=${errorLog}`,
  ], { stdio: "ignore", detached: true });
  const pid = server.pid!;
  const sql = (query: string, db = "app") =>
    execFileSync("mariadb", ["--no-defaults", `--socket=${socket}`, "-N", "-B", db, "-e", query], {
      encoding: "utf8",
      stdio: ["ignore", "pipe", "pipe"],
    }).trim();
  const checks: Check[] = [];
  try {
    let startOk = true;
    await waitFor("the restored MariaDB", () => {
      if (!alive(pid)) throw new Error("mariadbd exited");
      return existsSync(socket) &&
        spawnSync("mariadb", ["--no-defaults", `--socket=${socket}`, "-e", "SELECT 1"]).status ===
          0;
    }, 120_000).catch(() => (startOk = false));
    const startMs = performance.now() - started;
    const log = existsSync(errorLog) ? readFileSync(errorLog, "utf8") : "";
    const recovery = log.split("\n").filter((l) => /recover|redo log|checkpoint/i.test(l)).map(
      (l) => l.replace(/^\S+\s+\S+\s+\d+\s+/, ""),
    );
    checks.push({
      name: "MariaDB starts on the restored data",
      ok: startOk,
      detail: startOk ? `in ${Math.round(startMs)} ms` : `see ${errorLog}`,
    });
    if (!startOk) return { checks, rows: 0, startMs, recovery };
    checks.push({
      name: "the error log says what recovery InnoDB did",
      ok: recovery.length > 0,
      detail: recovery.join(" | ") || "no recovery line",
    });
    const rows = sql(`SELECT seq FROM ${table} ORDER BY seq`).split("\n").filter(Boolean).map(
      Number,
    );
    const counted = rowChecks(rows, expected);
    checks.push(...counted.checks);
    const gtid = sql("SELECT @@gtid_binlog_pos");
    if (expected.gtid !== undefined) {
      checks.push({
        name: "GTID position equals the one vmsnap recorded",
        ok: gtid === expected.gtid,
        detail: `restored ${gtid}, recorded ${expected.gtid}`,
      });
    }
    const check = spawnSync("mariadb-check", [
      "--no-defaults",
      `--socket=${socket}`,
      "--all-databases",
    ], { encoding: "utf8" });
    const bad = check.stdout.split("\n").filter((l) => /error|warning|corrupt/i.test(l));
    checks.push({
      name: "mariadb-check --all-databases is clean",
      ok: check.status === 0 && bad.length === 0,
      detail: check.status === 0 && bad.length === 0
        ? `${check.stdout.split("\n").filter((l) => /\sOK$/.test(l)).length} tables OK`
        : bad.join("; ") + check.stderr,
    });
    return { checks, rows: counted.k, startMs, recovery, gtid };
  } finally {
    await stopServer(pid, "SIGTERM");
  }
}

/**
 * Starts the host's PostgreSQL 15 on the restored cluster and checks it.
 *
 * @example
 * ```ts
 * const r = await restorePostgres(snap.mountPoint, dir, "c1", { ackedBefore: 40, slack: 1 });
 * ```
 */
export async function restorePostgres(
  mountPoint: string,
  dir: string,
  table: string,
  expected: Expected,
): Promise<DbRestore> {
  const data = join(mountPoint, "var", "lib", "postgresql", "15", "main");
  const uid = Number(execFileSync("id", ["-u", "postgres"], { encoding: "utf8" }).trim());
  const gid = Number(execFileSync("id", ["-g", "postgres"], { encoding: "utf8" }).trim());
  // Debian keeps the cluster's config in /etc; the copy gets a minimal one of its own.
  writeFileSync(join(data, "postgresql.conf"), "");
  writeFileSync(join(data, "pg_hba.conf"), "local all all trust\n");
  writeFileSync(join(data, "pg_ident.conf"), "");
  rmSync(join(data, "postmaster.pid"), { force: true });
  execFileSync("chown", ["-R", `${uid}:${gid}`, join(mountPoint, "var", "lib", "postgresql")]);
  const socketDir = join(dir, `${table}-pg`);
  mkdirSync(socketDir, { mode: 0o755, recursive: true });
  chownSync(socketDir, uid, gid);
  const port = 54000 + Math.floor(Math.random() * 1000);
  const logFile = join(dir, `${table}-postgres.log`);
  const asPostgres = ["--reuid=postgres", "--regid=postgres", "--init-groups"];
  const started = performance.now();
  const server = spawn("setpriv", [
    ...asPostgres,
    join(PG_BIN, "postgres"),
    "-D",
    data,
    "-k",
    socketDir,
    "-p",
    String(port),
    "-c",
    "listen_addresses=",
  ], { stdio: ["ignore", openSync(logFile, "a"), openSync(logFile, "a")], detached: true });
  const pid = server.pid!;
  const checks: Check[] = [];
  try {
    let startOk = true;
    await waitFor("the restored PostgreSQL", () => {
      if (!alive(pid)) throw new Error("postgres exited");
      return spawnSync(join(PG_BIN, "pg_isready"), ["-h", socketDir, "-p", String(port)])
        .status === 0;
    }, 120_000).catch(() => (startOk = false));
    const startMs = performance.now() - started;
    const log = readFileSync(logFile, "utf8");
    const recovery = log.split("\n").filter((l) =>
      /recovery|redo|not properly shut down|consistent/i.test(l) &&
      !/has not been yet reached/.test(l)
    ).map((l) => l.replace(/^\S+ \S+ \S+ \[\d+\] /, ""));
    checks.push({
      name: "PostgreSQL starts on the restored cluster",
      ok: startOk,
      detail: startOk ? `in ${Math.round(startMs)} ms` : `see ${logFile}`,
    });
    if (!startOk) return { checks, rows: 0, startMs, recovery };
    checks.push({
      name: "the log says it ran crash recovery (the snapshot is of a running server)",
      ok: /database system was not properly shut down; automatic recovery in progress/.test(log) &&
        /redo done at/.test(log),
      detail: recovery.join(" | "),
    });
    const rows = execFileSync("setpriv", [
      ...asPostgres,
      join(PG_BIN, "psql"),
      "-X",
      "-h",
      socketDir,
      "-p",
      String(port),
      "-U",
      "postgres",
      "-At",
      "-c",
      `SELECT seq FROM ${table} ORDER BY seq`,
    ], { encoding: "utf8" }).split("\n").filter(Boolean).map(Number);
    const counted = rowChecks(rows, expected);
    checks.push(...counted.checks);
    const amcheck = spawnSync("setpriv", [
      ...asPostgres,
      join(PG_BIN, "pg_amcheck"),
      "-h",
      socketDir,
      "-p",
      String(port),
      "-U",
      "postgres",
      "--install-missing",
      "--heapallindexed",
      "-d",
      "postgres",
    ], { encoding: "utf8" });
    checks.push({
      name: "pg_amcheck --heapallindexed is clean",
      ok: amcheck.status === 0,
      detail: amcheck.status === 0 ? "exit 0" : (amcheck.stdout + amcheck.stderr).slice(0, 500),
    });
    return { checks, rows: counted.k, startMs, recovery };
  } finally {
    await stopServer(pid, "SIGINT");
  }
}
