/**
 * The `redis` plugin: the snapshot holds every write acknowledged before
 * quiesce.
 *
 * - AOF on: `CLIENT PAUSE <maxHoldSeconds> WRITE` (Redis ≥ 6.2), then waits
 *   until the AOF buffer is written and no fsync is pending; the freeze
 *   flushes the file to disk.
 * - RDB only: `BGSAVE` and wait for it, then pause writes; when writes came
 *   in meanwhile, one more `BGSAVE` while paused, so the file on disk is the
 *   state at the snapshot.
 * - `mode: "bgsave"` (or a Redis older than 6.2 in `auto`): `BGSAVE` only,
 *   nothing held; the snapshot holds the state at the end of the save.
 *
 * The pause outlives the connection: if vmsnap dies, the server lifts it
 * after `maxHoldSeconds` by itself. Resume: `CLIENT UNPAUSE`.
 *
 * @module
 */
import type { Field } from "../src/config/spec.ts";
import {
  type Budget,
  DB_FIELDS,
  dbConfig,
  dbRuntime,
  type DbSession,
  passwordFileProblems,
  passwordOf,
  pause,
  PluginFailure,
  withSession,
} from "./db_common.ts";
import { type ConfigOf, definePlugin, type NotHeld, type PluginEnv } from "./plugin.ts";
import { infoFields, RedisConnection, RedisError } from "./resp.ts";

const FIELDS = {
  socket: { type: "string", absolutePath: true },
  host: { type: "string", nonEmpty: true, default: "127.0.0.1" },
  port: { type: "integer", min: 1, max: 65535, default: 6379 },
  /** An ACL user (Redis 6+); without it, the default user. */
  user: { type: "string", nonEmpty: true },
  mode: { type: "string", oneOf: ["auto", "pause", "bgsave"], default: "auto" },
  ...DB_FIELDS,
} as const satisfies Record<string, Field>;

/** A normalized redis plugin config, as its keys say. */
export type RedisConfig = ConfigOf<"redis", typeof FIELDS>;

/** How to quiesce. */
export type RedisMode = RedisConfig["mode"];

/** The one connection, with what the plugin learnt. */
interface RedisSession extends DbSession {
  redis: RedisConnection;
}

/** Connects and authenticates; aborting `signal` closes a half-open connection. */
async function connect(
  config: RedisConfig,
  signal: AbortSignal,
  lost: (why: string) => void = () => {},
): Promise<RedisSession> {
  const password = passwordOf(config);
  const where = config.socket ? `socket ${config.socket}` : `${config.host}:${config.port}`;
  let redis: RedisConnection | undefined;
  try {
    redis = await RedisConnection.open(
      config.socket ? { socket: config.socket } : { host: config.host, port: config.port },
      signal,
      lost,
    );
    if (password !== undefined) {
      await (config.user
        ? redis.command("AUTH", config.user, password)
        : redis.command("AUTH", password));
    }
    await redis.command("PING");
    const session = redis;
    return { redis: session, end: () => session.end(), destroy: () => session.destroy() };
  } catch (error) {
    redis?.destroy();
    const e = error as { code?: string; message: string };
    const fix = e.code === "WRONGPASS" || e.code === "NOAUTH"
      ? `check the user and the password${config.passwordFile ? ` in ${config.passwordFile}` : ""}`
      : e.code === "ENOENT" || e.code === "ECONNREFUSED"
      ? `is the server running and listening on ${where}?`
      : "check that the server is up and reachable";
    throw new PluginFailure(
      "PluginConnectFailed",
      `plugin "${config.name}": cannot connect to Redis at ${where}${
        config.user ? ` as ${config.user}` : ""
      }: ${e.message}. Fix: ${fix}.`,
      { cause: error },
    );
  }
}

/** `INFO <section>` as fields, within the budget. */
async function info(redis: RedisConnection, section: string, budget: Budget) {
  return infoFields(await budget.step(`INFO ${section}`, () => redis.command("INFO", section)));
}

/** `major.minor` ≥ 6.2 (CLIENT PAUSE … WRITE). */
function canPauseWrites(version: string): boolean {
  const [major, minor] = version.split(".").map(Number);
  return major > 6 || (major === 6 && minor >= 2);
}

