/**
 * verify on PostgreSQL snapshots made by `dist/vmsnap run` with the
 * postgresql plugin (checkpoint mode): application-consistent when nothing
 * committed between the checkpoint and the freeze; a copy taken after the
 * run while a writer runs is not; a truncated WAL and a corrupted heap page
 * are damaged.
 */
import assert from "node:assert/strict";
import { chownSync, copyFileSync, mkdirSync, truncateSync } from "node:fs";
import { join } from "node:path";
import { waitFor } from "../helpers.ts";
import { dbDir, startPostgres } from "../db_servers.ts";
import { runFixture } from "../run_fixture.ts";
import { startWriter } from "../consistency/load.ts";
import { lsnValue } from "../../src/verify/engines/postgresql.ts";
import type { PostgresEntry } from "../../src/verify/manifest.ts";
import { userIds } from "../../src/verify/sandbox.ts";
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

/** A cluster with 2000 rows in `data` and an empty `commits` (the writer's), snapshotted by run. */
async function pgSnapshot() {
  const f = runFixture();
  const db = dbDir();
  const pg = await startPostgres(db.dir);
  try {
    pg.sql(
      "CREATE TABLE data (id int PRIMARY KEY, pad text); INSERT INTO data SELECT g, repeat('p', 100) FROM generate_series(1, 2000) g; CREATE TABLE commits (seq int PRIMARY KEY)",
    );
    const relation = pg.sql("SELECT pg_relation_filepath('data')");
    const snap = await snapshotByRun(f, {
      mount: pg.fs.mountPoint,
      image: pg.fs.image,
      copy: join(db.dir, "copy.img"),
      plugins: [{ type: "postgresql", name: "pg", host: pg.socketDir, port: pg.port }],
    });
    assert.equal(snap.result.consistency, "application");
    const cleanup = async () => {
      await pg.stop();
      db.cleanup();
      f.cleanup();
    };
    return { f, db, pg, snap, relation, cleanup };
  } catch (error) {
    await pg.stop();
    db.cleanup();
    f.cleanup();
    throw error;
  }
}

Deno.test({
  ...options,
  name:
    "verify: a PostgreSQL snapshot taken by run with the postgresql plugin is application-consistent (no commit after the recorded LSN, amcheck clean), the image unchanged; a copy taken after the run under a writer is not",
  fn: async () => {
    const t = await pgSnapshot();
    try {
      const writer = startWriter("postgresql", t.pg.socketDir, t.pg.port, t.db.dir);
      await waitFor("the load", () => writer.acks() >= 200, 20_000);
      const crashCopy = join(t.db.dir, "crash.img");
      copyFileSync(t.pg.fs.image, crashCopy);
      const later = await snapshotByRun(t.f, {
        mount: t.pg.fs.mountPoint,
        image: t.pg.fs.image,
        copy: join(t.db.dir, "later.img"),
        plugins: [],
      });
      await writer.stop();

      const before = await sha256(t.snap.copy);
      const stateDir = t.f.path("verify-state");
      const good = await verify([
        t.snap.copy,
        "--state-dir",
        stateDir,
        "--manifest",
        t.snap.manifestFile,
      ]);
      assert.equal(good.report.verdict, "application-consistent", explain(good.report));
      assert.equal(good.code, 0);
      assert.equal(good.report.manifest?.source, "option");
      const pg = good.report.databases[0];
      assert.equal(pg.dataDir, join(t.pg.fs.mountPoint, "data"));
      assert.ok(
        pg.evidence.some((e) => /amcheck/.test(e.name) && e.kind === "check" && e.ok),
        explain(good.report),
      );
      assert.ok(pg.evidence.some((e) => /no commit in the WAL/.test(e.name) && e.ok));
      assert.equal(await sha256(t.snap.copy), before, "verify changed the snapshot image");
      assertNothingLeft(stateDir, [t.snap.copy]);

      const crash = await verify([
        crashCopy,
        "--state-dir",
        stateDir,
        "--manifest",
        t.snap.manifestFile,
      ]);
      assert.notEqual(crash.report.verdict, "application-consistent", explain(crash.report));
      assertNothingLeft(stateDir, [crashCopy]);

      // Frozen, later than the run: the commits the writer made since are in its WAL.
      const stale = await verify([
        later.copy,
        "--state-dir",
        stateDir,
        "--manifest",
        t.snap.manifestFile,
      ]);
      assert.equal(stale.report.verdict, "crash-consistent", explain(stale.report));
      const commits = stale.report.databases[0].evidence.find((e) =>
        /no commit in the WAL/.test(e.name)
      );
      assert.equal(commits?.ok, false, explain(stale.report));
      assert.match(commits!.detail, /commit\(s\) after the recorded/);
    } finally {
      await t.cleanup();
    }
  },
});

