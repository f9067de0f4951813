/**
 * Restore verification: a database under a steady write load (every
 * acknowledged commit recorded with its sequence number), `vmsnap run`
 * freezing its filesystem and snapshotting it by copying the image, then a
 * second server started on the copy, and the rows compared with the acks.
 * With the plugin and without it (freeze only), to show what the plugin buys.
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import {
  chownSync,
  copyFileSync,
  existsSync,
  mkdirSync,
  readFileSync,
  writeFileSync,
} from "node:fs";
import { join } from "node:path";
import { resultOf, runBin, waitFor } from "../helpers.ts";
import { dbDir, PG_BIN, startMariaDb, startPostgres } from "../db_servers.ts";
import { figure } from "../proof.ts";
import { runFixture } from "../run_fixture.ts";
import { contiguous, startWriter } from "./load.ts";

const options = { sanitizeResources: false, sanitizeOps: false };

for (const withPlugin of [true, false]) {
  Deno.test({
    ...options,
    name: `consistency: MariaDB under load, ${
      withPlugin ? "with the mysql plugin" : "freeze only"
    }: the restored copy holds exactly the acknowledged commits`,
    fn: async () => {
      const f = runFixture();
      const db = dbDir();
      const server = await startMariaDb(db.dir);
      let restored: Awaited<ReturnType<typeof startMariaDb>> | undefined;
      try {
        server.sql(
          "CREATE DATABASE app; CREATE TABLE app.commits (seq INT PRIMARY KEY) ENGINE=InnoDB",
        );
        const writer = startWriter("mysql", server.socket, 0, db.dir);
        await waitFor("the load", () => writer.acks() >= 100, 20_000);
        const copy = join(db.dir, "copy.img");
        const snap = f.script(
          "snap.sh",
          `wc -l < "${writer.ackFile}" > "${
            f.path("acked-at-snapshot")
          }"\ncp --sparse=always "${server.fs.image}" "${copy}"`,
        );
        const config = f.config({
          freeze: { mounts: [server.fs.mountPoint] },
          snapshot: { command: [snap] },
          plugins: withPlugin ? [{ type: "mysql", name: "shop", socket: server.socket }] : [],
        });
        const ran = await runBin(["run", "--json", "--config", config]);
        const result = resultOf(ran.stdout);
        assert.equal(ran.code, 0, ran.stdout + ran.stderr);
        assert.equal(result.consistency, withPlugin ? "application" : "filesystem");
        await waitFor(
          "writes after the thaw",
          () => writer.acks() > Number(f.read("acked-at-snapshot")) + 20,
          20_000,
        );
        await writer.stop();
        const ackedAtSnapshot = Number(f.read("acked-at-snapshot"));

        const started = performance.now();
        restored = await startMariaDb(db.dir, "restored", { image: copy });
        const restoreMs = performance.now() - started;
        const rows = restored.sql("SELECT seq FROM app.commits ORDER BY seq").split("\n").filter(
          Boolean,
        ).map(Number);
        const k = contiguous(rows);
        if (withPlugin) {
          // Commits were blocked from the lock to the unlock: the copy has exactly what was acknowledged.
          assert.equal(k, ackedAtSnapshot);
          assert.equal(
            restored.sql("SELECT @@gtid_binlog_pos"),
            result.plugins[0].quiesce.facts.gtidPosition,
          );
        } else {
          // Without the lock, one commit may have reached the disk unacknowledged: never a half one.
          assert.ok(
            k === ackedAtSnapshot || k === ackedAtSnapshot + 1,
            `${k} rows, ${ackedAtSnapshot} acknowledged`,
          );
        }
        assert.match(restored.sql("CHECK TABLE app.commits"), /\tstatus\tOK$/);
        const errorLog = readFileSync(join(restored.fs.mountPoint, "error.log"), "utf8");
        const crashRecovery = /crash recovery|Starting recovery|redo log from/i.test(errorLog);
        const scenario = `MariaDB under load, ${
          withPlugin ? "with the mysql plugin" : "freeze only"
        }`;
        figure(scenario, "rows restored", k, "rows");
        figure(scenario, "commits acknowledged at the snapshot", ackedAtSnapshot, "rows");
        figure(scenario, "InnoDB crash recovery on restore", crashRecovery ? 1 : 0, "(1 = yes)");
        figure(scenario, "restored server started in", restoreMs);
        figure(scenario, "frozen window", result.freeze.frozenMs);
        if (withPlugin) figure(scenario, "lock held", result.plugins[0].resume.facts.holdMs);
      } finally {
        await restored?.stop();
        await server.stop();
        db.cleanup();
        f.cleanup();
      }
    },
  });
}

for (const mode of ["checkpoint", "none"] as const) {
  Deno.test({
    ...options,
    name: `consistency: PostgreSQL under load, ${
      mode === "checkpoint" ? "checkpoint mode" : "freeze only"
    }: crash recovery, pg_amcheck passes, every acknowledged commit present`,
    fn: async () => {
      const f = runFixture();
      const db = dbDir();
      const pg = await startPostgres(db.dir);
      let restored: Awaited<ReturnType<typeof startPostgres>> | undefined;
      try {
        pg.sql("CREATE TABLE commits (seq int PRIMARY KEY)");
        const writer = startWriter("postgresql", pg.socketDir, pg.port, db.dir);
        await waitFor("the load", () => writer.acks() >= 100, 20_000);
        const copy = join(db.dir, "copy.img");
        const snap = f.script(
          "snap.sh",
          `wc -l < "${writer.ackFile}" > "${
            f.path("acked-at-snapshot")
          }"\ncp --sparse=always "${pg.fs.image}" "${copy}"`,
        );
        const config = f.config({
          freeze: { mounts: [pg.fs.mountPoint] },
          snapshot: { command: [snap] },
          plugins: mode === "checkpoint"
            ? [{ type: "postgresql", name: "pg", host: pg.socketDir, port: pg.port }]
            : [],
        });
        const ran = await runBin(["run", "--json", "--config", config]);
        const result = resultOf(ran.stdout);
        assert.equal(ran.code, 0, ran.stdout + ran.stderr);
        await waitFor(
          "writes after the thaw",
          () => writer.acks() > Number(f.read("acked-at-snapshot")) + 20,
          20_000,
        );
        await writer.stop();
        const ackedAtSnapshot = Number(f.read("acked-at-snapshot"));

        const started = performance.now();
        restored = await startPostgres(db.dir, { name: "restored", image: copy });
        const restoreMs = performance.now() - started;
        const log = readFileSync(restored.logFile, "utf8");
        assert.match(
          log,
          /database system was not properly shut down; automatic recovery in progress/,
        );
        const rows = restored.sql("SELECT seq FROM commits ORDER BY seq").split("\n").filter(
          Boolean,
        ).map(Number);
        const k = contiguous(rows);
        assert.ok(
          k === ackedAtSnapshot || k === ackedAtSnapshot + 1,
          `${k} rows, ${ackedAtSnapshot} acknowledged before the freeze`,
        );
        const amcheck = spawnSync("setpriv", [
          "--reuid=postgres",
          "--regid=postgres",
          "--init-groups",
          join(PG_BIN, "pg_amcheck"),
          "-h",
          restored.socketDir,
          "-p",
          String(restored.port),
          "-U",
          "postgres",
          "--install-missing",
          "-d",
          "postgres",
        ], { encoding: "utf8" });
        assert.equal(amcheck.status, 0, amcheck.stdout + amcheck.stderr);
        const scenario = `PostgreSQL under load, ${
          mode === "checkpoint" ? "checkpoint mode" : "freeze only"
        }`;
        const redo = /redo done at .* elapsed: ([\d.]+) s/.exec(log);
        figure(scenario, "rows restored", k, "rows");
        figure(scenario, "commits acknowledged before the freeze", ackedAtSnapshot, "rows");
        figure(scenario, "restored server started in", restoreMs);
        if (redo) figure(scenario, "WAL redo on restore", Number(redo[1]) * 1000);
        if (mode === "checkpoint") {
          assert.match(result.plugins[0].quiesce.facts.checkpointLsn, /^[0-9A-F]+\/[0-9A-F]+$/);
        }
      } finally {
        await restored?.stop();
        await pg.stop();
        db.cleanup();
        f.cleanup();
      }
    },
  });
}

Deno.test({
  ...options,
  name:
    "consistency: PostgreSQL backup mode: with the saved backup_label and archived WAL, recovery reaches a consistent state",
  fn: async () => {
    const f = runFixture();
    const db = dbDir();
    const archive = join(db.dir, "archive");
    mkdirSync(archive, { mode: 0o700 });
    const pgUid = Number(spawnSync("id", ["-u", "postgres"], { encoding: "utf8" }).stdout.trim());
    chownSync(archive, pgUid, pgUid);
    const pg = await startPostgres(db.dir, {
      conf: ["archive_mode = on", `archive_command = 'cp %p ${archive}/%f'`],
    });
    let restored: Awaited<ReturnType<typeof startPostgres>> | undefined;
    try {
      pg.sql("CREATE TABLE commits (seq int PRIMARY KEY)");
      const writer = startWriter("postgresql", pg.socketDir, pg.port, db.dir);
      await waitFor("the load", () => writer.acks() >= 100, 20_000);
      const copy = join(db.dir, "copy.img");
      const snap = f.script(
        "snap.sh",
        `wc -l < "${writer.ackFile}" > "${
          f.path("acked-at-snapshot")
        }"\ncp --sparse=always "${pg.fs.image}" "${copy}"`,
      );
      const config = f.config({
        freeze: { mounts: [pg.fs.mountPoint] },
        snapshot: { command: [snap] },
        plugins: [{
          type: "postgresql",
          name: "pg",
          host: pg.socketDir,
          port: pg.port,
          mode: "backup",
        }],
      });
      const ran = await runBin(["run", "--json", "--config", config]);
      const result = resultOf(ran.stdout);
      assert.equal(ran.code, 0, ran.stdout + ran.stderr);
      await writer.stop();
      const ackedAtSnapshot = Number(f.read("acked-at-snapshot"));
      const label = result.plugins[0].resume.facts.backupLabel as string;
      assert.ok(existsSync(label));

      restored = await startPostgres(db.dir, {
        name: "restored",
        image: copy,
        prepare(data) {
          copyFileSync(label, join(data, "backup_label"));
          chownSync(join(data, "backup_label"), pgUid, pgUid);
          writeFileSync(join(data, "recovery.signal"), "");
          chownSync(join(data, "recovery.signal"), pgUid, pgUid);
          const auto = join(data, "postgresql.auto.conf");
          writeFileSync(
            auto,
            `${
              readFileSync(auto, "utf8")
            }\narchive_mode = off\nrestore_command = 'cp ${archive}/%f %p'\n`,
          );
        },
      });
      const log = readFileSync(restored.logFile, "utf8");
      assert.match(log, /starting backup recovery with redo LSN/);
      assert.match(log, /consistent recovery state reached/);
      const rows = restored.sql("SELECT seq FROM commits ORDER BY seq").split("\n").filter(Boolean)
        .map(Number);
      const k = contiguous(rows);
      assert.ok(k >= ackedAtSnapshot, `${k} rows, ${ackedAtSnapshot} acknowledged at the snapshot`);
      figure(
        "PostgreSQL backup mode",
        "rows restored (WAL replayed to the end of the archive)",
        k,
        "rows",
      );
      figure(
        "PostgreSQL backup mode",
        "commits acknowledged at the snapshot",
        ackedAtSnapshot,
        "rows",
      );
      figure("PostgreSQL backup mode", "backup held", result.plugins[0].resume.facts.holdMs);
    } finally {
      await restored?.stop();
      await pg.stop();
      db.cleanup();
      f.cleanup();
    }
  },
});
