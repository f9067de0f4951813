import assert from "node:assert/strict";
import { parseConfig } from "../../src/config/config.ts";
import { definePlugin, type StepResult } from "../../plugins/plugin.ts";
import type { MysqlConfig } from "../../plugins/mysql.ts";
import { PLUGINS } from "../../plugins/registry.ts";

/** True when two types are the same (a compile-time check: `deno check` fails otherwise). */
type Same<A, B> = (<T>() => T extends A ? 1 : 2) extends (<T>() => T extends B ? 1 : 2) ? true
  : false;

const done: StepResult = { ok: true, durationMs: 0, errors: [], facts: {} };

Deno.test("definePlugin: the config is the validated keys with their defaults, typed from them", () => {
  const demo = definePlugin({
    type: "demo",
    summary: "a test's plugin",
    fields: {
      mode: { type: "string", oneOf: ["low", "high"], default: "low" },
      port: { type: "integer", min: 1, max: 65535, default: 7 },
      socket: { type: "string", absolutePath: true },
    },
    check: (config) => {
      // Typed from the fields: a oneOf union, a number, an optional string.
      const typed: Same<
        typeof config,
        {
          type: "demo";
          name: string;
          stage?: number;
          mode: "low" | "high";
          port: number;
          socket?: string;
        }
      > = true;
      return typed ? [] : [{ code: "InvalidConfigValue", message: "never" }];
    },
    create: () => ({ quiesce: () => Promise.resolve(done), resume: () => Promise.resolve(done) }),
  });
  const { config, problems } = parseConfig(
    `{"plugins": [{"type": "demo", "mode": "high"}, {"type": "demo", "name": "b", "port": 8}]}`,
    "/x.json",
    { plugins: new Map([["demo", demo]]) },
  );
  assert.deepEqual(problems, []);
  assert.deepEqual(config.plugins, [
    { type: "demo", name: "demo", stage: 0, mode: "high", port: 7 },
    { type: "demo", name: "b", stage: 0, mode: "low", port: 8 },
  ]);
});

Deno.test("the database plugins' configs are derived from their keys (MySQL's, as it was written)", () => {
  const written: Same<MysqlConfig, {
    type: "mysql";
    name: string;
    stage?: number;
    socket?: string;
    host?: string;
    port: number;
    user: string;
    passwordFile?: string;
    password?: string;
    mode: "auto" | "backup-stage" | "lock-instance" | "ftwrl";
    lockWaitTimeoutSeconds: number;
    longQuerySeconds: number;
    killLongQueries: boolean;
    timeoutInSeconds: number;
    maxHoldSeconds: number;
  }> = true;
  assert.ok(written);
  const { config } = parseConfig(
    `{"plugins": [{"type": "mysql", "socket": "/run/mysqld.sock"}]}`,
    "/x.json",
    {
      plugins: PLUGINS,
    },
  );
  assert.deepEqual(config.plugins[0], {
    type: "mysql",
    name: "mysql",
    stage: 0,
    socket: "/run/mysqld.sock",
    port: 3306,
    user: "root",
    mode: "auto",
    lockWaitTimeoutSeconds: 10,
    longQuerySeconds: 60,
    killLongQueries: false,
    timeoutInSeconds: 30,
    maxHoldSeconds: 300,
  });
});
