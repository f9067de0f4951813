/**
 * The `mysql` plugin (MySQL and MariaDB): one dedicated connection (never a
 * pool) holds the backup lock from quiesce to resume.
 *
 * - Before locking it waits (bounded) until no query has run longer than
 *   `longQuerySeconds`, so the lock never queues behind a long query and
 *   stalls every writer; with `killLongQueries` it kills them instead.
 * - `auto`: MariaDB → `BACKUP STAGE START; BACKUP STAGE BLOCK_COMMIT`;
 *   MySQL 8 → `FLUSH TABLES WITH READ LOCK` when there are non-InnoDB tables
 *   or binary logging is on, else `LOCK INSTANCE FOR BACKUP`. Never
 *   `SET GLOBAL read_only`.
 * - While locked it records the binary log file/position and GTID position.
 * - Its session's `wait_timeout` is `maxHoldSeconds`: the server drops the
 *   session, and the lock with it, even if vmsnap is stuck.
 *
 * @module
 */
import type { Connection as PromiseConnection } from "mysql2/promise";
import type { Field } from "../src/config/spec.ts";
import {
  type Budget,
  DB_FIELDS,
  dbConfig,
  dbRuntime,
  type DbSession,
  driverConnectMs,
  passwordFileProblems,
  passwordOf,
  pause,
  PluginFailure,
  withSession,
} from "./db_common.ts";
import { type ConfigOf, definePlugin, type PluginEnv } from "./plugin.ts";

const FIELDS = {
  socket: { type: "string", absolutePath: true },
  host: { type: "string", nonEmpty: true },
  port: { type: "integer", min: 1, max: 65535, default: 3306 },
  user: { type: "string", nonEmpty: true, default: "root" },
  mode: {
    type: "string",
    oneOf: ["auto", "backup-stage", "lock-instance", "ftwrl"],
    default: "auto",
  },
  lockWaitTimeoutSeconds: { type: "integer", min: 1, max: 3600, default: 10 },
  longQuerySeconds: { type: "integer", min: 0, max: 86400, default: 60 },
  killLongQueries: { type: "boolean", default: false },
  ...DB_FIELDS,
} as const satisfies Record<string, Field>;

/** A normalized mysql plugin config, as its keys say. */
export type MysqlConfig = ConfigOf<"mysql", typeof FIELDS>;

/** How to lock. */
export type MysqlMode = MysqlConfig["mode"];

type Connection = PromiseConnection & DbSession;
type Row = Record<string, unknown>;

/**
 * Opens the one connection; aborting `signal` destroys a half-open one. An
 * error or end of the session once open goes to `lost`.
 */
async function connect(
  config: MysqlConfig,
  signal: AbortSignal,
  lost: (why: string) => void = () => {},
): Promise<Connection> {
  const password = passwordOf(config);
  const where = config.socket
    ? `socket ${config.socket}`
    : `${config.host ?? "localhost"}:${config.port}`;
  const mysql = await import("mysql2");
  const core = mysql.createConnection({
    ...(config.socket
      ? { socketPath: config.socket }
      : { host: config.host ?? "localhost", port: config.port }),
    user: config.user,
    password,
    connectTimeout: driverConnectMs(config),
    multipleStatements: false,
    // Rows parsed by mysql2's static parser, not by code it generates from the server's column
    // definitions and compiles with new Function (~0.5 MiB less peak RSS; no code built from
    // what the server sends).
    disableEval: true,
  });
  const cancel = () => core.destroy();
  signal.addEventListener("abort", cancel, { once: true });
  try {
    await new Promise<void>((resolve, reject) => core.connect((e) => e ? reject(e) : resolve()));
  } catch (error) {
    core.destroy();
    const e = error as { code?: string; errno?: number; message: string };
    const fix = e.code === "ER_ACCESS_DENIED_ERROR"
      ? `check the user and the password${config.passwordFile ? ` in ${config.passwordFile}` : ""}`
      : e.code === "ENOENT" || e.code === "ECONNREFUSED"
      ? `is the server running and listening on ${where}?`
      : "check that the server is up and reachable";
    throw new PluginFailure(
      "PluginConnectFailed",
      `plugin "${config.name}": cannot connect to MySQL/MariaDB at ${where} as ${config.user}: ${e.message} (${
        e.code ?? e.errno
      }). Fix: ${fix}.`,
      { cause: error },
    );
  } finally {
    signal.removeEventListener("abort", cancel);
  }
  core.on("error", (error: { code?: string; message: string }) => {
    lost(`${error.code ?? ""} ${error.message}`.trim());
  });
  core.on("end", () => lost("the server closed the session"));
  const conn = core.promise() as Connection;
  conn.destroy = () => core.destroy();
  return conn;
}

