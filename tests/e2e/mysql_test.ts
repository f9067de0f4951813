/**
 * The mysql plugin end to end against a real MariaDB started by the test on
 * a loop-mounted filesystem, through the compiled binary.
 */
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { join } from "node:path";
import process from "node:process";
import { assertNoSecret, codes, put, resultOf, runBin, startBin, waitFor } from "../helpers.ts";
import {
  dbDir,
  mariadbWrite,
  runBeside,
  sigtermWhileHung,
  type StallingProxy,
  stallingProxy,
  startMariaDb,
} from "../db_servers.ts";
import { runFixture } from "../run_fixture.ts";

Deno.test({
  name:
    "mysql: the lock holds across the snapshot, writes wait, positions are recorded, consistency is application",
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    const f = runFixture();
    const db = dbDir();
    const server = await startMariaDb(db.dir);
    try {
      server.sql(
        "CREATE DATABASE app; CREATE TABLE app.t (id INT PRIMARY KEY) ENGINE=InnoDB; INSERT INTO app.t VALUES (1)",
      );
      // The snapshot command sees what the plugin left: a locked server. It records the position a restore would see.
      const snap = f.script(
        "db-snap.sh",
        `mariadb --no-defaults --socket=${server.socket} -N -B -e "SHOW MASTER STATUS; SELECT @@gtid_binlog_pos" > "${
          f.path("position")
        }"\ntouch "${f.path("snapping")}"\nsleep 1.5`,
      );
      const config = f.config({
        fsFreezeEnabled: false,
        snapshot: { command: [snap] },
        plugins: [{ type: "mysql", name: "shop", socket: server.socket }],
      });
      const run = startBin(["run", "--json", "--config", config]);
      await waitFor("the snapshot", () => f.exists("snapping"), 20_000);
      const write = mariadbWrite(server.socket, "INSERT INTO app.t VALUES (2)", 10_000);
      const ran = await run.done;
      const result = resultOf(ran.stdout);
      assert.equal(ran.code, 0, ran.stdout + ran.stderr);
      assert.equal(result.consistency, "application");
      const waited = await write;
      assert.ok(waited !== Infinity, "the write completed after resume");
      assert.ok(waited > 500, `the write waited for the lock (${Math.round(waited)} ms)`);
      assert.equal(server.sql("SELECT COUNT(*) FROM app.t"), "2");
      const quiesce = result.plugins[0].quiesce;
      assert.equal(quiesce.facts.mode, "backup-stage");
      assert.equal(quiesce.facts.flavor, "mariadb");
      const [status, gtid] = f.read("position").trim().split("\n");
      const [file, position] = status.split("\t");
      assert.deepEqual([quiesce.facts.binlogFile, String(quiesce.facts.binlogPosition)], [
        file,
        position,
      ]);
      assert.equal(quiesce.facts.gtidPosition, gtid ?? "");
      assert.ok(result.plugins[0].resume.facts.holdMs >= 1400);
    } finally {
      await server.stop();
      db.cleanup();
      f.cleanup();
    }
  },
});

Deno.test({
  name:
    "mysql with the data on the frozen filesystem: the restored copy starts and reports the recorded GTID position",
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    const f = runFixture();
    const db = dbDir();
    const server = await startMariaDb(db.dir);
    let restored: Awaited<ReturnType<typeof startMariaDb>> | undefined;
    try {
      server.sql(
        "CREATE DATABASE app; CREATE TABLE app.t (id INT PRIMARY KEY); INSERT INTO app.t VALUES (1), (2), (3)",
      );
      const copy = join(db.dir, "copy.img");
      const snap = f.script("copy-db.sh", `cp --sparse=always "${server.fs.image}" "${copy}"`);
      const config = f.config({
        freeze: { mounts: [server.fs.mountPoint] },
        snapshot: { command: [snap] },
        plugins: [{ type: "mysql", name: "shop", socket: server.socket }],
      });
      const ran = await runBin(["run", "--json", "--config", config]);
      const result = resultOf(ran.stdout);
      assert.equal(ran.code, 0, ran.stdout);
      assert.equal(result.consistency, "application");
      assert.deepEqual(result.freeze.mounts.map((m: { mountPoint: string }) => m.mountPoint), [
        server.fs.mountPoint,
      ]);
      server.sql("INSERT INTO app.t VALUES (4)"); // after the snapshot: not in the copy
      const facts = result.plugins[0].quiesce.facts;
      assert.match(facts.gtidPosition, /^0-1-\d+$/);

      // Restore: a second server on the copy, its own socket.
      restored = await startMariaDb(db.dir, "restored", { image: copy });
      assert.equal(restored.sql("SELECT @@gtid_binlog_pos"), facts.gtidPosition);
      assert.equal(restored.sql("SELECT GROUP_CONCAT(id ORDER BY id) FROM app.t"), "1,2,3");
      assert.match(restored.sql("CHECK TABLE app.t"), /\tstatus\tOK$/);
    } finally {
      await restored?.stop();
      await server.stop();
      db.cleanup();
      f.cleanup();
    }
  },
});

