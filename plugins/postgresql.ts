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
import postgres from "postgres";
import type { Problem } from "../src/errors.ts";
import type { Field } from "../src/schema.ts";
import { addSecret } from "../src/secrets.ts";
import {
  asRunError,
  checkSecretFile,
  DB_FIELDS,
  passwordOf,
  PluginFailure,
  stepResult,
  Watchdog,
  within,
} from "./db_common.ts";
import type { PluginConfig, PluginDefinition, PluginEnv, RunError } from "./plugin.ts";

/** A normalized postgresql plugin config. */
export interface PostgresConfig extends PluginConfig {
  type: "postgresql";
  /** A socket directory (absolute path) or a host name. */
  host: string;
  port: number;
  user: string;
  database: string;
  passwordFile?: string;
  password?: string;
  mode: "checkpoint" | "backup";
  timeoutInSeconds: number;
  maxHoldSeconds: number;
}

const FIELDS: Record<string, Field> = {
  host: { type: "string", nonEmpty: true, default: "/var/run/postgresql" },
  port: { type: "integer", min: 1, max: 65535, default: 5432 },
  user: { type: "string", nonEmpty: true, default: "postgres" },
  database: { type: "string", nonEmpty: true, default: "postgres" },
  mode: { type: "string", oneOf: ["checkpoint", "backup"], default: "checkpoint" },
  ...DB_FIELDS,
};

type Sql = postgres.Sql;
type Reserved = postgres.ReservedSql;

/** Opens a one-connection pool and reserves its connection. */
async function connect(
  config: PostgresConfig,
  notices: string[],
  onClose: () => void = () => {},
): Promise<{ sql: Sql; conn: Reserved }> {
  const password = passwordOf(config);
  const where = config.host.startsWith("/")
    ? `${config.host}/.s.PGSQL.${config.port}`
    : `${config.host}:${config.port}`;
  const sql = postgres({
    host: config.host,
    port: config.port,
    user: config.user,
    database: config.database,
    password,
    max: 1,
    connect_timeout: config.timeoutInSeconds,
    idle_timeout: 0,
    prepare: false,
    onnotice: (notice) => notices.push(String(notice.message)),
    // The session ended (server restart, terminated backend): whatever it held is gone.
    onclose: onClose,
    connection: { application_name: "vmsnap" },
  });
  try {
    const conn = await sql.reserve();
    await conn`SELECT 1`;
    return { sql, conn };
  } catch (error) {
    await sql.end({ timeout: 1 }).catch(() => {});
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
    );
  }
}

/** Server version as a number (150004 for 15.4). */
async function versionNumber(conn: Reserved): Promise<number> {
  const [row] = await conn`SELECT current_setting('server_version_num')::int AS v`;
  return Number(row.v);
}