async function rows(conn: Connection, sql: string, params: unknown[] = []): Promise<Row[]> {
  const [result] = await conn.query(sql, params);
  return result as Row[];
}

/** Server facts: MariaDB or MySQL, version, binary logging. */
async function serverFacts(conn: Connection, budget: Budget) {
  const [row] = await budget.step(
    "SELECT VERSION()",
    () => rows(conn, "SELECT VERSION() AS version, @@log_bin AS logBin"),
  );
  const version = String(row.version);
  const mariadb = /mariadb/i.test(version);
  const [major, minor] = version.split(/[.-]/).map(Number);
  return { version, mariadb, major, minor, binlog: Number(row.logBin) === 1 };
}

/** The statements that take and release the lock, for a mode. */
function lockStatements(mode: Exclude<MysqlMode, "auto">): { lock: string[]; unlock: string } {
  switch (mode) {
    case "backup-stage":
      return {
        lock: ["BACKUP STAGE START", "BACKUP STAGE BLOCK_COMMIT"],
        unlock: "BACKUP STAGE END",
      };
    case "lock-instance":
      return { lock: ["LOCK INSTANCE FOR BACKUP"], unlock: "UNLOCK INSTANCE" };
    case "ftwrl":
      return { lock: ["FLUSH TABLES WITH READ LOCK"], unlock: "UNLOCK TABLES" };
  }
}

/** Chooses the mode for `auto`. */
async function chooseMode(
  conn: Connection,
  facts: Awaited<ReturnType<typeof serverFacts>>,
  budget: Budget,
): Promise<Exclude<MysqlMode, "auto">> {
  if (facts.mariadb) return "backup-stage";
  if (facts.binlog) return "ftwrl";
  const [row] = await budget.step("the count of non-InnoDB tables", () =>
    rows(
      conn,
      "SELECT COUNT(*) AS n FROM information_schema.TABLES WHERE ENGINE IS NOT NULL AND ENGINE <> 'InnoDB' AND TABLE_SCHEMA NOT IN ('mysql','information_schema','performance_schema','sys')",
    ));
  return Number(row.n) > 0 ? "ftwrl" : "lock-instance";
}

/** Binary log file/position and GTID position, read while locked. */
async function positions(
  conn: Connection,
  facts: Awaited<ReturnType<typeof serverFacts>>,
  budget: Budget,
): Promise<Record<string, unknown>> {
  if (!facts.binlog) return { binlog: false };
  // MySQL 8.2+ renamed SHOW MASTER STATUS; MariaDB keeps it.
  const statement = !facts.mariadb && (facts.major > 8 || (facts.major === 8 && facts.minor >= 2))
    ? "SHOW BINARY LOG STATUS"
    : "SHOW MASTER STATUS";
  const [status] = await budget.step(statement, () => rows(conn, statement));
  const out: Record<string, unknown> = {
    binlog: true,
    binlogFile: status?.File ?? null,
    binlogPosition: status?.Position !== undefined ? Number(status.Position) : null,
  };
  if (facts.mariadb) {
    const [gtid] = await budget.step(
      "SELECT @@gtid_binlog_pos",
      () => rows(conn, "SELECT @@gtid_binlog_pos AS pos"),
    );
    out.gtidPosition = String(gtid.pos ?? "");
  } else {
    out.gtidPosition = String(status?.Executed_Gtid_Set ?? "");
  }
  return out;
}

