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
import { MongoClient } from "mongodb";
import type { Problem } from "../src/errors.ts";
import type { Field } from "../src/schema.ts";
import { addSecret } from "../src/secrets.ts";
import {
  asRunError,
  checkSecretFile,
  clearLockMarker,
  PluginFailure,
  readSecret,
  stepResult,
  Watchdog,
  within,
  writeLockMarker,
} from "./db_common.ts";
import type { PluginConfig, PluginDefinition, PluginEnv, RunError } from "./plugin.ts";

/** A normalized mongodb plugin config. */
export interface MongoConfig extends PluginConfig {
  type: "mongodb";
  uri?: string;
  uriFile?: string;
  mode: "fsync-lock" | "fsync";
  timeoutInSeconds: number;
  maxHoldSeconds: number;
}

const FIELDS: Record<string, Field> = {
  uri: { type: "string", nonEmpty: true },
  uriFile: { type: "string", absolutePath: true },
  mode: { type: "string", oneOf: ["fsync-lock", "fsync"], default: "fsync-lock" },
  timeoutInSeconds: { type: "integer", min: 1, max: 3600, default: 30 },
  maxHoldSeconds: { type: "integer", min: 1, max: 86400, default: 300 },
};

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

/** Connects one client; the driver's errors become PluginConnectFailed. */
async function connect(config: MongoConfig): Promise<MongoClient> {
  const uri = uriOf(config);
  const ms = config.timeoutInSeconds * 1000;
  const client = new MongoClient(uri, {
    serverSelectionTimeoutMS: ms,
    connectTimeoutMS: ms,
    maxPoolSize: 1,
    appName: "vmsnap",
  });
  try {
    await client.connect();
    await client.db("admin").command({ ping: 1 });
    return client;
  } catch (error) {
    await client.close().catch(() => {});
    const e = error as { code?: number; codeName?: string; message: string };
    const fix = e.code === 18 || /auth/i.test(e.message)
      ? `check the credentials in ${config.uriFile ? config.uriFile : "the uri"}`
      : "is the server running and reachable at the uri's host?";
    throw new PluginFailure(
      "PluginConnectFailed",
      `plugin "${config.name}": cannot connect to MongoDB: ${e.message}${
        e.codeName ? ` (${e.codeName})` : ""
      }. Fix: ${fix}.`,
    );
  }
}

/** The `mongodb` plugin type. */
export const mongodbPlugin: PluginDefinition<MongoConfig> = {
  type: "mongodb",
  summary: "holds a MongoDB fsync lock across the snapshot (or only flushes)",
  fields: FIELDS,
  normalize(values, ctx) {
    const config = {
      ...values,
      type: "mongodb",
      name: String(values.name),
    } as unknown as MongoConfig;
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
  async connectCheck(config) {
    const client = await connect(config);
    try {
      const status = await client.db("admin").command({
        connectionStatus: 1,
        showPrivileges: true,
      });
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
    } finally {
      await client.close().catch(() => {});
    }
  },
  async recover(config) {
    const client = await connect(config);
    try {
      const admin = client.db("admin");
      const op = await admin.command({ currentOp: 1, $all: false });
      if (!op.fsyncLock) return "the server no longer reports an fsync lock; nothing to release";
      const unlocked = await admin.command({ fsyncUnlock: 1 });
      return `released one fsync lock (the server reports ${unlocked.lockCount ?? 0} left)`;
    } finally {
      await client.close().catch(() => {});
    }
  },
  create(config) {
    let client: MongoClient | undefined;
    let marker: string | undefined;
    let lockedAt = 0;
    let released: string | undefined;
    const watchdog = new Watchdog();
    const unlockOnce = async (): Promise<number> => {
      const result = await client!.db("admin").command({ fsyncUnlock: 1 });
      if (marker) clearLockMarker(marker);
      marker = undefined;
      return Number(result.lockCount ?? 0);
    };
    return {
      async quiesce(env: PluginEnv) {
        const started = performance.now();
        const facts: Record<string, unknown> = { mode: config.mode };
        const budget = config.timeoutInSeconds * 1000;
        try {
          client = await within(
            budget,
            "PluginConnectFailed",
            `plugin "${config.name}": connecting took longer than timeoutInSeconds (${config.timeoutInSeconds} s).`,
            connect(config),
          );
          const admin = client.db("admin");
          const info = await admin.command({ buildInfo: 1 });
          facts.version = info.version;
          if (config.mode === "fsync") {
            await within(
              budget,
              "PluginQuiesceTimeout",
              `plugin "${config.name}": fsync did not finish within ${config.timeoutInSeconds} s.`,
              admin.command({ fsync: 1 }),
            );
            await client.close();
            client = undefined;
            return stepResult(started, [], facts);
          }
          // The lock outlives this connection: leave word for the next run before taking it.
          marker = writeLockMarker(env, "mongodb", config.name);
          const result = await within(
            budget,
            "PluginQuiesceTimeout",
            `plugin "${config.name}": fsync with lock did not finish within ${config.timeoutInSeconds} s. Fix: raise timeoutInSeconds.`,
            admin.command({ fsync: 1, lock: true }),
          );
          lockedAt = performance.now();
          facts.lockCount = Number(result.lockCount ?? 1);
          if (facts.lockCount !== 1) {
            env.log("warning", "mongodb-other-locks", {
              plugin: config.name,
              lockCount: facts.lockCount,
            });
          }
          watchdog.start(config.maxHoldSeconds, async () => {
            env.log("error", "mongodb-watchdog-release", {
              plugin: config.name,
              maxHoldSeconds: config.maxHoldSeconds,
            });
            released = `released by the watchdog after maxHoldSeconds (${config.maxHoldSeconds} s)`;
            await unlockOnce();
          });
          return stepResult(started, [], facts);
        } catch (error) {
          // A lock taken after a timeout fired is still ours: release it once.
          if (client && marker) await unlockOnce().catch(() => {});
          await client?.close().catch(() => {});
          client = undefined;
          return stepResult(
            started,
            [asRunError(config.name, error, "PluginQuiesceFailed")],
            facts,
          );
        }
      },
      async resume(_env: PluginEnv) {
        const started = performance.now();
        watchdog.stop();
        if (!client) return stepResult(started, [], {}, { skipped: true });
        const errors: RunError[] = [];
        const facts: Record<string, unknown> = { holdMs: Math.round(performance.now() - lockedAt) };
        try {
          if (released) {
            errors.push({
              code: "PluginLockLost",
              message:
                `plugin "${config.name}": the fsync lock was ${released} before resume; the snapshot may not be application-consistent.`,
              plugin: config.name,
            });
          } else {
            facts.lockCountAfter = await unlockOnce();
          }
        } catch (error) {
          errors.push({
            code: "PluginResumeFailed",
            message: `plugin "${config.name}": fsyncUnlock failed: ${
              (error as Error).message
            }. The marker stays in stateDir: the next vmsnap start releases the lock. Fix now: db.fsyncUnlock() in mongosh.`,
            plugin: config.name,
          });
        } finally {
          await client.close().catch(() => {});
          client = undefined;
        }
        facts.lockHeld = !released;
        return stepResult(started, errors, facts);
      },
    };
  },
};
