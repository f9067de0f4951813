/**
 * The postgresql plugin end to end against a real PostgreSQL 15 started by
 * the test on a loop-mounted filesystem, through the compiled binary.
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdirSync, readFileSync, statSync } from "node:fs";
import { join } from "node:path";
import process from "node:process";
import { assertNoSecret, codes, put, resultOf, runBin, startBin, waitFor } from "../helpers.ts";
import { dbDir, runBeside, stallingProxy, startPostgres } from "../db_servers.ts";
import { runFixture } from "../run_fixture.ts";

Deno.test({
  name:
    "postgresql checkpoint mode: CHECKPOINT before the freeze, LSN, timeline and version recorded",
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    const f = runFixture();
    const db = dbDir();
    const pg = await startPostgres(db.dir);
    try {
      pg.sql("CREATE TABLE t (id int primary key); INSERT INTO t VALUES (1)");
      const before = pg.sql("SELECT checkpoint_lsn FROM pg_control_checkpoint()");
      const config = f.config({
        freeze: { mounts: [pg.fs.mountPoint] },
        plugins: [{ type: "postgresql", name: "pg", host: pg.socketDir, port: pg.port }],
      });
      const ran = await runBin(["run", "--json", "--config", config]);
      const result = resultOf(ran.stdout);
      assert.equal(ran.code, 0, ran.stdout + ran.stderr);
      assert.equal(result.consistency, "application");
      const facts = result.plugins[0].quiesce.facts;
      assert.equal(facts.mode, "checkpoint");
      assert.match(facts.version, /^15\./);
      assert.equal(facts.timeline, 1);
      assert.match(facts.walLsn, /^[0-9A-F]+\/[0-9A-F]+$/);
      assert.notEqual(facts.checkpointLsn, before, "a new checkpoint was taken");
      assert.equal(
        pg.sql("SELECT checkpoint_lsn FROM pg_control_checkpoint()"),
        facts.checkpointLsn,
      );
      assert.equal(result.plugins[0].resume.skipped, true);
      pg.sql("INSERT INTO t VALUES (2)");
    } finally {
      await pg.stop();
      db.cleanup();
      f.cleanup();
    }
  },
});

Deno.test({
  name:
    "postgresql backup mode: pg_backup_start held across the snapshot, backup_label saved 0600; check warns without archiving",
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    const f = runFixture();
    const db = dbDir();
    const pg = await startPostgres(db.dir);
    try {
      const snap = f.script(
        "pg-snap.sh",
        `${"/usr/lib/postgresql/15/bin/psql"} -h ${pg.socketDir} -p ${pg.port} -U postgres -At -c "SELECT backend_type || ':' || coalesce(wait_event, '') FROM pg_stat_activity WHERE application_name = 'vmsnap'" > "${
          f.path("activity")
        }"`,
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
      assert.equal(
        f.read("activity").trim().split("\n").length,
        1,
        "one vmsnap session held during the snapshot",
      );
      const resume = result.plugins[0].resume.facts;
      const label = readFileSync(resume.backupLabel, "utf8");
      assert.match(label, /^START WAL LOCATION: [0-9A-F]+\/[0-9A-F]+ \(file [0-9A-F]{24}\)$/m);
      assert.match(label, new RegExp(`^LABEL: vmsnap ${result.runId}$`, "m"));
      assert.equal(
        resume.backupLabel,
        join(f.dir, "state", "postgresql", result.runId, "backup_label"),
      );
      assert.equal(statSync(resume.backupLabel).mode & 0o777, 0o600);
      assert.ok(resume.holdMs >= 0);
      // No backup is left running.
      assert.equal(
        pg.sql("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'vmsnap'"),
        "0",
      );
      const checked = await runBin(["check", "--connect", "--json", "--config", config]);
      assert.equal(checked.code, 1);
      assert.match(JSON.parse(checked.stdout).problems[0].message, /archive_mode is off/);
    } finally {
      await pg.stop();
      db.cleanup();
      f.cleanup();
    }
  },
});

Deno.test({
  name: "postgresql: the agent SIGKILLed mid-backup: the server ends the backup with the session",
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    const f = runFixture();
    const db = dbDir();
    const pg = await startPostgres(db.dir);
    try {
      const slow = f.script("slow-snap.sh", `touch "${f.path("snapping")}"; exec sleep 300`);
      const plugins = [{
        type: "postgresql",
        name: "pg",
        host: pg.socketDir,
        port: pg.port,
        mode: "backup",
      }];
      const run = startBin([
        "run",
        "--json",
        "--config",
        f.config({ fsFreezeEnabled: false, snapshot: { command: [slow] }, plugins }),
      ]);
      await waitFor("the snapshot", () => f.exists("snapping"), 20_000);
      assert.equal(
        pg.sql("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'vmsnap'"),
        "1",
      );
      process.kill(run.child.pid!, "SIGKILL");
      await waitFor(
        "the session to end",
        () =>
          pg.sql("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'vmsnap'") === "0",
        5000,
      );
      spawnSync("pkill", ["-f", slow]);
      // A new backup starts at once: nothing was left behind.
      const again = await runBin([
        "run",
        "--json",
        "--config",
        f.config({ fsFreezeEnabled: false, plugins }),
      ]);
      assert.equal(again.code, 0, again.stdout);
    } finally {
      await pg.stop();
      db.cleanup();
      f.cleanup();
    }
  },
});

Deno.test({
  name:
    "postgresql: wrong password, unreachable server, missing privilege: the right code, the fix, no secret",
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    const f = runFixture();
    const db = dbDir();
    const pg = await startPostgres(db.dir);
    try {
      const secret = "Pg-Secret-pw-5519";
      pg.sql(`CREATE ROLE pwuser LOGIN PASSWORD '${secret}'; CREATE ROLE plain LOGIN`);
      const logFile = join(f.dir, "log", "vmsnap.jsonl");
      const good = put(join(f.dir, "pg.pw"), `${secret}\n`, 0o600);
      const wrong = put(join(f.dir, "wrong.pw"), "wrong-pg-pw-8812\n", 0o600);
      const base = { type: "postgresql", name: "pg", host: pg.socketDir, port: pg.port };

      let ran = await runBin([
        "run",
        "--json",
        "--config",
        f.config({
          fsFreezeEnabled: false,
          plugins: [{ ...base, user: "pwuser", passwordFile: wrong }],
        }, "wrong.json"),
      ]);
      let result = resultOf(ran.stdout);
      assert.equal(ran.code, 1);
      assert.deepEqual(codes(result), ["PluginConnectFailed"]);
      assert.match(
        result.errors[0].message,
        /password authentication failed.*Fix: check the user and the password in .*wrong\.pw/,
      );
      assertNoSecret("wrong-pg-pw-8812", ran, logFile);

      // The right password, but no pg_checkpoint: check --connect names the GRANT, run fails to quiesce.
      const noPriv = f.config({
        fsFreezeEnabled: false,
        plugins: [{ ...base, user: "pwuser", passwordFile: good }],
      }, "nopriv.json");
      ran = await runBin(["check", "--connect", "--json", "--config", noPriv]);
      assert.equal(ran.code, 1);
      assert.match(
        JSON.parse(ran.stdout).problems[0].message,
        /Fix: GRANT pg_checkpoint TO pwuser;/,
      );
      ran = await runBin(["run", "--json", "--config", noPriv]);
      result = resultOf(ran.stdout);
      assert.deepEqual(codes(result), ["PluginQuiesceFailed"]);
      assert.match(
        result.errors[0].message,
        /pg_checkpoint to do CHECKPOINT \(42501\)\. Fix: GRANT pg_checkpoint TO pwuser;/,
      );
      assertNoSecret(secret, ran, logFile);
      pg.sql("GRANT pg_checkpoint TO pwuser");
      ran = await runBin(["check", "--connect", "--config", noPriv]);
      assert.equal(ran.code, 0, ran.stdout);
      assertNoSecret(secret, ran, logFile);

      // Backup mode without EXECUTE on the backup functions.
      ran = await runBin([
        "check",
        "--connect",
        "--json",
        "--config",
        f.config(
          { fsFreezeEnabled: false, plugins: [{ ...base, user: "plain", mode: "backup" }] },
          "plain.json",
        ),
      ]);
      assert.match(
        JSON.parse(ran.stdout).problems[0].message,
        /GRANT EXECUTE ON FUNCTION pg_backup_start\(text, boolean\) TO plain;/,
      );

      // Nothing listening.
      ran = await runBin([
        "run",
        "--json",
        "--config",
        f.config(
          { fsFreezeEnabled: false, plugins: [{ ...base, port: pg.port + 1 }] },
          "down.json",
        ),
      ]);
      result = resultOf(ran.stdout);
      assert.deepEqual(codes(result), ["PluginConnectFailed"]);
      assert.match(
        result.errors[0].message,
        /is the server running and listening on .*\.s\.PGSQL\./,
      );
    } finally {
      await pg.stop();
      db.cleanup();
      f.cleanup();
    }
  },
});

Deno.test({
  name:
    "postgresql: a server that goes silent after the login (quiesce) or before pg_backup_stop (resume): each ends within timeoutInSeconds, the other plugins resume",
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    const f = runFixture();
    const db = dbDir();
    const pg = await startPostgres(db.dir);
    const proxyDir = join(db.dir, "proxy");
    mkdirSync(proxyDir);
    const port = pg.port + 1;
    let silent = await stallingProxy({
      target: join(pg.socketDir, `.s.PGSQL.${pg.port}`),
      socket: join(proxyDir, `.s.PGSQL.${port}`),
      stallWhen: /server_version_num/,
    });
    try {
      const plugin = { type: "postgresql", name: "pg", host: proxyDir, port, timeoutInSeconds: 2 };
      const run = (mode: string) => runBeside(f, [{ ...plugin, mode }], { name: `${mode}.json` });
      let result = await run("checkpoint");
      assert.ok(silent.stalled());
      assert.deepEqual(codes(result), ["PluginQuiesceTimeout"]);
      assert.match(result.errors[0].message, /the version query got no answer within/);
      assert.equal(f.read("post-ran"), "x\n", "the script plugin resumed");

      await silent.close();
      silent = await stallingProxy({
        target: join(pg.socketDir, `.s.PGSQL.${pg.port}`),
        socket: join(proxyDir, `.s.PGSQL.${port}`),
        stallWhen: /pg_backup_stop/,
      });
      result = await run("backup");
      assert.ok(silent.stalled());
      assert.deepEqual(codes(result), ["PluginResumeFailed"]);
      assert.match(result.errors[0].message, /pg_backup_stop failed: .*got no answer/);
      assert.equal(f.read("post-ran"), "x\nx\n", "the script plugin resumed");
      // Closing the session ended the backup on the server.
      await waitFor(
        "the backup to end",
        () =>
          pg.sql("SELECT COUNT(*) FROM pg_stat_activity WHERE application_name = 'vmsnap'") === "0",
        5000,
      );
    } finally {
      await silent.close();
      await pg.stop();
      db.cleanup();
      f.cleanup();
    }
  },
});