/** Queries running longer than the limit (not ours, not sleeping). */
async function longQueries(conn: Connection, seconds: number, budget: Budget): Promise<Row[]> {
  return await budget.step("the scan for long queries", () =>
    rows(
      conn,
      `SELECT ID AS id, USER AS user, TIME AS time, LEFT(INFO, 200) AS info FROM information_schema.PROCESSLIST
     WHERE ID <> CONNECTION_ID() AND COMMAND NOT IN ('Sleep', 'Daemon', 'Binlog Dump', 'Binlog Dump GTID', 'Killed')
       AND INFO IS NOT NULL AND TIME >= ?`,
      [seconds],
    ));
}

/** The missing privileges for a mode, from SHOW GRANTS. */
async function missingGrants(
  conn: Connection,
  config: MysqlConfig,
  budget: Budget,
): Promise<string[]> {
  const facts = await serverFacts(conn, budget);
  const mode = config.mode === "auto" ? await chooseMode(conn, facts, budget) : config.mode;
  const shown = await budget.step(
    "SHOW GRANTS",
    () => rows(conn, "SHOW GRANTS FOR CURRENT_USER()"),
  );
  const grants = shown.map((r) => String(Object.values(r)[0]).toUpperCase());
  const global = grants.filter((g) => / ON \*\.\* /.test(g)).join(" ");
  if (/ALL PRIVILEGES/.test(global) || /\bSUPER\b/.test(global) && mode !== "lock-instance") {
    return [];
  }
  const needed = ["PROCESS", mode === "lock-instance" ? "BACKUP_ADMIN" : "RELOAD"];
  if (facts.binlog) {
    needed.push(
      facts.mariadb && facts.major * 100 + facts.minor >= 1005
        ? "BINLOG MONITOR"
        : "REPLICATION CLIENT",
    );
  }
  if (config.killLongQueries) needed.push(facts.mariadb ? "CONNECTION ADMIN" : "CONNECTION_ADMIN");
  return needed.filter((p) => !new RegExp(`\\b${p.replace(" ", "\\s+")}\\b`).test(global));
}

/** The statement that releases this run's lock, once it is taken. */
interface MysqlRun {
  unlock: string;
}

/** What a quiesce works with. */
interface MysqlStep {
  config: MysqlConfig;
  run: MysqlRun;
  conn: Connection;
  budget: Budget;
  env: PluginEnv;
  facts: Record<string, unknown>;
}

/** One statement within the budget, named by its first line. */
function query(step: MysqlStep, sql: string, params: unknown[] = []): Promise<Row[]> {
  return step.budget.step(sql.split("\n")[0].slice(0, 60), () => rows(step.conn, sql, params));
}

/**
 * Never queue the lock behind a long query: waits (bounded by the budget)
 * until none runs longer than longQuerySeconds, or kills them with
 * killLongQueries.
 */
async function waitForLongQueries(step: MysqlStep): Promise<void> {
  const { config, budget, env, facts } = step;
  for (;;) {
    const long = await longQueries(step.conn, config.longQuerySeconds, budget);
    if (long.length === 0) return;
    if (config.killLongQueries) {
      for (const l of long) await query(step, `KILL QUERY ${Number(l.id)}`);
      env.log("warning", "mysql-killed-queries", { plugin: config.name, queries: long });
      facts.killedQueries = long.map((l) => Number(l.id));
      continue;
    }
    if (budget.remainingMs() < 1000 || env.signal.aborted) {
      const list = long.map((q) =>
        `id ${q.id} (${q.user}, ${q.time} s: ${String(q.info).slice(0, 80)})`
      )
        .join("; ");
      throw new PluginFailure(
        "PluginQuiesceTimeout",
        `plugin "${config.name}": waited ${config.timeoutInSeconds} s for queries running longer than longQuerySeconds (${config.longQuerySeconds} s) to finish: ${list}. The lock was not taken, so writers were never stalled. Fix: run the backup when they are done, raise longQuerySeconds, or set killLongQueries.`,
      );
    }
    env.log("info", "mysql-waiting-for-long-queries", { plugin: config.name, queries: long });
    await pause(500, env.signal);
  }
}