/** Starts a BGSAVE and waits for it to finish within the budget. */
async function bgsave(redis: RedisConnection, budget: Budget, plugin: string): Promise<void> {
  let persistence = await info(redis, "persistence", budget);
  // Another save is running: wait for it, then ours (it may predate writes we must hold).
  while (persistence.get("rdb_bgsave_in_progress") === "1" && budget.remainingMs() > 0) {
    await pause(100, budget.signal);
    persistence = await info(redis, "persistence", budget);
  }
  const saves = Number(persistence.get("rdb_saves") ?? 0);
  await budget.step("BGSAVE", () => redis.command("BGSAVE"));
  for (;;) {
    if (budget.signal.aborted) {
      throw new PluginFailure(
        "Interrupted",
        `plugin "${plugin}": BGSAVE abandoned: vmsnap received a signal.`,
      );
    }
    persistence = await info(redis, "persistence", budget);
    if (
      persistence.get("rdb_bgsave_in_progress") === "0" &&
      Number(persistence.get("rdb_saves") ?? 0) > saves
    ) break;
    if (budget.remainingMs() < 100) {
      throw new PluginFailure(
        "PluginQuiesceTimeout",
        `plugin "${plugin}": BGSAVE did not finish within timeoutInSeconds (${budget.options.seconds} s). Fix: raise timeoutInSeconds (a save writes the whole dataset), or use AOF persistence.`,
      );
    }
    await pause(100, budget.signal);
  }
  if (persistence.get("rdb_last_bgsave_status") !== "ok") {
    throw new PluginFailure(
      "PluginQuiesceFailed",
      `plugin "${plugin}": BGSAVE failed (rdb_last_bgsave_status ${
        persistence.get("rdb_last_bgsave_status")
      }). Fix: read the Redis log (a full disk, or no permission on its dir).`,
    );
  }
}

/** Waits until every acknowledged write is in the AOF file and no fsync is pending. */
async function aofWritten(redis: RedisConnection, budget: Budget): Promise<void> {
  for (;;) {
    const persistence = await info(redis, "persistence", budget);
    if (
      persistence.get("aof_buffer_length") === "0" &&
      persistence.get("aof_pending_bio_fsync") === "0"
    ) return;
    if (budget.remainingMs() < 50) {
      throw new PluginFailure(
        "PluginQuiesceTimeout",
        `plugin "${budget.options.plugin}": the AOF was not written and fsynced within timeoutInSeconds (${budget.options.seconds} s) (aof_buffer_length ${
          persistence.get("aof_buffer_length")
        }, aof_pending_bio_fsync ${
          persistence.get("aof_pending_bio_fsync")
        }). vmsnap lifted the pause. Fix: check the disk under Redis's dir (slow or full), or raise timeoutInSeconds.`,
      );
    }
    await pause(20, budget.signal);
  }
}

/** Facts a restore check needs: persistence, last save, replication offset. */
async function positions(redis: RedisConnection, budget: Budget): Promise<Record<string, unknown>> {
  const replication = await info(redis, "replication", budget);
  return {
    lastsave: Number(await budget.step("LASTSAVE", () => redis.command("LASTSAVE"))),
    replicationOffset: Number(replication.get("master_repl_offset") ?? 0),
  };
}

/** What quiesce needs, as ACL rules. */
const NEEDED: { rule: string; command: string[] }[] = [
  { rule: "+info", command: ["INFO", "persistence"] },
  { rule: "+lastsave", command: ["LASTSAVE"] },
  { rule: "+bgsave", command: ["BGSAVE"] },
  { rule: "+client|pause", command: ["CLIENT", "PAUSE", "1", "WRITE"] },
  { rule: "+client|unpause", command: ["CLIENT", "UNPAUSE"] },
];

/** The rules the user lacks, by `ACL DRYRUN` (Redis 7). */
async function missingRules(redis: RedisConnection, budget: Budget): Promise<string[]> {
  const user = String(await budget.step("ACL WHOAMI", () => redis.command("ACL", "WHOAMI")));
  const missing: string[] = [];
  for (const need of NEEDED) {
    const answer = await budget.step(
      "ACL DRYRUN",
      () => redis.command("ACL", "DRYRUN", user, ...need.command),
    );
    if (answer !== "OK") missing.push(need.rule);
  }
  return missing;
}

/** Whether this run's pause is in force (it outlives the session). */
interface RedisRun {
  paused: boolean;
}

/** What a quiesce works with. */
interface RedisStep {
  config: RedisConfig;
  run: RedisRun;
  redis: RedisConnection;
  budget: Budget;
  env: PluginEnv;
  facts: Record<string, unknown>;
}

/** Lifts the pause (resume, the watchdog, a failed quiesce). */
async function unpauseWrites(
  run: RedisRun,
  { redis }: RedisSession,
  budget: Budget,
): Promise<void> {
  await budget.step("CLIENT UNPAUSE", () => redis.command("CLIENT", "UNPAUSE"));
  run.paused = false;
}

/**
 * The mode this server allows: `pause` needs CLIENT PAUSE … WRITE (6.2);
 * `auto` falls back to `bgsave` (with a warning), an explicit `pause` fails.
 */
function modeFor({ config, env }: RedisStep, version: string): RedisMode {
  if (config.mode === "bgsave" || canPauseWrites(version)) return config.mode;
  if (config.mode === "pause") {
    throw new PluginFailure(
      "PluginQuiesceFailed",
      `plugin "${config.name}": Redis ${version} cannot pause writes (CLIENT PAUSE … WRITE needs 6.2). Fix: upgrade Redis, or set "mode": "bgsave" (the snapshot then holds the state at the end of the save).`,
    );
  }
  env.log("warning", "redis-no-pause", { plugin: config.name, version });
  return "bgsave";
}

