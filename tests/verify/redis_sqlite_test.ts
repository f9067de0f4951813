/**
 * verify on Redis (AOF and RDB) and SQLite (WAL) snapshots made by
 * `dist/vmsnap run` with their plugins under a steady writer:
 * application-consistent; a copy taken after the run while the writer runs
 * is not.
 */
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { copyFileSync } from "node:fs";
import { join } from "node:path";
import { waitFor } from "../helpers.ts";
import { dbDir, startRedis } from "../db_servers.ts";
import { runFixture } from "../run_fixture.ts";
import { startWriter } from "../consistency/load.ts";
import { assertNothingLeft, explain, sha256, snapshotByRun, verify } from "./fixtures.ts";

const options = { sanitizeResources: false, sanitizeOps: false };

for (const persistence of ["aof", "rdb"] as const) {
  Deno.test({
    ...options,
    name:
      `verify: a Redis (${persistence.toUpperCase()}) snapshot taken by run with the redis plugin under load is application-consistent; a copy taken after the run under the writer is not`,
    fn: async () => {
      const f = runFixture();
      const db = dbDir();
      const server = await startRedis(db.dir, { persistence });
      try {
        const writer = startWriter("redis", server.socket, 0, db.dir);
        await waitFor("the load", () => writer.acks() >= 200, 20_000);
        const snap = await snapshotByRun(f, {
          mount: server.fs.mountPoint,
          image: server.fs.image,
          copy: join(db.dir, "copy.img"),
          plugins: [{ type: "redis", name: "cache", socket: server.socket }],
        });
        assert.equal(snap.result.consistency, "application");
        const acked = writer.acks();
        await waitFor("writes after the run", () => writer.acks() > acked + 200, 20_000);
        // Past the run's time window (its id has whole seconds), then a save of its own.
        await new Promise((r) => setTimeout(r, 2_000));
        if (persistence === "rdb") server.cli("BGSAVE");
        await new Promise((r) => setTimeout(r, 1_000));
        // What the writer wrote since reaches the image (a storage snapshot sees what was written back).
        execFileSync("sync", ["-f", server.fs.mountPoint]);
        const crashCopy = join(db.dir, "crash.img");
        copyFileSync(server.fs.image, crashCopy);
        const later = await snapshotByRun(f, {
          mount: server.fs.mountPoint,
          image: server.fs.image,
          copy: join(db.dir, "later.img"),
          plugins: [],
        });
        await writer.stop();

        const stateDir = f.path("verify-state");
        const before = await sha256(snap.copy);
        const good = await verify([
          snap.copy,
          "--state-dir",
          stateDir,
          "--manifest",
          snap.manifestFile,
        ]);
        assert.equal(good.report.verdict, "application-consistent", explain(good.report));
        assert.equal(good.code, 0);
        assert.equal(good.report.databases[0].plugin, "cache");
        assert.equal(await sha256(snap.copy), before, "verify changed the snapshot image");
        assertNothingLeft(stateDir, [snap.copy]);

        const crash = await verify([
          crashCopy,
          "--state-dir",
          stateDir,
          "--manifest",
          snap.manifestFile,
        ]);
        assert.notEqual(crash.report.verdict, "application-consistent", explain(crash.report));
        assertNothingLeft(stateDir, [crashCopy]);

        // Frozen, later than the run: written after it (and, for RDB, a later save).
        const stale = await verify([
          later.copy,
          "--state-dir",
          stateDir,
          "--manifest",
          snap.manifestFile,
        ]);
        assert.equal(stale.report.verdict, "crash-consistent", explain(stale.report));
        const failed = stale.report.databases[0].evidence.filter((e) => !e.ok).map((e) => e.name);
        assert.ok(failed.some((n) => /written after the run/.test(n)), explain(stale.report));
        if (persistence === "rdb") {
          assert.ok(failed.some((n) => /LASTSAVE/.test(n)), explain(stale.report));
        }
      } finally {
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
    "verify: an SQLite (WAL) snapshot taken by run with the sqlite plugin under load is application-consistent (integrity_check ok, WAL empty); a copy taken after the run under the writer is not",
  fn: async () => {
    const f = runFixture();
    try {
      const file = join(f.mp, "app.db");
      execFileSync("sqlite3", [
        file,
        "PRAGMA journal_mode=WAL; CREATE TABLE commits (seq INTEGER PRIMARY KEY);",
      ]);
      const writer = startWriter("sqlite", file, 0, f.dir);
      await waitFor("the load", () => writer.acks() >= 200, 20_000);
      const snap = await snapshotByRun(f, {
        mount: f.mp,
        image: f.fs.image,
        copy: f.path("copy.img"),
        plugins: [{ type: "sqlite", name: "app", files: [file] }],
      });
      assert.equal(snap.result.consistency, "application");
      const acked = writer.acks();
      await waitFor("commits after the run", () => writer.acks() > acked + 200, 20_000);
      execFileSync("sync", ["-f", f.mp]);
      const crashCopy = f.path("crash.img");
      copyFileSync(f.fs.image, crashCopy);
      const later = await snapshotByRun(f, {
        mount: f.mp,
        image: f.fs.image,
        copy: f.path("later.img"),
        plugins: [],
      });
      await writer.stop();

      const stateDir = f.path("verify-state");
      const good = await verify([
        snap.copy,
        "--state-dir",
        stateDir,
        "--manifest",
        snap.manifestFile,
      ]);
      assert.equal(good.report.verdict, "application-consistent", explain(good.report));
      const app = good.report.databases[0];
      assert.ok(
        app.evidence.some((e) => /integrity_check/.test(e.name) && e.ok),
        explain(good.report),
      );
      assertNothingLeft(stateDir, [snap.copy]);

      const crash = await verify([
        crashCopy,
        "--state-dir",
        stateDir,
        "--manifest",
        snap.manifestFile,
      ]);
      assert.notEqual(crash.report.verdict, "application-consistent", explain(crash.report));
      assertNothingLeft(stateDir, [crashCopy]);

      const stale = await verify([
        later.copy,
        "--state-dir",
        stateDir,
        "--manifest",
        snap.manifestFile,
      ]);
      assert.equal(stale.report.verdict, "crash-consistent", explain(stale.report));
      const failed = stale.report.databases[0].evidence.filter((e) => !e.ok).map((e) => e.name);
      assert.ok(failed.some((n) => /written after the run/.test(n)), explain(stale.report));
    } finally {
      f.cleanup();
    }
  },
});
