/**
 * The `postgresql` plugin: one reserved connection.
 *
 * - `checkpoint` (default; right when all of the cluster's volumes are in one
 *   atomic snapshot, which a VM snapshot of all disks is): `CHECKPOINT`
 *   before the freeze; records `pg_current_wal_lsn()`, the timeline and the
 *   version. Restore is ordinary crash recovery.
 * - `backup` (non-atomic snapshots with WAL archiving): `pg_backup_start(label,
 *   fast => true)` held on the connection (`pg_start_backup(label, true,
 *   false)` before PostgreSQL 15), then after the thaw `pg_backup_stop()`;
 *   the returned `backup_label` and `tablespace_map` are written byte for
 *   byte into `stateDir/postgresql/<runId>/` (0600). The session's
 *   `idle_session_timeout` is `maxHoldSeconds`, so the server ends the backup
 *   if vmsnap never comes back.
 *
 * @module
 */
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import type postgres from "postgres";
import type { Problem } from "../src/errors.ts";
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
  PluginFailure,
  withSession,
} from "./db_common.ts";
import { type ConfigOf, definePlugin, type PluginEnv, type RunError } from "./plugin.ts";

const FIELDS = {
  /** A socket directory (absolute path) or a host name. */
  host: { type: "string", nonEmpty: true, default: "/var/run/postgresql" },
  port: { type: "integer", min: 1, max: 65535, default: 5432 },
  user: { type: "string", nonEmpty: true, default: "postgres" },
  database: { type: "string", nonEmpty: true, default: "postgres" },
  mode: { type: "string", oneOf: ["checkpoint", "backup"], default: "checkpoint" },
  ...DB_FIELDS,
} as const satisfies Record<string, Field>;

/** A normalized postgresql plugin config, as its keys say. */
export type PostgresConfig = ConfigOf<"postgresql", typeof FIELDS>;

type Sql = postgres.Sql;
type Reserved = postgres.ReservedSql;

/** The reserved connection of a one-connection pool. */
interface PgSession extends DbSession {
  conn: Reserved;
}

/**
 * Opens a one-connection pool and reserves its connection; aborting `signal`
 * ends the pool at once. The session's end goes to `lost`.
 */
async function connect(
  config: PostgresConfig,
  signal: AbortSignal,
  notices: string[] = [],
  lost: (why: string) => void = () => {},
): Promise<PgSession> {
  const password = passwordOf(config);
  const where = config.host.startsWith("/")
    ? `${config.host}/.s.PGSQL.${config.port}`
    : `${config.host}:${config.port}`;
  const { default: postgres } = await import("postgres");
  const sql: Sql = postgres({
    host: config.host,
    port: config.port,
    user: config.user,
    database: config.database,
    password,
    max: 1,
    connect_timeout: driverConnectMs(config) / 1000,
    idle_timeout: 0,
    prepare: false,
    onnotice: (notice) => notices.push(String(notice.message)),
    // The session ended (server restart, terminated backend): whatever it held is gone.
    onclose: () => lost("the server closed the session"),
    connection: { application_name: "vmsnap" },
  });
  const cancel = () => sql.end({ timeout: 0 }).catch(() => {});
  signal.addEventListener("abort", cancel, { once: true });
  try {
    const conn = await sql.reserve();
    await conn`SELECT 1`;
    return {
      conn,
      end: async () => {
        conn.release();
        await sql.end({ timeout: 1 });
      },
      destroy: () => void sql.end({ timeout: 0 }).catch(() => {}),
    };
  } catch (error) {
    await sql.end({ timeout: 0 }).catch(() => {});
    const e = error as { code?: string; message: string };
    const fix = e.code === "28P01" || e.code === "28000"
      ? `check the user and the password${
        config.passwordFile ? ` in ${config.passwordFile}` : ""
      } (and pg_hba.conf)`
      : e.code === "ENOENT" || e.code === "ECONNREFUSED"
      ? `is the server running and listening on ${where}?`
      : e.code === "3D000"
      ? 'create the database or correct "database"'
      : "check that the server is up and reachable";
    throw new PluginFailure(
      "PluginConnectFailed",
      `plugin "${config.name}": cannot connect to PostgreSQL at ${where} as ${config.user}: ${e.message} (${e.code}). Fix: ${fix}.`,
      { cause: error },
    );
  } finally {
    signal.removeEventListener("abort", cancel);
  }
}

/** Server version as a number (150004 for 15.4). */
async function versionNumber(conn: Reserved, budget: Budget): Promise<number> {
  const [row] = await budget.step(
    "the version query",
    () => conn`SELECT current_setting('server_version_num')::int AS v`.then((r) => r),
  );
  return Number(row.v);
}

