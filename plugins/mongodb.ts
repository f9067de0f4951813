/**
 * The `mongodb` plugin (the official driver).
 *
 * - `fsync-lock` (default): `{fsync: 1, lock: true}`, `lockCount` checked;
 *   resume with exactly one `fsyncUnlock` (never a loop to zero: another tool
 *   may hold its own lock). The fsync lock outlives the client connection, so
 *   a marker is written to stateDir before locking; the next vmsnap start of
 *   any kind finds it, unlocks once if the server still reports the lock,
 *   and says so.
 * - `fsync`: flush only (`{fsync: 1}`), for a journal on the same volume.
 *
 * @module
 */
import type { Db } from "mongodb";
import type { Problem } from "../src/errors.ts";
import type { Field } from "../src/config/spec.ts";
import { addSecret } from "../src/secrets.ts";
import {
  type Budget,
  checkSecretFile,
  clearLockMarker,
  DB_LIMIT_FIELDS,
  dbRuntime,
  type DbSession,
  driverConnectMs,
  PluginFailure,
  readSecret,
  withSession,
  writeLockMarker,
} from "./db_common.ts";
import { type ConfigOf, definePlugin } from "./plugin.ts";

const FIELDS = {
  uri: { type: "string", nonEmpty: true },
  uriFile: { type: "string", absolutePath: true },
  mode: { type: "string", oneOf: ["fsync-lock", "fsync"], default: "fsync-lock" },
  ...DB_LIMIT_FIELDS,
} as const satisfies Record<string, Field>;

/** A normalized mongodb plugin config, as its keys say. */
export type MongoConfig = ConfigOf<"mongodb", typeof FIELDS>;

/** Registers a URI and its credentials as secrets. */
function registerUriSecrets(uri: string): void {
  addSecret(uri);
  const credentials = /^mongodb(?:\+srv)?:\/\/([^@/]+)@/.exec(uri)?.[1];
  if (!credentials) return;
  const [user, password] = credentials.split(":");
  if (!password) return;
  addSecret(password);
  addSecret(decodeURIComponent(password));
  if (user) addSecret(`${user}:${password}`);
}

/** The URI (from uriFile when given), its credentials registered as secrets. */
function uriOf(config: MongoConfig): string {
  const uri = config.uriFile
    ? readSecret(config.uriFile, config.name, "uriFile").trim()
    : config.uri!;
  registerUriSecrets(uri);
  return uri;
}

/** One client with a one-connection pool. */
interface MongoSession extends DbSession {
  admin: Db;
}

/**
 * Connects one client; aborting `signal` closes a half-open one. The
 * driver's errors become PluginConnectFailed.
 */
async function connect(config: MongoConfig, signal: AbortSignal): Promise<MongoSession> {
  const uri = uriOf(config);
  const ms = driverConnectMs(config);
  const { MongoClient } = await import("mongodb");
  const client = new MongoClient(uri, {
    serverSelectionTimeoutMS: ms,
    connectTimeoutMS: ms,
    maxPoolSize: 1,
    appName: "vmsnap",
  });
  const cancel = () => void client.close().catch(() => {});
  signal.addEventListener("abort", cancel, { once: true });
  try {
    await client.connect();
    await client.db("admin").command({ ping: 1 });
    return {
      admin: client.db("admin"),
      end: () => client.close(),
      destroy: cancel,
    };
  } catch (error) {
    cancel();
    const e = error as { code?: number; codeName?: string; message: string };
    const fix = e.code === 18 || /auth/i.test(e.message)
      ? `check the credentials in ${config.uriFile ? config.uriFile : "the uri"}`
      : "is the server running and reachable at the uri's host?";
    throw new PluginFailure(
      "PluginConnectFailed",
      `plugin "${config.name}": cannot connect to MongoDB: ${e.message}${
        e.codeName ? ` (${e.codeName})` : ""
      }. Fix: ${fix}.`,
      { cause: error },
    );
  } finally {
    signal.removeEventListener("abort", cancel);
  }
}