/** Runs the statements that take the lock; a refusal or a lock wait timeout is a coded failure. */
async function takeLock(step: MysqlStep, statements: string[]): Promise<void> {
  const { config } = step;
  for (const statement of statements) {
    try {
      await query(step, statement);
    } catch (error) {
      if (error instanceof PluginFailure) throw error;
      const e = error as { code?: string; message: string };
      const timeout = e.code === "ER_LOCK_WAIT_TIMEOUT";
      throw new PluginFailure(
        timeout ? "PluginQuiesceTimeout" : "PluginQuiesceFailed",
        `plugin "${config.name}": ${statement} failed: ${e.message}${
          timeout ? ` (lock_wait_timeout ${config.lockWaitTimeoutSeconds} s)` : ""
        }. Fix: ${
          e.code === "ER_SPECIFIC_ACCESS_DENIED_ERROR" || e.code === "ER_DBACCESS_DENIED_ERROR"
            ? "grant the privilege the message names (see vmsnap check --connect)"
            : "see the server's error log"
        }.`,
        { cause: error },
      );
    }
  }
}

/** Quiesce: the session's limits, no long query in the way, the lock, the binlog position. */
async function quiesce(step: MysqlStep): Promise<true> {
  const { config, run, conn, budget, facts } = step;
  const server = await serverFacts(conn, budget);
  Object.assign(facts, { version: server.version, flavor: server.mariadb ? "mariadb" : "mysql" });
  await query(step, "SET SESSION lock_wait_timeout = ?", [config.lockWaitTimeoutSeconds]);
  // The server drops this session (and its lock) if vmsnap never comes back.
  await query(step, "SET SESSION wait_timeout = ?", [config.maxHoldSeconds]);
  await waitForLongQueries(step);
  const mode = config.mode === "auto" ? await chooseMode(conn, server, budget) : config.mode;
  const statements = lockStatements(mode);
  facts.mode = mode;
  run.unlock = statements.unlock;
  await takeLock(step, statements.lock);
  Object.assign(facts, await positions(conn, server, budget));
  return true;
}

/** The `mysql` plugin type. */
export const mysqlPlugin = definePlugin({
  type: "mysql",
  summary:
    "holds a MySQL/MariaDB backup lock (BACKUP STAGE, LOCK INSTANCE or FTWRL) on one connection",
  fields: FIELDS,
  normalize: (values): MysqlConfig => dbConfig("mysql", values),
  check(config) {
    const problems = passwordFileProblems(config);
    if (config.socket && config.host) {
      problems.push({
        code: "InvalidConfigValue",
        message: `plugin "${config.name}" has both "socket" and "host". Fix: keep one of them.`,
        plugin: config.name,
      });
    }
    return problems;
  },
  connectCheck(config) {
    return withSession(config, (signal) => connect(config, signal), async (conn, budget) => {
      const missing = await missingGrants(conn, config, budget);
      if (missing.length === 0) return [];
      const [who] = await budget.step(
        "SELECT CURRENT_USER()",
        () => rows(conn, "SELECT CURRENT_USER() AS u"),
      );
      const [user, host] = String(who.u).split("@");
      return [{
        code: "PluginQuiesceFailed",
        message: `plugin "${config.name}": ${who.u} lacks ${
          missing.join(", ")
        }, which quiesce needs. Fix: GRANT ${missing.join(", ")} ON *.* TO '${user}'@'${host}';`,
        plugin: config.name,
      }];
    });
  },
  create(config) {
    const run: MysqlRun = { unlock: "" };
    return dbRuntime<Connection>({
      type: "mysql",
      config,
      connect: (signal, lost) => connect(config, signal, lost),
      quiesce: (conn, budget, env, facts) => quiesce({ config, run, conn, budget, env, facts }),
      async release(conn, budget) {
        await budget.step(run.unlock, () => conn.query(run.unlock));
      },
      lostMessage: (why) =>
        `plugin "${config.name}": the lock was lost before resume (${why}); the snapshot may not be application-consistent. The server released the lock with the session.`,
      resumeFailedMessage: (why) =>
        `plugin "${config.name}": ${run.unlock} failed: ${why}. Closing the connection released the lock.`,
    });
  },
});
