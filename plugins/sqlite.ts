/**
 * The `sqlite` plugin: for each database file, one connection that runs
 * `PRAGMA wal_checkpoint(TRUNCATE)` (WAL mode) and then holds the write lock
 * (`BEGIN IMMEDIATE`) from quiesce to resume, so no writer commits while the
 * snapshot is taken; readers go on. The lock ends with the connection: on
 * resume, on any failure, by the watchdog, and with the process if vmsnap
 * dies.
 *
 * SQLite through the runtime's built-in driver (`node:sqlite`, in Deno and in
 * the compiled binary), loaded only when a plugin of this type runs. Its
 * calls are synchronous: each waits at most {@link BUSY_MS} for another
 * writer, and the plugin retries within `timeoutInSeconds`, so the run's
 * signals and the other plugins are never held up longer than that.
 *
 * @module
 */
import { existsSync, statSync } from "node:fs";
import type { DatabaseSync } from "node:sqlite";
import type { Problem } from "../src/errors.ts";
import type { Field } from "../src/config/spec.ts";
import {
  type Budget,
  DB_LIMIT_FIELDS,
  dbRuntime,
  type DbSession,
  pause,
  PluginFailure,
  withSession,
} from "./db_common.ts";
import { type ConfigOf, definePlugin } from "./plugin.ts";

/** How long one SQLite call may wait for another connection's lock. */
export const BUSY_MS = 100;

const FIELDS = {
  /** Absolute paths of the database files. */
  files: {
    type: "array",
    items: { type: "string", absolutePath: true },
    minItems: 1,
    required: true,
  },
  ...DB_LIMIT_FIELDS,
} as const satisfies Record<string, Field>;

/** A normalized sqlite plugin config, as its keys say. */
export type SqliteConfig = ConfigOf<"sqlite", typeof FIELDS>;

/** The open databases, one connection each. */
interface SqliteSession extends DbSession {
  dbs: { file: string; db: DatabaseSync }[];
}

/** What is wrong with a database file before anything opens it. */
function fileProblem(file: string): string | undefined {
  if (!existsSync(file)) return "does not exist";
  if (!statSync(file).isFile()) return "is not a regular file";
  return undefined;
}

/** Opens every file (never creating one). */
async function connect(config: SqliteConfig): Promise<SqliteSession> {
  const { DatabaseSync } = await import("node:sqlite");
  const dbs: SqliteSession["dbs"] = [];
  const closeAll = () => {
    for (const { db } of dbs.splice(0)) {
      try {
        db.close();
      } catch {
        // already closed
      }
    }
  };
  try {
    for (const file of config.files) {
      const wrong = fileProblem(file);
      if (wrong) throw new Error(`${file} ${wrong}`);
      const db = new DatabaseSync(file);
      dbs.push({ file, db });
      db.exec(`PRAGMA busy_timeout = ${BUSY_MS}`);
      // Fails here, not in quiesce, when the file is not a database.
      db.prepare("PRAGMA schema_version").get();
    }
  } catch (error) {
    closeAll();
    throw new PluginFailure(
      "PluginConnectFailed",
      `plugin "${config.name}": cannot open ${
        (error as Error).message
      }. Fix: list existing SQLite database files in "files".`,
      { cause: error },
    );
  }
  return { dbs, end: () => Promise.resolve(closeAll()), destroy: closeAll };
}

/** Ends each connection's transaction (nothing was written: only the lock goes). */
function rollback({ dbs }: SqliteSession): void {
  for (const { db } of dbs) if (db.isTransaction) db.exec("ROLLBACK");
}

const busy = (error: unknown) => /SQLITE_BUSY|database is locked/i.test(String(error));

/** Runs `work` until SQLite stops answering busy, within the budget. */
async function untilNotBusy<T>(what: string, budget: Budget, work: () => T): Promise<T> {
  for (;;) {
    if (budget.signal.aborted) {
      throw new PluginFailure(
        "Interrupted",
        `plugin "${budget.options.plugin}": ${what} abandoned: vmsnap received a signal.`,
      );
    }
    try {
      return work();
    } catch (error) {
      if (!busy(error)) throw error;
      if (budget.remainingMs() < BUSY_MS) {
        throw new PluginFailure(
          "PluginQuiesceTimeout",
          `plugin "${budget.options.plugin}": ${what} waited timeoutInSeconds (${budget.options.seconds} s) for another connection's lock. Nothing is held. Fix: find the long transaction (fuser on the file), or raise timeoutInSeconds.`,
          { cause: error },
        );
      }
      await pause(10, budget.signal);
    }
  }
}

/** The `sqlite` plugin type. */
export const sqlitePlugin = definePlugin({
  type: "sqlite",
  summary: "holds each SQLite file's write lock (BEGIN IMMEDIATE) after a WAL checkpoint",
  fields: FIELDS,
  check(config) {
    const problems: Problem[] = [];
    for (const file of config.files) {
      const wrong = fileProblem(file);
      if (wrong) {
        problems.push({
          code: "PluginConnectFailed",
          message:
            `plugin "${config.name}": the database file ${file} ${wrong}. Fix: correct "files".`,
          plugin: config.name,
        });
      }
    }
    return problems;
  },
  connectCheck(config) {
    return withSession(config, () => connect(config), () => Promise.resolve([]));
  },
  create(config) {
    return dbRuntime<SqliteSession>({
      type: "sqlite",
      config,
      connect: () => connect(config),
      async quiesce({ dbs }, budget, _env, facts) {
        const files: Record<string, unknown>[] = [];
        facts.files = files;
        for (const { file, db } of dbs) {
          const mode = String(
            (db.prepare("PRAGMA journal_mode").get() as { journal_mode: string }).journal_mode,
          );
          const entry: Record<string, unknown> = { file, journalMode: mode };
          files.push(entry);
          if (mode === "wal") {
            const result = await untilNotBusy("PRAGMA wal_checkpoint(TRUNCATE)", budget, () => {
              const row = db.prepare("PRAGMA wal_checkpoint(TRUNCATE)").get() as {
                busy: number;
                log: number;
                checkpointed: number;
              };
              if (row.busy) throw new Error("SQLITE_BUSY: checkpoint blocked");
              return row;
            });
            entry.checkpointedFrames = result.checkpointed;
          }
          await untilNotBusy("BEGIN IMMEDIATE", budget, () => db.exec("BEGIN IMMEDIATE"));
        }
        return true;
      },
      // Ending each connection (below) ends its transaction; say so explicitly first.
      release: (session) => Promise.resolve(rollback(session)),
      // The watchdog fires while the filesystem may be frozen: closing a WAL database
      // checkpoints and writes, which would block on the freeze. A ROLLBACK of nothing
      // only drops the lock; the connections are closed at resume, after the thaw.
      watchdogRelease: (session) => Promise.resolve(rollback(session)),
      lostMessage: (why) =>
        `plugin "${config.name}": the write lock ended before resume (${why}); writers may have committed before the snapshot.`,
      resumeFailedMessage: (why) =>
        `plugin "${config.name}": releasing the write lock failed: ${why}. Closing the connection released it.`,
    });
  },
});
