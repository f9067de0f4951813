/**
 * Restoring MariaDB/MySQL: `mariadbd` on the overlay, as `mysql`, with no
 * network, no grant tables (nothing but verify reaches its private socket),
 * no event scheduler and no replication start, binary logging where the run
 * had it (so its crash recovery is the one the VM would run). Then
 * `mariadb-check --all-databases`, the GTID position and the binary log's
 * end against the manifest's.
 *
 * @module
 */
import { readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import type { MysqlEntry } from "../manifest.ts";
import { RUN_DIR } from "../restore_root.ts";
import type { Evidence } from "../verdict.ts";
import {
  asRootOn,
  type Engine,
  logLines,
  program,
  type RestoreContext,
  type RestoreOutcome,
  said,
  sizeOf,
  timeoutProblem,
  waitForServer,
  writtenAfterRun,
} from "./engine.ts";

const SOCKET = `${RUN_DIR}/mysqld.sock`;
const ERROR_LOG = `${RUN_DIR}/mariadb.err`;

/** The client as root inside the root, on the private socket. */
function client(ctx: RestoreContext, sql: string, timeoutMs = 30_000) {
  const mariadb = program(ctx.binaries.mariadb, "mariadb", "mysql")!;
  return ctx.sandbox.run([mariadb, "--no-defaults", `--socket=${SOCKET}`, "-N", "-B", "-e", sql], {
    root: ctx.root,
    timeoutMs,
  });
}

/** Where the binary log lives (its basename), as a VM path; undefined without one. */
function binlogBase(ctx: RestoreContext, entry: MysqlEntry | undefined): string | undefined {
  if (!entry?.binlog) return undefined;
  if (entry.logBinBasename) return entry.logBinBasename;
  if (!entry.binlogFile) return undefined;
  const prefix = entry.binlogFile.replace(/\.\d+$/, "");
  // Recorded by name only: in the data directory, else Debian's /var/log/mysql.
  for (const dir of [ctx.dataDir, "/var/log/mysql"]) {
    if (sizeOf(ctx.reach(join(dir, entry.binlogFile))) !== undefined) return join(dir, prefix);
  }
  return join(ctx.dataDir, prefix);
}

/** The server's arguments. */
function serverArgs(ctx: RestoreContext, binlog: string | undefined): string[] {
  // The redo log's own size: a different setting makes the server rewrite it (for nothing) first.
  const redo = sizeOf(ctx.snapshotPath(join(ctx.dataDir, "ib_logfile0")));
  return [
    "--no-defaults", // first, or mariadbd refuses it
    ...(redo && redo % (1 << 20) === 0 ? [`--innodb-log-file-size=${redo}`] : []),
    `--datadir=${ctx.dataDir}`,
    `--socket=${SOCKET}`,
    `--pid-file=${RUN_DIR}/mysqld.pid`,
    `--log-error=${ERROR_LOG}`,
    "--tmpdir=/tmp",
    "--skip-networking",
    "--skip-grant-tables",
    "--skip-slave-start",
    "--event-scheduler=OFF",
    "--innodb-buffer-pool-size=128M",
    ...(binlog ? [`--log-bin=${binlog}`, "--server-id=1"] : ["--skip-log-bin"]),
  ];
}

/**
 * mariadb-check's output: tables whose line ends in OK, and the errors and
 * warnings (each with its table) of the others.
 *
 * @example
 * ```ts
 * import { readCheck } from "./mariadb.ts";
 * readCheck("app.t\nerror    : Corrupt\nmysql.db   OK\n"); // { ok: 1, bad: ["app.t: error: Corrupt"] }
 * ```
 */
export function readCheck(stdout: string): { ok: number; bad: string[] } {
  let table = "";
  let ok = 0;
  const bad: string[] = [];
  for (const line of stdout.split("\n").filter(Boolean)) {
    const said = /^(error|warning|note|status)\s*:\s*(.*)$/i.exec(line);
    if (!said) {
      if (/\s(OK|Table is already up to date)$/.test(line)) ok++;
      table = line.trim().split(/\s+/)[0];
      continue;
    }
    // "note : The storage engine for the table doesn't support check" is not damage.
    if (/^(error|warning)$/i.test(said[1]) || /corrupt/i.test(said[2])) {
      bad.push(`${table}: ${said[1].toLowerCase()}: ${said[2]}`);
    }
  }
  return { ok, bad };
}

/** `mariadb-check --all-databases`: every table's status. */
async function checkTables(ctx: RestoreContext): Promise<Evidence> {
  const check = program(ctx.binaries.mariadbCheck, "mariadb-check", "mysqlcheck")!;
  ctx.progress("check", { tool: "mariadb-check" });
  const ran = await ctx.sandbox.run(
    [check, "--no-defaults", `--socket=${SOCKET}`, "--all-databases", "--check"],
    { root: ctx.root, timeoutMs: ctx.timeouts.checkMs },
  );
  const { ok, bad } = readCheck(ran.stdout);
  return {
    kind: "check",
    name: "mariadb-check --all-databases (CHECK TABLE) is clean",
    ok: ran.code === 0 && bad.length === 0,
    detail: bad.length > 0
      ? bad.slice(0, 10).join("; ")
      : ran.code === 0
      ? `${ok} tables OK`
      : said(ran),
  };
}

/** The GTID position and the binary log's end against the manifest's. */
async function positions(
  ctx: RestoreContext,
  entry: MysqlEntry,
  binlog: string | undefined,
): Promise<Evidence[]> {
  const out: Evidence[] = [];
  if (entry.gtidPosition !== undefined) {
    const gtid = await client(ctx, "SELECT @@gtid_binlog_pos");
    const restored = gtid.stdout.trim();
    out.push({
      kind: "position",
      name: "the GTID position is the one the run recorded",
      ok: gtid.code === 0 && restored === entry.gtidPosition,
      detail: gtid.code === 0
        ? `restored ${restored || "(empty)"}, recorded ${entry.gtidPosition || "(empty)"}`
        : said(gtid),
    });
  }
  if (entry.binlogFile && entry.binlogPosition !== undefined && binlog) {
    out.push(await binlogEnd(ctx, entry, join(dirname(binlog), entry.binlogFile)));
  }
  return out;
}

/** The recorded binary log file ends exactly at the recorded position, and no later file exists. */
async function binlogEnd(ctx: RestoreContext, entry: MysqlEntry, file: string): Promise<Evidence> {
  const recorded = entry.binlogPosition!;
  const size = sizeOf(ctx.snapshotPath(file));
  const name = "the binary log ends at the recorded position (no commit after it)";
  if (size === undefined) {
    return { kind: "position", name, ok: false, detail: `${file} is not on the snapshot` };
  }
  if (size < recorded) {
    return {
      kind: "check",
      name: "the binary log holds everything up to the recorded position",
      ok: false,
      detail:
        `${file} ends at ${size}, before the recorded position ${recorded}: events the server had written are missing`,
    };
  }
  const index = readIndex(ctx, file);
  const later = index.slice(index.indexOf(entry.binlogFile!) + 1);
  if (size === recorded && later.length === 0) {
    return { kind: "position", name, ok: true, detail: `${entry.binlogFile} ends at ${size}` };
  }
  const events = await client(
    ctx,
    `SHOW BINLOG EVENTS IN '${entry.binlogFile!.replace(/'/g, "")}' FROM ${recorded} LIMIT 5`,
  );
  const shown = events.stdout.trim().split("\n").filter(Boolean).map((l) =>
    l.split("\t").slice(2, 3).concat(l.split("\t").slice(5, 6)).join(" ")
  );
  return {
    kind: "position",
    name,
    ok: false,
    detail: `${entry.binlogFile} is ${size} bytes, recorded position ${recorded}${
      later.length ? `; later files on the snapshot: ${later.join(", ")}` : ""
    }${shown.length ? `; events after it: ${shown.join(" | ")}` : ""}`,
  };
}

/** The binary log files the snapshot's index names (before the restored server added one). */
function readIndex(ctx: RestoreContext, file: string): string[] {
  const index = ctx.snapshotPath(`${file.replace(/\.\d+$/, "")}.index`);
  try {
    return readFileSync(index!, "utf8").split("\n").filter(Boolean).map((l) =>
      l.replace(/^.*\//, "")
    );
  } catch {
    return [];
  }
}

/** Starts the server and waits for the end of its recovery. */
async function start(ctx: RestoreContext, binlog: string | undefined) {
  const mariadbd = program(ctx.binaries.mariadbd, "mariadbd", "mysqld")!;
  const dirs = [
    ctx.dataDir,
    ...(binlog && !binlog.startsWith(`${ctx.dataDir}/`) ? [dirname(binlog)] : []),
  ];
  await asRootOn(ctx, ["chown", "-R", `${ctx.user}:`], dirs);
  ctx.progress("server-starting", { server: "mariadbd" });
  const server = ctx.sandbox.start([mariadbd, ...serverArgs(ctx, binlog)], {
    root: ctx.root,
    user: ctx.user,
    limits: ctx.limits,
  });
  const up = await waitForServer(
    server,
    async () => (await client(ctx, "SELECT 1", 5_000)).code === 0,
    ctx.timeouts.startMs,
  );
  if (up.state === "ready") ctx.progress("server-ready", { pid: server.pid() });
  let log = "";
  try {
    log = readFileSync(ctx.reach(ERROR_LOG), "utf8");
  } catch {
    log = server.output().stderr;
  }
  return { server, up, log };
}

/** The `mysql` restore. */
export const mariadbEngine: Engine = {
  type: "mysql",
  missing(ctx) {
    const out: string[] = [];
    if (!program(ctx.binaries.mariadbd, "mariadbd", "mysqld")) {
      out.push("mariadbd (mariadb-server)");
    }
    if (!program(ctx.binaries.mariadb, "mariadb", "mysql")) out.push("mariadb (mariadb-client)");
    if (!program(ctx.binaries.mariadbCheck, "mariadb-check", "mysqlcheck")) {
      out.push("mariadb-check (mariadb-client)");
    }
    return out;
  },
  async restore(ctx): Promise<RestoreOutcome> {
    const entry = ctx.entry as MysqlEntry | undefined;
    const binlog = binlogBase(ctx, entry);
    const { server, up, log } = await start(ctx, binlog);
    try {
      const recovery = logLines(
        log,
        /crash recovery|Starting recovery|redo log|Recovering after a crash|rolled back|To recover:/i,
      );
      const evidence: Evidence[] = [{
        kind: "start",
        name: "mariadbd starts and finishes crash recovery",
        ok: up.state === "ready",
        detail: up.state === "ready"
          ? `ready in ${Math.round(up.ms)} ms`
          : `${up.state === "exited" ? "exited" : "not ready"} after ${Math.round(up.ms)} ms: ${
            logLines(log, /ERROR|\[ERROR\]|Assertion|corrupt/i, 6).join(" | ") || log.slice(-600)
          }`,
      }];
      if (recovery.length) {
        evidence.push({ kind: "info", name: "recovery", ok: true, detail: recovery.join(" | ") });
      }
      if (up.state === "timeout") return { evidence, error: timeoutProblem(ctx, "mariadbd") };
      if (up.state !== "ready") return { evidence };
      evidence.push(await checkTables(ctx));
      if (entry) evidence.push(...await positions(ctx, entry, binlog));
      const late = writtenAfterRun(ctx, ctx.dataDir);
      if (late) evidence.push(late);
      return { evidence };
    } finally {
      await server.kill();
    }
  },
};
