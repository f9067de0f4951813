/**
 * The sqlite plugin under Deno (issue 15: "works under Deno and in the
 * compiled binary"; the binary is tested in tests/e2e/sqlite_test.ts): a real
 * WAL database, quiesce checkpoints it and holds the write lock, a writer in
 * another process (sqlite3) cannot commit until resume.
 */
import assert from "node:assert/strict";
import { execFileSync, spawnSync } from "node:child_process";
import { existsSync, statSync } from "node:fs";
import { join } from "node:path";
import { sqlitePlugin } from "../../plugins/sqlite.ts";
import type { PluginEnv } from "../../plugins/plugin.ts";
import { secureDir } from "../helpers.ts";

/** A commit from another process, waiting at most 200 ms for the lock: true when it committed. */
const commits = (file: string, sql: string) =>
  spawnSync("sqlite3", ["-cmd", ".timeout 200", file, sql], { encoding: "utf8" }).status === 0;

Deno.test("sqlite plugin under Deno: checkpoint, write lock held from quiesce to resume, released after", async () => {
  const { dir, cleanup } = secureDir("sqlite-deno-");
  try {
    const file = join(dir, "app.db");
    execFileSync("sqlite3", [
      file,
      "PRAGMA journal_mode=WAL; CREATE TABLE t (id INTEGER PRIMARY KEY); INSERT INTO t VALUES (1)",
    ]);
    // The sqlite plugin's normalize reads only the values.
    const context = {} as Parameters<typeof sqlitePlugin.normalize>[1];
    const config = sqlitePlugin.normalize(
      { name: "app", files: [file], timeoutInSeconds: 5, maxHoldSeconds: 60 },
      context,
    );
    const runtime = sqlitePlugin.create(config);
    const env: PluginEnv = {
      runId: "r",
      stateDir: dir,
      configFile: join(dir, "vmsnap.json"),
      signal: new AbortController().signal,
      log: () => {},
    };
    const quiesced = await runtime.quiesce(env);
    assert.equal(quiesced.ok, true, JSON.stringify(quiesced.errors));
    // The checkpoint emptied the WAL into the database file.
    const wal = `${file}-wal`;
    assert.ok(!existsSync(wal) || statSync(wal).size === 0, "WAL truncated");
    assert.equal(commits(file, "INSERT INTO t VALUES (2)"), false, "a writer waits while held");
    assert.equal(commits(file, "SELECT count(*) FROM t"), true, "readers go on");
    const resumed = await runtime.resume(env);
    assert.equal(resumed.ok, true, JSON.stringify(resumed.errors));
    assert.equal(typeof resumed.facts.holdMs, "number");
    assert.equal(commits(file, "INSERT INTO t VALUES (3)"), true, "writers go on after resume");
  } finally {
    cleanup();
  }
});
