/**
 * The sqlite plugin end to end through the compiled binary, on database
 * files on the test's loop-mounted filesystem: faults and bad files. The
 * restore check under load is in tests/consistency/redis_sqlite_restore_test.ts.
 */
import assert from "node:assert/strict";
import { execFileSync, spawn } from "node:child_process";
import { join } from "node:path";
import process from "node:process";
import { codes, resultOf, runBin, startBin, waitFor } from "../helpers.ts";
import { timedCommand } from "../db_servers.ts";
import { runFixture } from "../run_fixture.ts";

const options = { sanitizeResources: false, sanitizeOps: false };

const sqlite = (file: string, sql: string) =>
  execFileSync("sqlite3", ["-cmd", ".timeout 10000", file, sql], { encoding: "utf8" }).trim();

Deno.test({
  ...options,
  name:
    "sqlite: the agent SIGKILLed while holding the lock: released with the process; the watchdog releases after maxHoldSeconds",
  fn: async () => {
    const f = runFixture();
    try {
      const file = join(f.mp, "app.db");
      sqlite(file, "PRAGMA journal_mode=WAL; CREATE TABLE t (id INTEGER PRIMARY KEY)");
      const slow = f.script("slow-snap.sh", `touch "${f.path("snapping")}"; exec sleep 300`);
      const run = startBin([
        "run",
        "--json",
        "--config",
        f.config({
          fsFreezeEnabled: false,
          snapshot: { command: [slow] },
          plugins: [{ type: "sqlite", name: "app", files: [file] }],
        }),
      ]);
      await waitFor("the snapshot", () => f.exists("snapping"), 20_000);
      const write = timedCommand(
        "sqlite3",
        ["-cmd", ".timeout 10000", file, "INSERT INTO t VALUES (1)"],
        10_000,
      );
      await new Promise((r) => setTimeout(r, 500));
      const killedAt = performance.now();
      process.kill(run.child.pid!, "SIGKILL");
      const waited = await write;
      assert.ok(waited !== Infinity, "the commit went through after the agent died");
      assert.ok(waited > 400, `the commit waited for the lock (${Math.round(waited)} ms)`);
      assert.ok(performance.now() - killedAt < 3000);
      spawn("pkill", ["-f", slow]);

      const slower = f.script("slower-snap.sh", "sleep 3");
      const held = await runBin([
        "run",
        "--json",
        "--config",
        f.config({
          snapshot: { command: [slower] },
          plugins: [{ type: "sqlite", name: "app", files: [file], maxHoldSeconds: 1 }],
        }, "held.json"),
      ]);
      const result = resultOf(held.stdout);
      assert.equal(held.code, 1, held.stdout);
      assert.deepEqual(codes(result), ["PluginLockLost"]);
      assert.equal(result.consistency, "filesystem");
      assert.equal(sqlite(file, "INSERT INTO t VALUES (2); SELECT COUNT(*) FROM t"), "2");
    } finally {
      f.cleanup();
    }
  },
});

Deno.test({
  ...options,
  name:
    "sqlite: a writer holding a long transaction: PluginQuiesceTimeout within timeoutInSeconds, nothing held; a missing file is refused by check",
  fn: async () => {
    const f = runFixture();
    try {
      const file = join(f.mp, "app.db");
      sqlite(file, "CREATE TABLE t (id INTEGER PRIMARY KEY)");
      // Another connection holds the write lock for 20 s.
      const holder = spawn("sqlite3", [file], { stdio: ["pipe", "ignore", "ignore"] });
      holder.stdin.write("BEGIN IMMEDIATE;\nINSERT INTO t VALUES (1);\n.shell sleep 20\nCOMMIT;\n");
      await new Promise((r) => setTimeout(r, 500));
      const started = performance.now();
      const ran = await runBin([
        "run",
        "--json",
        "--config",
        f.config({
          fsFreezeEnabled: false,
          plugins: [{ type: "sqlite", name: "app", files: [file], timeoutInSeconds: 2 }],
        }),
      ], { timeoutMs: 30_000 });
      const seconds = (performance.now() - started) / 1000;
      holder.kill("SIGKILL");
      const result = resultOf(ran.stdout);
      assert.deepEqual(codes(result), ["PluginQuiesceTimeout"]);
      assert.match(result.errors[0].message, /BEGIN IMMEDIATE waited timeoutInSeconds \(2 s\)/);
      assert.ok(seconds < 10, `the run ended in ${seconds.toFixed(1)} s`);

      const missing = join(f.mp, "missing.db");
      const checked = await runBin([
        "check",
        "--json",
        "--config",
        f.config({
          fsFreezeEnabled: false,
          plugins: [{ type: "sqlite", name: "app", files: [missing] }],
        }, "missing.json"),
      ]);
      assert.equal(checked.code, 1, checked.stdout);
      assert.match(
        JSON.parse(checked.stdout).problems[0].message,
        /the database file .*missing\.db does not exist/,
      );
    } finally {
      f.cleanup();
    }
  },
});
