/**
 * The redis plugin end to end against a real redis-server started by the
 * test on a loop-mounted filesystem (private unix socket), through the
 * compiled binary: faults, modes, credentials and ACL checks. The restore
 * checks under load are in tests/consistency/redis_sqlite_restore_test.ts.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { createServer } from "node:net";
import process from "node:process";
import { assertNoSecret, codes, put, resultOf, runBin, startBin, waitFor } from "../helpers.ts";
import { dbDir, stallingProxy, startRedis, timedCommand } from "../db_servers.ts";
import { runFixture } from "../run_fixture.ts";

const options = { sanitizeResources: false, sanitizeOps: false };

/** The result warns PluginNotHeld, once, for the plugin, with its reason and the fix. */
function assertNotHeld(
  result: { warnings: { code: string; message: string; plugin?: string }[]; errors: unknown[] },
  reason: RegExp,
): void {
  const notHeld = result.warnings.filter((w) => w.code === "PluginNotHeld");
  assert.equal(notHeld.length, 1, JSON.stringify(result.warnings));
  assert.equal(notHeld[0].plugin, "cache");
  assert.match(notHeld[0].message, reason);
  assert.match(notHeld[0].message, /at most filesystem-consistent.*Fix: /);
  assert.deepEqual(result.errors, []);
}

/** A test with a fixture and a Redis server (AOF). */
function redisTest(
  name: string,
  fn: (
    f: ReturnType<typeof runFixture>,
    server: Awaited<ReturnType<typeof startRedis>>,
  ) => Promise<void>,
): void {
  Deno.test({
    ...options,
    name,
    fn: async () => {
      const f = runFixture();
      const db = dbDir();
      const server = await startRedis(db.dir);
      try {
        await fn(f, server);
      } finally {
        await server.stop();
        db.cleanup();
        f.cleanup();
      }
    },
  });
}

redisTest(
  "redis: the agent SIGKILLed while writes are paused: the pause ends by itself after maxHoldSeconds",
  async (f, server) => {
    const slow = f.script("slow-snap.sh", `touch "${f.path("snapping")}"; exec sleep 300`);
    const run = startBin([
      "run",
      "--json",
      "--config",
      f.config({
        fsFreezeEnabled: false,
        snapshot: { command: [slow] },
        plugins: [{ type: "redis", name: "cache", socket: server.socket, maxHoldSeconds: 3 }],
      }),
    ]);
    await waitFor("the snapshot", () => f.exists("snapping"), 20_000);
    const killedAt = performance.now();
    process.kill(run.child.pid!, "SIGKILL");
    await run.done;
    const write = await timedCommand("redis-cli", ["-s", server.socket, "SET", "k", "1"], 10_000);
    const after = (performance.now() - killedAt) / 1000;
    assert.ok(write !== Infinity, "the write went through once the pause expired");
    assert.ok(after > 1.5 && after < 6, `writes resumed ${after.toFixed(1)} s after the kill`);
    assert.equal(server.cli("GET", "k"), "1");
    await timedCommand("pkill", ["-f", slow]);
  },
);

redisTest(
  "redis: the server restarted during the hold: PluginLockLost, consistency filesystem",
  async (f, server) => {
    const snap = f.script(
      "restart-snap.sh",
      `redis-cli -s "${server.socket}" SHUTDOWN NOSAVE; sleep 0.5`,
    );
    const ran = await runBin([
      "run",
      "--json",
      "--config",
      f.config({
        snapshot: { command: [snap] },
        plugins: [{ type: "redis", name: "cache", socket: server.socket }],
      }),
    ]);
    const result = resultOf(ran.stdout);
    assert.equal(ran.code, 1, ran.stdout);
    assert.deepEqual(codes(result), ["PluginLockLost"]);
    assert.match(result.errors[0].message, /plugin "cache": the connection was lost before resume/);
    assert.equal(result.consistency, "filesystem");
    await server.restart();
  },
);