Deno.test({
  name:
    "mysql: a long query makes quiesce wait and fail cleanly (writers never stalled); killLongQueries goes through",
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    const f = runFixture();
    const db = dbDir();
    const server = await startMariaDb(db.dir);
    const long = spawn("mariadb", [
      "--no-defaults",
      `--socket=${server.socket}`,
      "-e",
      "SELECT SLEEP(60)",
    ], { stdio: "ignore" });
    try {
      server.sql("CREATE DATABASE app; CREATE TABLE app.t (id INT PRIMARY KEY)");
      await waitFor(
        "the long query",
        () =>
          server.sql(
            "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE INFO = 'SELECT SLEEP(60)' AND TIME >= 1",
          ) === "1",
        10_000,
      );
      const plugin = {
        type: "mysql",
        name: "shop",
        socket: server.socket,
        longQuerySeconds: 1,
        timeoutInSeconds: 3,
        lockWaitTimeoutSeconds: 2,
      };
      const run = startBin([
        "run",
        "--json",
        "--config",
        f.config({ fsFreezeEnabled: false, plugins: [plugin] }),
      ]);
      // While vmsnap waits, writers go through at once: the lock was never requested.
      await new Promise((r) => setTimeout(r, 1000));
      const write = mariadbWrite(server.socket, "INSERT INTO app.t VALUES (1)", 5000);
      assert.ok((await write) < 1000, "writers are not stalled while vmsnap waits");
      const ran = await run.done;
      const result = resultOf(ran.stdout);
      assert.equal(ran.code, 1);
      assert.deepEqual(codes(result), ["PluginQuiesceTimeout"]);
      assert.match(result.errors[0].message, /SELECT SLEEP\(60\)/);
      assert.match(result.errors[0].message, /Fix: .*killLongQueries/);

      const killing = await runBin([
        "run",
        "--json",
        "--config",
        f.config({ fsFreezeEnabled: false, plugins: [{ ...plugin, killLongQueries: true }] }),
      ]);
      const killed = resultOf(killing.stdout);
      assert.equal(killing.code, 0, killing.stdout);
      assert.equal(killed.plugins[0].quiesce.facts.killedQueries.length, 1);
    } finally {
      long.kill("SIGKILL");
      await server.stop();
      db.cleanup();
      f.cleanup();
    }
  },
});

Deno.test({
  name:
    "mysql: the agent SIGKILLed mid-hold releases with the session; maxHoldSeconds releases and says so",
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    const f = runFixture();
    const db = dbDir();
    const server = await startMariaDb(db.dir);
    try {
      server.sql("CREATE DATABASE app; CREATE TABLE app.t (id INT PRIMARY KEY)");
      const slow = f.script("slow-snap.sh", `touch "${f.path("snapping")}"; exec sleep 300`);
      const plugins = [{ type: "mysql", name: "shop", socket: server.socket }];
      const run = startBin([
        "run",
        "--json",
        "--config",
        f.config({ fsFreezeEnabled: false, snapshot: { command: [slow] }, plugins }),
      ]);
      await waitFor("the snapshot", () => f.exists("snapping"), 20_000);
      const write = mariadbWrite(server.socket, "INSERT INTO app.t VALUES (1)", 10_000);
      await new Promise((r) => setTimeout(r, 300));
      const killedAt = performance.now();
      process.kill(run.child.pid!, "SIGKILL");
      const waited = await write;
      assert.ok(waited !== Infinity, "the write went through after the agent died");
      assert.ok(performance.now() - killedAt < 3000);
      spawn("pkill", ["-f", slow]);

      // The watchdog: resume comes after maxHoldSeconds.
      const slower = f.script("slower-snap.sh", "sleep 3");
      const held = await runBin([
        "run",
        "--json",
        "--config",
        f.config({
          snapshot: { command: [slower] },
          freeze: { mounts: [f.mp] },
          plugins: [{ ...plugins[0], maxHoldSeconds: 1 }],
        }),
      ]);
      const result = resultOf(held.stdout);
      assert.equal(held.code, 1, held.stdout);
      assert.deepEqual(codes(result), ["PluginLockLost"]);
      assert.equal(result.consistency, "filesystem");
      server.sql("INSERT INTO app.t VALUES (2)");
    } finally {
      await server.stop();
      db.cleanup();
      f.cleanup();
    }
  },
});

