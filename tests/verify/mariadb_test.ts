/**
 * verify on MariaDB snapshots made by `dist/vmsnap run` with the mysql
 * plugin: application-consistent, the image unchanged, found by UUID in
 * stateDir; a copy taken after the run while a writer runs is not; a
 * corrupted data page is damaged.
 */
import assert from "node:assert/strict";
import { copyFileSync, mkdirSync, statSync } from "node:fs";
import { join } from "node:path";
import { waitFor } from "../helpers.ts";
import { dbDir, startMariaDb } from "../db_servers.ts";
import { runFixture } from "../run_fixture.ts";
import { startWriter } from "../consistency/load.ts";
import { saveManifest } from "../../src/verify/manifest_store.ts";
import {
  assertNothingLeft,
  editImage,
  explain,
  scribble,
  sha256,
  snapshotByRun,
  verify,
} from "./fixtures.ts";

const options = { sanitizeResources: false, sanitizeOps: false };

Deno.test({
  ...options,
  name:
    "verify: a MariaDB snapshot taken by run with the mysql plugin under load is application-consistent, found by UUID in stateDir; the image is unchanged; a copy taken after the run while the writer runs is not",
  fn: async () => {
    const f = runFixture();
    const db = dbDir();
    const server = await startMariaDb(db.dir);
    try {
      server.sql(
        "CREATE DATABASE app; CREATE TABLE app.commits (seq INT PRIMARY KEY, pad VARCHAR(200)) ENGINE=InnoDB",
      );
      const writer = startWriter("mysql", server.socket, 0, db.dir);
      await waitFor("the load", () => writer.acks() >= 100, 20_000);
      const snap = await snapshotByRun(f, {
        mount: server.fs.mountPoint,
        image: server.fs.image,
        copy: join(db.dir, "copy.img"),
        plugins: [{ type: "mysql", name: "shop", socket: server.socket }],
      });
      assert.equal(snap.result.consistency, "application");
      await waitFor("writes after the run", () => writer.acks() > 300, 20_000);
      // Not quiesced, not frozen: the writer goes on while the image is copied.
      const crashCopy = join(db.dir, "crash.img");
      copyFileSync(server.fs.image, crashCopy);
      // Frozen, but later than the run the manifest is of (no plugin: commits went on until the freeze).
      const later = await snapshotByRun(f, {
        mount: server.fs.mountPoint,
        image: server.fs.image,
        copy: join(db.dir, "later.img"),
        plugins: [],
      });
      await writer.stop();

      const stateDir = f.path("verify-state");
      mkdirSync(stateDir, { recursive: true, mode: 0o700 });
      saveManifest(stateDir, snap.manifest);
      const before = await sha256(snap.copy);
      const good = await verify([snap.copy, "--state-dir", stateDir]);
      assert.equal(good.report.verdict, "application-consistent", explain(good.report));
      assert.equal(good.code, 0);
      assert.equal(good.report.manifest?.source, "stateDir");
      assert.equal(good.report.manifest?.runId, snap.result.runId);
      const shop = good.report.databases[0];
      assert.equal(shop.plugin, "shop");
      assert.equal(shop.dataDir, join(server.fs.mountPoint, "data"));
      assert.ok(shop.evidence.some((e) => /GTID/.test(e.name) && e.ok), explain(good.report));
      assert.equal(good.report.filesystems[0].verdict, "application-consistent");
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
      assert.ok(crash.code === 1 || crash.code === 2);
      assertNothingLeft(stateDir, [crashCopy]);

      // The later frozen copy matches the run's filesystem by UUID, but not its positions.
      const stale = await verify([later.copy, "--state-dir", stateDir]);
      assert.equal(stale.report.manifest?.runId, snap.result.runId);
      assert.equal(stale.report.verdict, "crash-consistent", explain(stale.report));
      assert.equal(stale.code, 1);
      const failed = stale.report.databases[0].evidence.filter((e) => !e.ok).map((e) => e.name);
      assert.ok(failed.some((n) => /GTID/.test(n)), explain(stale.report));
      assert.ok(failed.some((n) => /binary log ends/.test(n)), explain(stale.report));
    } finally {
      await server.stop();
      db.cleanup();
      f.cleanup();
    }
  },
});

Deno.test({
  ...options,
  name: "verify: a MariaDB snapshot with a corrupted data page is damaged (exit 2)",
  fn: async () => {
    const f = runFixture();
    const db = dbDir();
    const server = await startMariaDb(db.dir);
    try {
      server.sql(
        "CREATE DATABASE app; CREATE TABLE app.t (id INT PRIMARY KEY, pad VARCHAR(255)) ENGINE=InnoDB",
      );
      server.sql(
        "USE app; INSERT INTO t SELECT seq, REPEAT('p', 200) FROM seq_1_to_20000",
      );
      // The table's pages flushed and the checkpoint past them: recovery will not rewrite them from the redo log.
      const status = () => server.sql("SHOW ENGINE INNODB STATUS").replace(/\\n/g, "\n");
      const inserted = Number(/Log sequence number\s+(\d+)/.exec(status())![1]);
      server.sql(
        "SET GLOBAL innodb_max_dirty_pages_pct_lwm = 0.001; SET GLOBAL innodb_max_dirty_pages_pct = 0",
      );
      await waitFor(
        "the checkpoint",
        () => Number(/Last checkpoint at\s+(\d+)/.exec(status())?.[1] ?? 0) >= inserted,
        30_000,
      );
      const snap = await snapshotByRun(f, {
        mount: server.fs.mountPoint,
        image: server.fs.image,
        copy: join(db.dir, "copy.img"),
        plugins: [{ type: "mysql", name: "shop", socket: server.socket }],
      });
      // One page in the middle of the table's tablespace overwritten, in the copy.
      editImage(snap.copy, join(db.dir, "damage"), (mp) => {
        const ibd = join(mp, "data", "app", "t.ibd");
        assert.ok(statSync(ibd).size > 16384 * 64, "the table spans many pages");
        scribble(ibd, 16384 * 10 + 200); // a leaf page of the clustered index, body only
      });
      const stateDir = f.path("verify-state");
      const damaged = await verify([
        snap.copy,
        "--state-dir",
        stateDir,
        "--manifest",
        snap.manifestFile,
      ]);
      assert.equal(damaged.report.verdict, "damaged", explain(damaged.report));
      assert.equal(damaged.code, 2);
      assertNothingLeft(stateDir, [snap.copy]);
    } finally {
      await server.stop();
      db.cleanup();
      f.cleanup();
    }
  },
});
