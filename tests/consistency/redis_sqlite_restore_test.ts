/**
 * Restore verification for Redis (AOF and RDB) and SQLite (WAL): a steady
 * writer (every acknowledged write recorded), `vmsnap run` with the plugin
 * freezing the data's filesystem and copying its image, a write from another
 * client timed during the snapshot, then the copy restored (a second
 * redis-server on it; the SQLite file opened from it) and compared with the
 * acks.
 */
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { join } from "node:path";
import { resultOf, startBin, waitFor } from "../helpers.ts";
import { dbDir, startRedis, timedCommand } from "../db_servers.ts";
import { makeLoopFs } from "../loop.ts";
import { figure } from "../proof.ts";
import { runFixture } from "../run_fixture.ts";
import { contiguous, startWriter } from "./load.ts";

const options = { sanitizeResources: false, sanitizeOps: false };

/** A snapshot command: records the acks, says it started, holds 1 s, copies the image. */
function snapScript(f: ReturnType<typeof runFixture>, ackFile: string, image: string): string {
  return f.script(
    "snap.sh",
    `wc -l < "${ackFile}" > "${f.path("acked-at-snapshot")}"\ntouch "${
      f.path("snapping")
    }"\nsleep 1\ncp --sparse=always "${image}" "${f.path("copy.img")}"`,
  );
}

for (const persistence of ["aof", "rdb"] as const) {
  Deno.test({
    ...options,
    name:
      `consistency: Redis (${persistence.toUpperCase()}) under load with the redis plugin: a write during the snapshot waits, the restored copy holds exactly the acknowledged writes`,
    fn: async () => {
      const f = runFixture();
      const db = dbDir();
      const server = await startRedis(db.dir, { persistence });
      let restored: Awaited<ReturnType<typeof startRedis>> | undefined;
      try {
        const writer = startWriter("redis", server.socket, 0, db.dir);
        await waitFor("the load", () => writer.acks() >= 200, 20_000);
        const config = f.config({
          freeze: { mounts: [server.fs.mountPoint] },
          snapshot: { command: [snapScript(f, writer.ackFile, server.fs.image)] },
          plugins: [{ type: "redis", name: "cache", socket: server.socket }],
        });
        const run = startBin(["run", "--json", "--config", config]);
        await waitFor("the snapshot", () => f.exists("snapping"), 20_000);
        const probe = timedCommand("redis-cli", ["-s", server.socket, "SET", "probe", "1"], 10_000);
        const ran = await run.done;
        const result = resultOf(ran.stdout);
        assert.equal(ran.code, 0, ran.stdout + ran.stderr);
        assert.equal(result.consistency, "application");
        const facts = result.plugins[0].quiesce.facts;
        assert.equal(facts.persistence, persistence);
        assert.equal(facts.mode, "pause");
        const waited = await probe;
        assert.ok(waited !== Infinity, "the write completed after resume");
        assert.ok(waited > 500, `the write waited for the pause (${Math.round(waited)} ms)`);
        const ackedAtSnapshot = Number(f.read("acked-at-snapshot"));
        await waitFor("writes after resume", () => writer.acks() > ackedAtSnapshot + 20, 20_000);
        await writer.stop();

        const started = performance.now();
        restored = await startRedis(db.dir, {
          name: "restored",
          persistence,
          image: f.path("copy.img"),
        });
        const restoreMs = performance.now() - started;
        const rows = restored.cli("LRANGE", "log", "0", "-1").split("\n").filter(Boolean).map(
          Number,
        );
        // Writes were paused from quiesce to resume: the copy has exactly what was acknowledged.
        assert.equal(contiguous(rows), ackedAtSnapshot);
        assert.equal(restored.cli("EXISTS", "probe"), "0", "the write made during the hold");
        const scenario = `Redis (${persistence.toUpperCase()}) under load with the redis plugin`;
        figure(scenario, "writes restored", rows.length, "writes");
        figure(scenario, "writes acknowledged at the snapshot", ackedAtSnapshot, "writes");
        figure(scenario, "a write during the snapshot waited", waited);
        figure(scenario, "pause held", result.plugins[0].resume.facts.holdMs);
        figure(scenario, "restored server started in", restoreMs);
      } finally {
        await restored?.stop();
        await server.stop();
        db.cleanup();
        f.cleanup();
      }
    },
  });
}

Deno.test({
  ...options,
  name:
    "consistency: SQLite in WAL mode under load with the sqlite plugin: a commit during the snapshot waits, the restored copy passes integrity_check and holds exactly the acknowledged rows",
  fn: async () => {
    const f = runFixture();
    let restored: ReturnType<typeof makeLoopFs> | undefined;
    try {
      const file = join(f.mp, "app.db");
      const sqlite = (db: string, sql: string) =>
        execFileSync("sqlite3", ["-cmd", ".timeout 10000", db, sql], { encoding: "utf8" }).trim();
      assert.equal(
        sqlite(file, "PRAGMA journal_mode=WAL; CREATE TABLE commits (seq INTEGER PRIMARY KEY);"),
        "wal",
      );
      const writer = startWriter("sqlite", file, 0, f.dir);
      await waitFor("the load", () => writer.acks() >= 200, 20_000);
      const config = f.config({
        snapshot: { command: [snapScript(f, writer.ackFile, f.fs.image)] },
        plugins: [{ type: "sqlite", name: "app", files: [file] }],
      });
      const run = startBin(["run", "--json", "--config", config]);
      await waitFor("the snapshot", () => f.exists("snapping"), 20_000);
      // Not on the frozen filesystem: a copy of nothing; the insert goes to the real file and waits for the lock.
      const probe = timedCommand(
        "sqlite3",
        ["-cmd", ".timeout 20000", file, "INSERT INTO commits VALUES (-1)"],
        20_000,
      );
      const ran = await run.done;
      const result = resultOf(ran.stdout);
      assert.equal(ran.code, 0, ran.stdout + ran.stderr);
      assert.equal(result.consistency, "application");
      assert.equal(result.plugins[0].quiesce.facts.files[0].journalMode, "wal");
      const waited = await probe;
      assert.ok(waited !== Infinity, "the commit completed after resume");
      assert.ok(waited > 500, `the commit waited for the lock (${Math.round(waited)} ms)`);
      const ackedAtSnapshot = Number(f.read("acked-at-snapshot"));
      await waitFor("commits after resume", () => writer.acks() > ackedAtSnapshot + 20, 20_000);
      await writer.stop();

      restored = makeLoopFs({ dir: f.dir, name: "restored", image: f.path("copy.img") });
      const copy = join(restored.mountPoint, "app.db");
      assert.equal(sqlite(copy, "PRAGMA integrity_check"), "ok");
      const rows = sqlite(copy, "SELECT seq FROM commits WHERE seq > 0 ORDER BY seq").split("\n")
        .filter(Boolean).map(Number);
      // No commit from quiesce to resume: the copy has exactly what was acknowledged.
      assert.equal(contiguous(rows), ackedAtSnapshot);
      assert.equal(sqlite(copy, "SELECT COUNT(*) FROM commits WHERE seq = -1"), "0");
      const scenario = "SQLite in WAL mode under load with the sqlite plugin";
      figure(scenario, "rows restored", rows.length, "rows");
      figure(scenario, "commits acknowledged at the snapshot", ackedAtSnapshot, "rows");
      figure(scenario, "a commit during the snapshot waited", waited);
      figure(scenario, "lock held", result.plugins[0].resume.facts.holdMs);
    } finally {
      restored?.cleanup();
      f.cleanup();
    }
  },
});