/** The `mongodb` plugin type. */
export const mongodbPlugin = definePlugin({
  type: "mongodb",
  summary: "holds a MongoDB fsync lock across the snapshot (or only flushes)",
  fields: FIELDS,
  normalize(values, ctx): MongoConfig {
    const config = { ...values, type: "mongodb" as const };
    // A URI inline in the config may carry a password: scrub it from everything printed.
    if (typeof config.uri === "string") registerUriSecrets(config.uri);
    if ((config.uri === undefined) === (config.uriFile === undefined)) {
      ctx.validation.problems.push({
        code: "MissingConfigKey",
        message:
          `${ctx.validation.file}: plugin "${config.name}" (${ctx.path}) needs exactly one of "uri" and "uriFile". Fix: put the URI in a root-only file and name it in "uriFile" when it carries a password.`,
        path: ctx.path,
      });
    }
    return config;
  },
  check(config) {
    const problems: Problem[] = [];
    if (config.uriFile) problems.push(...checkSecretFile(config.uriFile, config.name, "uriFile"));
    return problems;
  },
  connectCheck(config) {
    return withSession(config, (signal) => connect(config, signal), async ({ admin }, budget) => {
      const status = await budget.step(
        "connectionStatus",
        () => admin.command({ connectionStatus: 1, showPrivileges: true }),
      );
      const privileges = (status.authInfo?.authenticatedUserPrivileges ?? []) as {
        actions: string[];
      }[];
      const users = (status.authInfo?.authenticatedUsers ?? []) as unknown[];
      if (users.length === 0) return []; // no authentication: nothing to verify
      const actions = new Set(privileges.flatMap((p) => p.actions));
      const missing = ["fsync", "unlock"].filter((a) => !actions.has(a));
      if (missing.length === 0) return [];
      return [{
        code: "PluginQuiesceFailed",
        message: `plugin "${config.name}": the user lacks the ${
          missing.join(", ")
        } action(s). Fix: db.grantRolesToUser(USER, ["hostManager"]) (or a role with fsync and unlock on the cluster).`,
        plugin: config.name,
      }];
    });
  },
  recover(config) {
    return withSession(config, (signal) => connect(config, signal), async ({ admin }, budget) => {
      const op = await budget.step("currentOp", () => admin.command({ currentOp: 1, $all: false }));
      if (!op.fsyncLock) return "the server no longer reports an fsync lock; nothing to release";
      const unlocked = await budget.step("fsyncUnlock", () => admin.command({ fsyncUnlock: 1 }));
      return `released one fsync lock (the server reports ${unlocked.lockCount ?? 0} left)`;
    });
  },
  create(config) {
    let marker: string | undefined;
    const unlockOnce = async ({ admin }: MongoSession, budget: Budget): Promise<number> => {
      const result = await budget.step("fsyncUnlock", () => admin.command({ fsyncUnlock: 1 }));
      if (marker) clearLockMarker(marker);
      marker = undefined;
      return Number(result.lockCount ?? 0);
    };
    return dbRuntime<MongoSession>({
      type: "mongodb",
      config,
      connect: (signal) => connect(config, signal),
      async quiesce(session, budget, env, facts) {
        facts.mode = config.mode;
        const info = await budget.step("buildInfo", () => session.admin.command({ buildInfo: 1 }));
        facts.version = info.version;
        if (config.mode === "fsync") {
          await budget.step("fsync", () => session.admin.command({ fsync: 1 }));
          return false;
        }
        // The lock outlives this connection: leave word for the next run before taking it.
        marker = writeLockMarker(env, "mongodb", config.name);
        const result = await budget.step(
          "fsync with lock",
          () => session.admin.command({ fsync: 1, lock: true }),
        );
        facts.lockCount = Number(result.lockCount ?? 1);
        if (facts.lockCount !== 1) {
          env.log("warning", "mongodb-other-locks", {
            plugin: config.name,
            lockCount: facts.lockCount,
          });
        }
        return true;
      },
      // A lock taken after a deadline passed is still ours: release it once (else the marker stays for the next start).
      abandon: async (session, budget) => {
        if (marker) await unlockOnce(session, budget);
      },
      watchdogRelease: async (session, budget) => {
        await unlockOnce(session, budget);
      },
      async release(session, budget, _env, facts) {
        facts.lockCountAfter = await unlockOnce(session, budget);
      },
      lostMessage: (why) =>
        `plugin "${config.name}": the fsync lock was lost before resume (${why}); the snapshot may not be application-consistent.`,
      resumeFailedMessage: (why) =>
        `plugin "${config.name}": fsyncUnlock failed: ${why}. The marker stays in stateDir: the next vmsnap start releases the lock. Fix now: db.fsyncUnlock() in mongosh.`,
    });
  },
});