Deno.test({
  name:
    "mysql: wrong password, unreachable server, missing privilege: the right code, the fix, no secret anywhere",
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    const f = runFixture();
    const db = dbDir();
    const server = await startMariaDb(db.dir);
    try {
      const secret = "Very-Secret-pw-7781";
      server.sql(
        `CREATE USER 'vm'@'localhost' IDENTIFIED BY '${secret}'; CREATE USER 'weak'@'localhost' IDENTIFIED BY '${secret}'; GRANT RELOAD, PROCESS, BINLOG MONITOR ON *.* TO 'vm'@'localhost'`,
      );
      const good = put(join(f.dir, "vm.pw"), `${secret}\n`, 0o600);
      const wrong = put(join(f.dir, "wrong.pw"), "not-the-password-4411\n", 0o600);
      const logFile = join(f.dir, "log", "vmsnap.jsonl");

      // Right credentials from a root-only file: works, and check --connect is happy.
      const ok = f.config({
        fsFreezeEnabled: false,
        plugins: [{
          type: "mysql",
          name: "shop",
          socket: server.socket,
          user: "vm",
          passwordFile: good,
        }],
      }, "ok.json");
      let ran = await runBin(["run", "--json", "--config", ok]);
      assert.equal(ran.code, 0, ran.stdout);
      assertNoSecret(secret, ran, logFile);
      ran = await runBin(["check", "--connect", "--config", ok]);
      assert.equal(ran.code, 0, ran.stdout);
      assert.match(ran.stdout, /plugin shop \(mysql\): connected, privileges ok/);

      // A wrong password.
      ran = await runBin([
        "run",
        "--json",
        "--config",
        f.config({
          fsFreezeEnabled: false,
          plugins: [{
            type: "mysql",
            name: "shop",
            socket: server.socket,
            user: "vm",
            passwordFile: wrong,
          }],
        }, "wrong.json"),
      ]);
      let result = resultOf(ran.stdout);
      assert.equal(ran.code, 1);
      assert.deepEqual(codes(result), ["PluginConnectFailed"]);
      assert.match(
        result.errors[0].message,
        /Access denied.*Fix: check the user and the password in .*wrong\.pw/,
      );
      assertNoSecret("not-the-password-4411", ran, logFile);

      // The password inline in the config (0600 by rule) is scrubbed too.
      const inlineConfig = f.config(
        {
          fsFreezeEnabled: false,
          plugins: [{
            type: "mysql",
            name: "shop",
            socket: server.socket,
            user: "vm",
            password: "inline-wrong-9931",
          }],
        },
        "inline.json",
      );
      ran = await runBin(["run", "--json", "--config", inlineConfig]);
      assert.deepEqual(codes(resultOf(ran.stdout)), ["PluginConnectFailed"]);
      assertNoSecret("inline-wrong-9931", ran, logFile);
      // check prints the normalized config: the password is scrubbed there too.
      ran = await runBin(["check", "--json", "--config", inlineConfig]);
      assert.equal(ran.code, 0, ran.stdout);
      assert.match(ran.stdout, /"password": "\*\*\*"/);
      assertNoSecret("inline-wrong-9931", ran);

      // An unreachable server.
      ran = await runBin([
        "run",
        "--json",
        "--config",
        f.config({
          fsFreezeEnabled: false,
          plugins: [{ type: "mysql", name: "shop", socket: join(f.dir, "no.sock") }],
        }, "down.json"),
      ]);
      result = resultOf(ran.stdout);
      assert.deepEqual(codes(result), ["PluginConnectFailed"]);
      assert.match(result.errors[0].message, /is the server running and listening on socket/);

      // A user without RELOAD: check --connect names the GRANT; run fails to quiesce.
      const weak = f.config({
        fsFreezeEnabled: false,
        plugins: [{
          type: "mysql",
          name: "shop",
          socket: server.socket,
          user: "weak",
          passwordFile: good,
        }],
      }, "weak.json");
      ran = await runBin(["check", "--connect", "--json", "--config", weak]);
      assert.equal(ran.code, 1);
      const report = JSON.parse(ran.stdout);
      assert.match(
        report.problems[0].message,
        /Fix: GRANT PROCESS, RELOAD, BINLOG MONITOR ON \*\.\* TO 'weak'@'localhost';/,
      );
      ran = await runBin(["run", "--json", "--config", weak]);
      result = resultOf(ran.stdout);
      assert.deepEqual(codes(result), ["PluginQuiesceFailed"]);
      assert.match(result.errors[0].message, /BACKUP STAGE START failed: .*RELOAD/);
      assertNoSecret(secret, ran, logFile);
    } finally {
      await server.stop();
      db.cleanup();
      f.cleanup();
    }
  },
});