redisTest(
  "redis: mode bgsave holds nothing and says so (filesystem-consistent, PluginNotHeld, exit 0 as chosen); the watchdog lifts a pause after maxHoldSeconds",
  async (f, server) => {
    // The freeze of the fixture's loop mount: the most a run that holds no writes can give.
    let ran = await runBin([
      "run",
      "--json",
      "--config",
      f.config({
        plugins: [{ type: "redis", name: "cache", socket: server.socket, mode: "bgsave" }],
      }, "bgsave.json"),
    ]);
    let result = resultOf(ran.stdout);
    assert.equal(ran.code, 0, ran.stdout);
    assert.deepEqual([result.consistency, result.requestedConsistency, result.status], [
      "filesystem",
      "filesystem",
      "success",
    ]);
    assertNotHeld(result, /mode "bgsave" BGSAVE only, writes not held/);
    const facts = result.plugins[0].quiesce.facts;
    assert.deepEqual([facts.mode, facts.consistentAt], ["bgsave", "bgsave"]);
    assert.equal(typeof facts.lastsave, "number");
    assert.equal(result.plugins[0].resume.skipped, true);
    // The hold-nothing RDB is written: the restore sees what was there at the save.
    assert.ok(server.cli("LASTSAVE") !== "0");

    const slow = f.script("slow-snap.sh", "sleep 3");
    ran = await runBin([
      "run",
      "--json",
      "--config",
      f.config({
        snapshot: { command: [slow] },
        plugins: [{ type: "redis", name: "cache", socket: server.socket, maxHoldSeconds: 1 }],
      }, "held.json"),
    ]);
    result = resultOf(ran.stdout);
    assert.equal(ran.code, 1, ran.stdout);
    assert.deepEqual(codes(result), ["PluginLockLost"]);
    assert.match(result.errors[0].message, /released by the watchdog after maxHoldSeconds \(1 s\)/);
    assert.ok(
      (await timedCommand("redis-cli", ["-s", server.socket, "SET", "k", "2"], 2000)) < 2000,
    );
  },
);

redisTest(
  "redis: ACL user with a password file: works, check --connect names missing permissions, wrong password is PluginConnectFailed, no secret anywhere",
  async (f, server) => {
    const secret = "Redis-Secret-pw-5521";
    server.cli(
      "ACL",
      "SETUSER",
      "backup",
      "on",
      `>${secret}`,
      "+ping",
      "+info",
      "+lastsave",
      "+bgsave",
      "+client|pause",
      "+client|unpause",
      "+acl|whoami",
      "+acl|dryrun",
    );
    server.cli("ACL", "SETUSER", "weak", "on", `>${secret}`, "+ping", "+info", "+acl|whoami");
    server.cli("ACL", "SETUSER", "weak", "+acl|dryrun");
    const good = put(join(f.dir, "redis.pw"), `${secret}\n`, 0o600);
    const wrong = put(join(f.dir, "wrong.pw"), "not-the-redis-pw-7\n", 0o600);
    const logFile = join(f.dir, "log", "vmsnap.jsonl");
    const plugin = { type: "redis", name: "cache", socket: server.socket, passwordFile: good };

    const ok = f.config({ fsFreezeEnabled: false, plugins: [{ ...plugin, user: "backup" }] });
    let ran = await runBin(["run", "--json", "--config", ok]);
    assert.equal(ran.code, 0, ran.stdout);
    assertNoSecret(secret, ran, logFile);
    ran = await runBin(["check", "--connect", "--config", ok]);
    assert.equal(ran.code, 0, ran.stdout);

    ran = await runBin([
      "check",
      "--connect",
      "--json",
      "--config",
      f.config({ fsFreezeEnabled: false, plugins: [{ ...plugin, user: "weak" }] }, "weak.json"),
    ]);
    assert.equal(ran.code, 1, ran.stdout);
    assert.match(
      JSON.parse(ran.stdout).problems[0].message,
      /lacks \+lastsave \+bgsave \+client\|pause \+client\|unpause.*Fix: ACL SETUSER weak \+lastsave/,
    );
    assertNoSecret(secret, ran);

    ran = await runBin([
      "run",
      "--json",
      "--config",
      f.config({
        fsFreezeEnabled: false,
        plugins: [{ ...plugin, user: "backup", passwordFile: wrong }],
      }, "wrong.json"),
    ]);
    const result = resultOf(ran.stdout);
    assert.deepEqual(codes(result), ["PluginConnectFailed"]);
    assert.match(result.errors[0].message, /WRONGPASS.*Fix: check the user and the password in/);
    assertNoSecret("not-the-redis-pw-7", ran, logFile);
  },
);

redisTest(
  "redis: a 3-character password read from a passwordFile: the run works and its result warns ShortSecret",
  async (f, server) => {
    server.cli("ACL", "SETUSER", "short", "on", ">Q~%", "~*", "&*", "+@all");
    const pw = put(join(f.dir, "short.pw"), "Q~%\n", 0o600);
    const ran = await runBin([
      "run",
      "--json",
      "--config",
      f.config({
        fsFreezeEnabled: false,
        plugins: [{
          type: "redis",
          name: "cache",
          socket: server.socket,
          user: "short",
          passwordFile: pw,
        }],
      }),
    ]);
    const result = resultOf(ran.stdout);
    assert.equal(ran.code, 0, ran.stdout);
    const short = result.warnings.filter((w: { code: string }) => w.code === "ShortSecret");
    assert.equal(short.length, 1, ran.stdout);
    assert.match(short[0].message, /a password of 3 characters/);
  },
);