/** What quiesce needs that the role lacks, as GRANT statements. */
async function missingGrants(conn: Reserved, config: PostgresConfig): Promise<string[]> {
  const version = await versionNumber(conn);
  const [role] = await conn`SELECT rolsuper FROM pg_roles WHERE rolname = current_user`;
  if (role?.rolsuper) return [];
  const missing: string[] = [];
  if (config.mode === "checkpoint") {
    if (version < 150000) {
      return [
        `ALTER ROLE ${config.user} SUPERUSER; -- CHECKPOINT needs superuser before PostgreSQL 15`,
      ];
    }
    const [r] = await conn`SELECT pg_has_role(current_user, 'pg_checkpoint', 'MEMBER') AS ok`;
    if (!r.ok) missing.push(`GRANT pg_checkpoint TO ${config.user};`);
  } else {
    const [start, stop] = version >= 150000
      ? ["pg_backup_start(text, boolean)", "pg_backup_stop(boolean)"]
      : ["pg_start_backup(text, boolean, boolean)", "pg_stop_backup(boolean, boolean)"];
    for (const fn of [start, stop]) {
      const [r] = await conn`SELECT has_function_privilege(${fn}, 'EXECUTE') AS ok`;
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

/** The `postgresql` plugin type. */
export const postgresqlPlugin: PluginDefinition<PostgresConfig> = {
  type: "postgresql",
  summary: "CHECKPOINT before the freeze, or holds pg_backup_start across the snapshot",
  fields: FIELDS,
  normalize(values) {
    // A password inline in the config is scrubbed from everything printed.
    if (typeof values.password === "string") addSecret(values.password);
    return {
      ...values,
      type: "postgresql",
      name: String(values.name),
    } as unknown as PostgresConfig;
  },
  check(config) {
    const problems: Problem[] = [];
    if (config.passwordFile) {
      problems.push(...checkSecretFile(config.passwordFile, config.name, "passwordFile"));
    }
    return problems;
  },
  async connectCheck(config) {
    const { sql, conn } = await connect(config, []);
    try {
      const problems: Problem[] = [];
      const missing = await missingGrants(conn, config);
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
        const [row] = await conn`SELECT current_setting('archive_mode') AS archive_mode`;
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
    } finally {
      conn.release();
      await sql.end({ timeout: 1 }).catch(() => {});
    }
  },
  create(config) {
    let sql: Sql | undefined;
    let conn: Reserved | undefined;
    let lost: string | undefined;
    let version = 0;
    let startedAt = 0;
    const notices: string[] = [];
    const watchdog = new Watchdog();
    const close = async () => {
      conn?.release();
      conn = undefined;
      await sql?.end({ timeout: 2 }).catch(() => {});
      sql = undefined;
    };
    return {
      async quiesce(env: PluginEnv) {
        const started = performance.now();
        const facts: Record<string, unknown> = { mode: config.mode };
        const budget = config.timeoutInSeconds * 1000;
        try {
          ({ sql, conn } = await within(
            budget,
            "PluginConnectFailed",
            `plugin "${config.name}": connecting took longer than timeoutInSeconds (${config.timeoutInSeconds} s).`,
            connect(config, notices, () => {
              if (startedAt > 0) lost ??= "the server closed the session";
            }),
          ));
          version = await versionNumber(conn);
          const [v] = await conn`SHOW server_version`;
          facts.version = v.server_version;
          const work = async () => {
            if (config.mode === "checkpoint") {
              await conn!`CHECKPOINT`;
            } else {
              // The server ends this session, and the backup with it, if vmsnap never comes back.
              await conn!.unsafe(`SET idle_session_timeout = ${config.maxHoldSeconds * 1000}`);
              const label = `vmsnap ${env.runId}`;
              const [row] = version >= 150000
                ? await conn!`SELECT pg_backup_start(${label}, fast => true) AS lsn`
                : await conn!`SELECT pg_start_backup(${label}, true, false) AS lsn`;
              facts.backupStartLsn = row.lsn;
              startedAt = performance.now();
            }
            const [wal] = await conn!`
              SELECT pg_current_wal_lsn()::text AS lsn, timeline_id AS timeline, checkpoint_lsn::text AS checkpoint
              FROM pg_control_checkpoint()`;
            Object.assign(facts, {
              walLsn: wal.lsn,
              timeline: Number(wal.timeline),
              checkpointLsn: wal.checkpoint,
            });
          };
          await within(
            Math.max(1, budget - (performance.now() - started)),
            "PluginQuiesceTimeout",
            `plugin "${config.name}": ${
              config.mode === "checkpoint" ? "CHECKPOINT" : "pg_backup_start"
            } did not finish within timeoutInSeconds (${config.timeoutInSeconds} s). Fix: raise timeoutInSeconds; a checkpoint after a write burst can take long.`,
            work(),
          );
          if (config.mode === "checkpoint") {
            // Nothing is held: the snapshot is crash-consistent by design, and the checkpoint keeps recovery short.
            await close();
          } else {
            watchdog.start(config.maxHoldSeconds, async () => {
              env.log("error", "postgresql-watchdog-release", {
                plugin: config.name,
                maxHoldSeconds: config.maxHoldSeconds,
              });
              lost ??= `ended by the watchdog after maxHoldSeconds (${config.maxHoldSeconds} s)`;
              await close();
            });
          }
          return stepResult(started, [], facts);
        } catch (error) {
          await close();
          const e = error as { code?: string; message: string };
          const failure = error instanceof PluginFailure
            ? asRunError(config.name, error, "PluginQuiesceFailed")
            : {
              code: "PluginQuiesceFailed" as const,
              message:
                `plugin "${config.name}": ${config.mode} failed: ${e.message} (${e.code}). Fix: ${
                  e.code === "42501" ? grantFor(config) : "see the server's log."
                }`,
              plugin: config.name,
            };
          return stepResult(started, [failure], facts);
        }
      },
      async resume(env: PluginEnv) {
        const started = performance.now();
        watchdog.stop();
        if (config.mode === "checkpoint" || (!conn && !lost)) {
          return stepResult(started, [], {}, { skipped: true });
        }
        const errors: RunError[] = [];
        const facts: Record<string, unknown> = {
          holdMs: Math.round(performance.now() - startedAt),
        };
        try {
          if (lost || !conn) throw new PluginFailure("PluginLockLost", lost ?? "the session ended");
          const stop = version >= 150000
            ? conn`SELECT lsn::text AS lsn, labelfile, spcmapfile FROM pg_backup_stop(wait_for_archive => true)`
            : conn`SELECT lsn::text AS lsn, labelfile, spcmapfile FROM pg_stop_backup(false, true)`;
          const [row] = await within(
            config.timeoutInSeconds * 1000,
            "PluginResumeFailed",
            `plugin "${config.name}": pg_backup_stop did not answer within timeoutInSeconds (${config.timeoutInSeconds} s); closing the session ended the backup.`,
            stop,
          );
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
          if (notices.length) facts.notices = notices;
        } catch (error) {
          const e = error as { code?: string; message: string };
          const isLost = error instanceof PluginFailure || e.code === "57P05" ||
            /terminat|closed|ECONNRESET/i.test(e.message);
          lost ??= isLost ? e.message : undefined;
          errors.push({
            code: isLost ? "PluginLockLost" : "PluginResumeFailed",
            message: isLost
              ? `plugin "${config.name}": the backup session ended before resume (${e.message}); the backup is not usable, the snapshot is at most crash-consistent for PostgreSQL.`
              : `plugin "${config.name}": pg_backup_stop failed: ${e.message} (${e.code}). Closing the session ended the backup.`,
            plugin: config.name,
          });
        } finally {
          await close();
        }
        facts.lockHeld = !lost;
        return stepResult(started, errors, facts);
      },
    };
  },
};