/** A test with MariaDB behind a proxy that goes silent at the first request matching `stallWhen`. */
function silentMariaDbTest(
  name: string,
  stallWhen: RegExp,
  fn: (
    f: ReturnType<typeof runFixture>,
    server: Awaited<ReturnType<typeof startMariaDb>>,
    silent: StallingProxy,
  ) => Promise<void>,
): void {
  Deno.test({
    name,
    sanitizeResources: false,
    sanitizeOps: false,
    fn: async () => {
      const f = runFixture();
      const db = dbDir();
      const server = await startMariaDb(db.dir);
      const silent = await stallingProxy({
        target: server.socket,
        socket: join(db.dir, "silent.sock"),
        stallWhen,
      });
      try {
        await fn(f, server, silent);
      } finally {
        await silent.close();
        await server.stop();
        db.cleanup();
        f.cleanup();
      }
    },
  });
}

silentMariaDbTest(
  "mysql: a server that accepts the login and then never answers: PluginQuiesceTimeout in time, the other plugins resume",
  /VERSION\(\)/,
  async (f, _server, silent) => {
    const result = await runBeside(f, [
      { type: "mysql", name: "shop", socket: silent.socket, timeoutInSeconds: 2 },
    ]);
    assert.ok(silent.stalled(), "the proxy went silent after the login");
    assert.deepEqual(codes(result), ["PluginQuiesceTimeout"]);
    assert.match(
      result.errors[0].message,
      /plugin "shop": SELECT VERSION\(\) got no answer within timeoutInSeconds \(2 s\); vmsnap closed the session/,
    );
    assert.notEqual(result.consistency, "application");
    assert.equal(f.read("post-ran"), "x\n", "the script plugin resumed");
  },
);

silentMariaDbTest(
  "mysql: SIGTERM while the server is silent after the login: vmsnap exits at once, the other plugins resume",
  /VERSION\(\)/,
  async (f, _server, silent) => {
    await sigtermWhileHung(
      f,
      [{ type: "mysql", name: "shop", socket: silent.socket, timeoutInSeconds: 300 }],
      () => silent.stalled(),
    );
  },
);

silentMariaDbTest(
  "mysql: a server that goes silent before the unlock: resume ends within timeoutInSeconds, closing released the lock",
  /BACKUP STAGE END/,
  async (f, server, silent) => {
    server.sql("CREATE DATABASE app; CREATE TABLE app.t (id INT PRIMARY KEY)");
    const result = await runBeside(f, [
      { type: "mysql", name: "shop", socket: silent.socket, timeoutInSeconds: 2 },
    ]);
    assert.deepEqual(codes(result), ["PluginResumeFailed"]);
    assert.match(result.errors[0].message, /BACKUP STAGE END failed: .*got no answer/);
    assert.equal(result.snapshotTaken, true);
    assert.equal(f.read("post-ran"), "x\n", "the script plugin resumed");
    // The session is gone, and the lock with it: a write goes through.
    assert.ok((await mariadbWrite(server.socket, "INSERT INTO app.t VALUES (1)", 5000)) < 5000);
  },
);