redisTest(
  "redis: the connection dropped during the hold (server alive): PluginLockLost, and resume lifts the pause on a new connection at once",
  async (f, server) => {
    const snap = f.script(
      "drop-snap.sh",
      `redis-cli -s "${server.socket}" CLIENT KILL TYPE normal; sleep 0.5`,
    );
    const ran = await runBin([
      "run",
      "--json",
      "--config",
      f.config({
        fsFreezeEnabled: false,
        snapshot: { command: [snap] },
        plugins: [{ type: "redis", name: "cache", socket: server.socket }],
      }),
    ]);
    const result = resultOf(ran.stdout);
    assert.deepEqual(codes(result), ["PluginLockLost"]);
    assert.match(result.errors[0].message, /lifted the pause on a new connection/);
    // Not after maxHoldSeconds (300 s): now.
    assert.ok(
      (await timedCommand("redis-cli", ["-s", server.socket, "SET", "k", "3"], 2000)) < 2000,
    );
  },
);

redisTest(
  "redis older than 6.2 (the real server behind a proxy that reports 6.0.16): auto falls back to BGSAVE only and says so; pause is refused",
  async (f, server) => {
    const old = await stallingProxy({
      target: server.socket,
      socket: join(f.dir, "old.sock"),
      rewrite: (chunk) =>
        Buffer.from(
          chunk.toString("latin1").replace(/redis_version:\d\.\d\.\d\d/, "redis_version:6.0.16"),
          "latin1",
        ),
    });
    try {
      const plugin = { type: "redis", name: "cache", socket: old.socket };
      let ran = await runBin([
        "run",
        "--json",
        "--config",
        f.config({ plugins: [plugin] }, "auto.json"),
      ]);
      let result = resultOf(ran.stdout);
      // Application consistency was asked for (mode auto) and could not be had: exit 1.
      assert.equal(ran.code, 1, ran.stdout);
      assert.deepEqual([result.consistency, result.requestedConsistency, result.status], [
        "filesystem",
        "application",
        "degraded",
      ]);
      assertNotHeld(result, /Redis 6\.0\.16 cannot pause writes \(6\.2 can\), so BGSAVE only/);
      // In words too: the timeline says why the run is degraded without an error.
      const words = await runBin(["run", "--config", f.path("auto.json")]);
      assert.equal(words.code, 1, words.stderr);
      assert.match(words.stderr, /cache: ok, writes not held \(PluginNotHeld\)/);
      assert.match(words.stderr, /degraded, filesystem-consistent, exit 1/);
      const facts = result.plugins[0].quiesce.facts;
      assert.deepEqual([facts.version, facts.mode, facts.consistentAt], [
        "6.0.16",
        "bgsave",
        "bgsave",
      ]);
      assert.match(f.read("log/vmsnap.jsonl"), /"event":"redis-no-pause"/);
      ran = await runBin([
        "run",
        "--json",
        "--config",
        f.config({ fsFreezeEnabled: false, plugins: [{ ...plugin, mode: "pause" }] }, "pause.json"),
      ]);
      result = resultOf(ran.stdout);
      assert.deepEqual(codes(result), ["PluginQuiesceFailed"]);
      assert.match(
        result.errors[0].message,
        /Redis 6\.0\.16 cannot pause writes .*Fix: upgrade Redis, or set "mode": "bgsave"/,
      );
    } finally {
      await old.close();
    }
  },
);

Deno.test({
  ...options,
  name:
    "redis over TCP (host and port, a free port on 127.0.0.1): quiesce pauses writes, resume lifts the pause",
  fn: async () => {
    // A free port, picked by the kernel (other tests run at the same time).
    const probe = createServer();
    await new Promise<void>((resolve) => probe.listen(0, "127.0.0.1", resolve));
    const port = (probe.address() as { port: number }).port;
    await new Promise((resolve) => probe.close(resolve));
    const f = runFixture();
    const db = dbDir();
    const server = await startRedis(db.dir, {
      extra: ["--port", String(port), "--bind", "127.0.0.1"],
    });
    try {
      const snap = f.script(
        "tcp-snap.sh",
        `timeout 0.5 redis-cli -h 127.0.0.1 -p ${port} SET during 1; echo $? > "${
          f.path("write-during")
        }"`,
      );
      const ran = await runBin([
        "run",
        "--json",
        "--config",
        f.config({
          fsFreezeEnabled: false,
          snapshot: { command: [snap] },
          plugins: [{ type: "redis", name: "cache", host: "127.0.0.1", port }],
        }),
      ]);
      const result = resultOf(ran.stdout);
      assert.equal(ran.code, 0, ran.stdout);
      assert.deepEqual([result.consistency, codes(result)], ["application", []]);
      assert.equal(result.plugins[0].quiesce.facts.mode, "pause");
      assert.equal(typeof result.plugins[0].resume.facts.holdMs, "number");
      assert.equal(f.read("write-during").trim(), "124", "a write during the snapshot waited");
      assert.ok(
        (await timedCommand(
          "redis-cli",
          ["-h", "127.0.0.1", "-p", String(port), "SET", "k", "1"],
          2000,
        )) < 2000,
        "writes go on after resume",
      );
    } finally {
      await server.stop();
      db.cleanup();
      f.cleanup();
    }
  },
});