/** What quiesce needs that the role lacks, as GRANT statements. */
async function missingGrants(
  conn: Reserved,
  config: PostgresConfig,
  budget: Budget,
): Promise<string[]> {
  const ask = (what: string, query: () => Promise<postgres.Row[]>) => budget.step(what, query);
  const version = await versionNumber(conn, budget);
  const [role] = await ask(
    "the role query",
    () => conn`SELECT rolsuper FROM pg_roles WHERE rolname = current_user`.then((r) => r),
  );
  if (role?.rolsuper) return [];
  const missing: string[] = [];
  if (config.mode === "checkpoint") {
    if (version < 150000) {
      return [
        `ALTER ROLE ${config.user} SUPERUSER; -- CHECKPOINT needs superuser before PostgreSQL 15`,
      ];
    }
    const [r] = await ask(
      "pg_has_role",
      () => conn`SELECT pg_has_role(current_user, 'pg_checkpoint', 'MEMBER') AS ok`.then((r) => r),
    );
    if (!r.ok) missing.push(`GRANT pg_checkpoint TO ${config.user};`);
  } else {
    const [start, stop] = version >= 150000
      ? ["pg_backup_start(text, boolean)", "pg_backup_stop(boolean)"]
      : ["pg_start_backup(text, boolean, boolean)", "pg_stop_backup(boolean, boolean)"];
    for (const fn of [start, stop]) {
      const [r] = await ask(
        "has_function_privilege",
        () => conn`SELECT has_function_privilege(${fn}, 'EXECUTE') AS ok`.then((r) => r),
      );
      if (!r.ok) missing.push(`GRANT EXECUTE ON FUNCTION ${fn} TO ${config.user};`);
    }
  }
  return missing;
}

/** The GRANT a role needs for a mode (PostgreSQL 15). */
function grantFor(config: PostgresConfig): string {
  return config.mode === "checkpoint"
    ? `GRANT pg_checkpoint TO ${config.user};`
    : `GRANT EXECUTE ON FUNCTION pg_backup_start(text, boolean), pg_backup_stop(boolean) TO ${config.user};`;
}

/** What one run learns at quiesce (the server's version) and gathers (its notices). */
interface PgRun {
  version: number;
  notices: string[];
}

/** What a quiesce or resume step works with. */
interface PgStep {
  config: PostgresConfig;
  run: PgRun;
  conn: Reserved;
  budget: Budget;
  env: PluginEnv;
  facts: Record<string, unknown>;
}

/** A checkpoint, or the backup started (the session held until resume): true when held. */
async function quiesce(step: PgStep): Promise<boolean> {
  const { config, run, conn, budget, facts } = step;
  facts.mode = config.mode;
  run.version = await versionNumber(conn, budget);
  const [v] = await budget.step(
    "SHOW server_version",
    () => conn`SHOW server_version`.then((r) => r),
  );
  facts.version = v.server_version;
  if (config.mode === "checkpoint") {
    await budget.step("CHECKPOINT", () => conn`CHECKPOINT`.then((r) => r), { fix: SLOW });
  } else {
    facts.backupStartLsn = await startBackup(step);
  }
  const [wal] = await budget.step("pg_current_wal_lsn", () =>
    conn`
      SELECT pg_current_wal_lsn()::text AS lsn, timeline_id AS timeline, checkpoint_lsn::text AS checkpoint
      FROM pg_control_checkpoint()`.then((r) => r));
  Object.assign(facts, {
    walLsn: wal.lsn,
    timeline: Number(wal.timeline),
    checkpointLsn: wal.checkpoint,
  });
  // checkpoint: nothing is held; the snapshot is crash-consistent by design, and the checkpoint keeps recovery short.
  return config.mode === "backup";
}

/** The fix when a checkpoint or pg_backup_start takes too long. */
const SLOW = "raise timeoutInSeconds; a checkpoint after a write burst can take long";

/** pg_backup_start (pg_start_backup before 15) on the session; its start LSN. */
async function startBackup({ config, run, conn, budget, env }: PgStep): Promise<unknown> {
  // The server ends this session, and the backup with it, if vmsnap never comes back.
  await budget.step(
    "SET idle_session_timeout",
    () => conn.unsafe(`SET idle_session_timeout = ${config.maxHoldSeconds * 1000}`).then((r) => r),
  );
  const label = `vmsnap ${env.runId}`;
  const [row] = await budget.step(
    "pg_backup_start",
    () =>
      (run.version >= 150000
        ? conn`SELECT pg_backup_start(${label}, fast => true) AS lsn`
        : conn`SELECT pg_start_backup(${label}, true, false) AS lsn`).then((r) => r),
    { fix: SLOW },
  );
  return row.lsn;
}