/** A BGSAVE only: nothing held, so the run is at most filesystem-consistent. */
async function saveOnly(step: RedisStep, version: string): Promise<NotHeld> {
  const { config, redis, budget, facts } = step;
  await bgsave(redis, budget, config.name);
  Object.assign(facts, await positions(redis, budget));
  // Nothing held: writes after the save are not in the snapshot's RDB.
  facts.consistentAt = "bgsave";
  return {
    reason: `plugin "${config.name}": ${
      config.mode === "bgsave"
        ? 'mode "bgsave"'
        : `Redis ${version} cannot pause writes (6.2 can), so`
    } BGSAVE only, writes not held: they go on until the freeze, so the snapshot is at most filesystem-consistent (the RDB holds the state at the end of the save).`,
    chosen: config.mode === "bgsave",
  };
}

/** Writes paused until resume, with the AOF written (or an RDB saved) first. */
async function pauseWrites(step: RedisStep, aof: boolean): Promise<true> {
  const { config, run, redis, budget, facts } = step;
  if (!aof) await bgsave(redis, budget, config.name);
  run.paused = true;
  await budget.step(
    "CLIENT PAUSE",
    () => redis.command("CLIENT", "PAUSE", config.maxHoldSeconds * 1000, "WRITE"),
  );
  if (aof) {
    await aofWritten(redis, budget);
  } else {
    const changed = Number(
      (await info(redis, "persistence", budget)).get("rdb_changes_since_last_save"),
    );
    if (changed > 0) await bgsave(redis, budget, config.name);
  }
  Object.assign(facts, await positions(redis, budget));
  facts.consistentAt = "snapshot";
  return true;
}

/** Quiesce: writes paused (held until resume), or only a BGSAVE where they cannot be. */
async function quiesce(step: RedisStep): Promise<true | NotHeld> {
  const { run, redis, budget, facts } = step;
  run.paused = false;
  const server = await info(redis, "server", budget);
  const version = server.get("redis_version") ?? "0";
  const persistence = await info(redis, "persistence", budget);
  const aof = persistence.get("aof_enabled") === "1";
  facts.version = version;
  facts.persistence = aof ? "aof" : "rdb";
  const mode = modeFor(step, version);
  facts.mode = mode === "bgsave" ? "bgsave" : "pause";
  return mode === "bgsave" ? await saveOnly(step, version) : await pauseWrites(step, aof);
}

/** The `redis` plugin type. */
export const redisPlugin = definePlugin({
  type: "redis",
  summary: "pauses Redis writes (CLIENT PAUSE WRITE) with the AOF written, or BGSAVEs first",
  fields: FIELDS,
  normalize: (values): RedisConfig => dbConfig("redis", values),
  check: (config) => passwordFileProblems(config),
  connectCheck(config) {
    return withSession(config, (signal) => connect(config, signal), async ({ redis }, budget) => {
      let missing: string[];
      try {
        missing = await missingRules(redis, budget);
      } catch (error) {
        if (!(error instanceof RedisError)) throw error;
        return [{
          code: "PluginQuiesceFailed",
          message:
            `plugin "${config.name}": cannot verify the user's permissions (${error.message}). Fix: ACL SETUSER ${
              config.user ?? "default"
            } +acl|whoami +acl|dryrun, or check by hand that it has ${
              NEEDED.map((n) => n.rule).join(" ")
            }.`,
          plugin: config.name,
        }];
      }
      if (missing.length === 0) return [];
      return [{
        code: "PluginQuiesceFailed",
        message: `plugin "${config.name}": the Redis user lacks ${
          missing.join(" ")
        }, which quiesce needs. Fix: ACL SETUSER ${config.user ?? "default"} ${missing.join(" ")}`,
        plugin: config.name,
      }];
    });
  },
  create(config) {
    const run: RedisRun = { paused: false };
    const unpause = (session: RedisSession, budget: Budget) => unpauseWrites(run, session, budget);
    return dbRuntime<RedisSession>({
      type: "redis",
      config,
      connect: (signal, lost) => connect(config, signal, lost),
      quiesce: (session, budget, env, facts) =>
        quiesce({ config, run, redis: session.redis, budget, env, facts }),
      // The pause outlives the session: lift it before giving up.
      abandon: async (session, budget) => {
        if (run.paused) await unpause(session, budget);
      },
      watchdogRelease: unpause,
      // The pause is the server's: a lost connection leaves it in force until it expires.
      afterLoss: (budget) =>
        withSession(
          { ...config, timeoutInSeconds: Math.max(1, Math.round(budget.remainingMs() / 1000)) },
          (signal) => connect(config, signal),
          async (session, fresh) => {
            await unpause(session, fresh);
            return "vmsnap lifted the pause on a new connection (CLIENT UNPAUSE).";
          },
        ),
      release: unpause,
      lostMessage: (why) =>
        `plugin "${config.name}": the connection was lost before resume (${why}); writes may have resumed before the snapshot, which may not hold the state at quiesce.`,
      resumeFailedMessage: (why) =>
        `plugin "${config.name}": CLIENT UNPAUSE failed: ${why}. The pause ends by itself after maxHoldSeconds (${config.maxHoldSeconds} s). Fix now: redis-cli CLIENT UNPAUSE.`,
    });
  },
});