Deno.test({
  ...options,
  name:
    "verify: a PostgreSQL snapshot whose WAL is truncated before the recorded position is damaged (exit 2)",
  fn: async () => {
    const t = await pgSnapshot();
    try {
      const entry = t.snap.manifest.databases[0] as PostgresEntry;
      const lsn = lsnValue(entry.walLsn);
      const segment = 16n << 20n;
      const name = [BigInt(entry.timeline), lsn >> 32n, (lsn & 0xffffffffn) / segment].map((n) =>
        n.toString(16).toUpperCase().padStart(8, "0")
      ).join("");
      editImage(t.snap.copy, join(t.db.dir, "damage"), (mp) => {
        // Cut the segment at the start of the page that holds the recorded position.
        truncateSync(join(mp, "data", "pg_wal", name), Number((lsn % segment) & ~8191n));
      });
      const stateDir = t.f.path("verify-state");
      const damaged = await verify([
        t.snap.copy,
        "--state-dir",
        stateDir,
        "--manifest",
        t.snap.manifestFile,
      ]);
      assert.equal(damaged.report.verdict, "damaged", explain(damaged.report));
      assert.equal(damaged.code, 2);
      assertNothingLeft(stateDir, [t.snap.copy]);
    } finally {
      await t.cleanup();
    }
  },
});

Deno.test({
  ...options,
  name: "verify: a PostgreSQL snapshot with a corrupted heap page is damaged (pg_amcheck)",
  fn: async () => {
    const t = await pgSnapshot();
    try {
      editImage(t.snap.copy, join(t.db.dir, "damage"), (mp) => {
        // Tuple headers at the end of page 3 overwritten (line pointers would read as unused: lost
        // rows amcheck cannot see).
        scribble(join(mp, "data", t.relation), 8192 * 3 + 7800, 300);
      });
      const stateDir = t.f.path("verify-state");
      const damaged = await verify([
        t.snap.copy,
        "--state-dir",
        stateDir,
        "--manifest",
        t.snap.manifestFile,
      ]);
      assert.equal(damaged.report.verdict, "damaged", explain(damaged.report));
      const amcheck = damaged.report.databases[0].evidence.find((e) => /amcheck/.test(e.name));
      assert.equal(amcheck?.ok, false, explain(damaged.report));
      assertNothingLeft(stateDir, [t.snap.copy]);
    } finally {
      await t.cleanup();
    }
  },
});

Deno.test({
  ...options,
  name:
    "verify: a PostgreSQL snapshot taken in backup mode restores from its backup_label and the WAL archive to the backup's end (application-consistent); without the archive, by crash recovery",
  fn: async () => {
    const f = runFixture();
    const db = dbDir();
    const archive = join(db.dir, "archive");
    mkdirSync(archive, { mode: 0o700 });
    chownSync(archive, userIds("postgres").uid, userIds("postgres").gid);
    const pg = await startPostgres(db.dir, {
      conf: ["archive_mode = on", `archive_command = 'cp %p ${archive}/%f'`],
    });
    try {
      pg.sql("CREATE TABLE commits (seq int PRIMARY KEY)");
      const writer = startWriter("postgresql", pg.socketDir, pg.port, db.dir);
      await waitFor("the load", () => writer.acks() >= 100, 20_000);
      const snap = await snapshotByRun(f, {
        mount: pg.fs.mountPoint,
        image: pg.fs.image,
        copy: join(db.dir, "copy.img"),
        plugins: [{
          type: "postgresql",
          name: "pg",
          host: pg.socketDir,
          port: pg.port,
          mode: "backup",
        }],
      });
      await writer.stop();
      const entry = snap.manifest.databases[0] as PostgresEntry;
      assert.match(entry.backupLabel ?? "", /^START WAL LOCATION/m);
      const stateDir = f.path("verify-state");
      const restored = await verify([
        snap.copy,
        "--state-dir",
        stateDir,
        "--manifest",
        snap.manifestFile,
        "--options",
        JSON.stringify({ walArchives: { pg: archive } }),
      ]);
      assert.equal(restored.report.verdict, "application-consistent", explain(restored.report));
      const end = restored.report.databases[0].evidence.find((e) => /backup's end/.test(e.name));
      assert.equal(end?.ok, true, explain(restored.report));
      assertNothingLeft(stateDir, [snap.copy]);

      // Without the archive: crash recovery of the atomic snapshot; the writer committed after
      // pg_backup_start, so the WAL holds commits after the recorded position.
      const crash = await verify([
        snap.copy,
        "--state-dir",
        stateDir,
        "--manifest",
        snap.manifestFile,
      ]);
      assert.ok(
        crash.report.databases[0].evidence.some((e) => e.name === "backup mode"),
        explain(crash.report),
      );
      assert.notEqual(crash.report.verdict, "damaged", explain(crash.report));
    } finally {
      await pg.stop();
      db.cleanup();
      f.cleanup();
    }
  },
});