/** A quiesce error from the server, with the GRANT it needs when it was refused. */
function quiesceError(config: PostgresConfig, error: unknown): RunError {
  const e = error as { code?: string; message: string };
  return {
    code: "PluginQuiesceFailed",
    message: `plugin "${config.name}": ${config.mode} failed: ${e.message} (${e.code}). Fix: ${
      e.code === "42501" ? grantFor(config) : "see the server's log."
    }`,
    plugin: config.name,
  };
}

/** pg_backup_stop's row; a session that ended is PluginLockLost. */
async function stopBackup({ run, conn, budget }: PgStep): Promise<postgres.Row> {
  try {
    const [row] = await budget.step(
      "pg_backup_stop",
      () =>
        (run.version >= 150000
          ? conn`SELECT lsn::text AS lsn, labelfile, spcmapfile FROM pg_backup_stop(wait_for_archive => true)`
          : conn`SELECT lsn::text AS lsn, labelfile, spcmapfile FROM pg_stop_backup(false, true)`)
          .then((r) => r),
    );
    return row;
  } catch (error) {
    if (error instanceof PluginFailure) throw error;
    const e = error as { code?: string; message: string };
    if (e.code === "57P05" || /terminat|closed|ECONNRESET/i.test(e.message)) {
      throw new PluginFailure("PluginLockLost", e.message, { cause: error });
    }
    throw new PluginFailure("PluginResumeFailed", `${e.message} (${e.code})`, { cause: error });
  }
}

/** Ends the backup and keeps its backup_label (and tablespace_map) in stateDir, root-only. */
async function release(step: PgStep): Promise<void> {
  const { run, env, facts } = step;
  const row = await stopBackup(step);
  const dir = join(env.stateDir, "postgresql", env.runId);
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const label = join(dir, "backup_label");
  writeFileSync(label, String(row.labelfile), { mode: 0o600 });
  facts.backupLabel = label;
  if (row.spcmapfile) {
    const map = join(dir, "tablespace_map");
    writeFileSync(map, String(row.spcmapfile), { mode: 0o600 });
    facts.tablespaceMap = map;
  }
  facts.backupStopLsn = row.lsn;
  if (run.notices.length) facts.notices = run.notices;
}

/** The `postgresql` plugin type. */
export const postgresqlPlugin = definePlugin({
  type: "postgresql",
  summary: "CHECKPOINT before the freeze, or holds pg_backup_start across the snapshot",
  fields: FIELDS,
  normalize: (values): PostgresConfig => dbConfig("postgresql", values),
  check: (config) => passwordFileProblems(config),
  connectCheck(config) {
    return withSession(config, (signal) => connect(config, signal), async ({ conn }, budget) => {
      const problems: Problem[] = [];
      const missing = await missingGrants(conn, config, budget);
      if (missing.length > 0) {
        problems.push({
          code: "PluginQuiesceFailed",
          message:
            `plugin "${config.name}": role ${config.user} lacks what ${config.mode} mode needs. Fix: ${
              missing.join(" ")
            }`,
          plugin: config.name,
        });
      }
      if (config.mode === "backup") {
        const [row] = await budget.step(
          "SHOW archive_mode",
          () => conn`SELECT current_setting('archive_mode') AS archive_mode`.then((r) => r),
        );
        if (row.archive_mode === "off") {
          problems.push({
            code: "PluginQuiesceFailed",
            message:
              `plugin "${config.name}": archive_mode is off, so a backup taken in "backup" mode cannot be restored without the WAL it needs. Fix: set archive_mode = on and an archive_command, or use mode "checkpoint" when all volumes are snapshotted atomically.`,
            plugin: config.name,
          });
        }
      }
      return problems;
    });
  },
  create(config) {
    const run: PgRun = { version: 0, notices: [] };
    return dbRuntime<PgSession>({
      type: "postgresql",
      config,
      connect: (signal, lost) => connect(config, signal, run.notices, lost),
      quiesce: (session, budget, env, facts) =>
        quiesce({ config, run, conn: session.conn, budget, env, facts }),
      quiesceError: (error) => quiesceError(config, error),
      release: (session, budget, env, facts) =>
        release({ config, run, conn: session.conn, budget, env, facts }),
      lostMessage: (why) =>
        `plugin "${config.name}": the backup session ended before resume (${why}); the backup is not usable, the snapshot is at most crash-consistent for PostgreSQL.`,
      resumeFailedMessage: (why) =>
        `plugin "${config.name}": pg_backup_stop failed: ${why}. Closing the session ended the backup.`,
    });
  },
});
