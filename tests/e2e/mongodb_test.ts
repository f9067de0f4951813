/**
 * The mongodb plugin end to end, through the compiled binary, against the
 * MongoDB wire-protocol test server (no MongoDB server installs here), and
 * against a real server when VMSNAP_TEST_MONGODB_URI is set.
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import process from "node:process";
import { MongoClient } from "mongodb";
import {
  assertNoSecret,
  BIN,
  codes,
  put,
  resultOf,
  runBin,
  startBin,
  waitFor,
} from "../helpers.ts";
import { startMongoWireServer } from "../mongo_wire_server.ts";
import { runBeside, sigtermWhileHung } from "../db_servers.ts";
import { runFixture } from "../run_fixture.ts";

const options = { sanitizeResources: false, sanitizeOps: false };

Deno.test("the binary's bson does not zero-fill its 17 MiB buffer at load (scripts/bun/overrides.ts)", () => {
  // With the mysql plugin beside it, that zero-fill made 17 MiB resident in some runs (peak RSS).
  // The bundler writes the line as `var MAXSIZE = 17825792, buffer = ByteUtils.allocateUnsafe(MAXSIZE);`.
  const binary = readFileSync(BIN).toString("latin1");
  assert.ok(binary.includes("buffer = ByteUtils.allocateUnsafe(MAXSIZE)"));
  assert.ok(!binary.includes("buffer = ByteUtils.allocate(MAXSIZE)"));
});

Deno.test({
  ...options,
  name: "mongodb fsync-lock: locked across the snapshot, writes wait, exactly one unlock",
  fn: async () => {
    const f = runFixture();
    const mongo = await startMongoWireServer();
    const client = new MongoClient(mongo.uri, { serverSelectionTimeoutMS: 5000 });
    try {
      const snap = f.script("slow-snap.sh", `touch "${f.path("snapping")}"; sleep 1.5`);
      const config = f.config({
        snapshot: { command: [snap] },
        plugins: [{ type: "mongodb", name: "docs", uri: mongo.uri }],
      });
      const run = startBin(["run", "--json", "--config", config]);
      await waitFor("the snapshot", () => f.exists("snapping"), 20_000);
      assert.equal(mongo.lockCount(), 1);
      const markers = readdirSync(join(f.dir, "state")).filter((n) =>
        n.startsWith("lock-mongodb-")
      );
      assert.deepEqual(markers, ["lock-mongodb-docs.json"], "the marker is written before locking");
      const insert = client.db("app").collection("orders").insertOne({ n: 1 });
      const ran = await run.done;
      await insert;
      const result = resultOf(ran.stdout);
      assert.equal(ran.code, 0, ran.stdout + ran.stderr);
      assert.equal(result.consistency, "application");
      assert.deepEqual(mongo.events.map((e) => e.op), ["lock", "unlock", "insert"]);
      assert.equal(mongo.lockCount(), 0);
      assert.equal(result.plugins[0].quiesce.facts.lockCount, 1);
      assert.equal(result.plugins[0].resume.facts.lockCountAfter, 0);
      assert.ok(
        !existsSync(join(f.dir, "state", "lock-mongodb-docs.json")),
        "the marker is removed after the unlock",
      );
    } finally {
      await client.close();
      await mongo.close();
      f.cleanup();
    }
  },
});

Deno.test({
  ...options,
  name:
    "mongodb: another tool's fsync lock is left alone (one unlock, never a loop to zero); fsync mode only flushes",
  fn: async () => {
    const f = runFixture();
    const mongo = await startMongoWireServer();
    try {
      mongo.setLockCount(1);
      let ran = await runBin([
        "run",
        "--json",
        "--config",
        f.config({ plugins: [{ type: "mongodb", name: "docs", uri: mongo.uri }] }),
      ]);
      let result = resultOf(ran.stdout);
      assert.equal(ran.code, 0, ran.stdout);
      assert.equal(result.plugins[0].quiesce.facts.lockCount, 2);
      assert.equal(mongo.lockCount(), 1, "the other tool's lock is still held");
      assert.deepEqual(mongo.events.map((e) => e.op), ["lock", "unlock"]);
      mongo.setLockCount(0);
      ran = await runBin([
        "run",
        "--json",
        "--config",
        f.config({ plugins: [{ type: "mongodb", name: "docs", uri: mongo.uri, mode: "fsync" }] }),
      ]);
      result = resultOf(ran.stdout);
      assert.equal(ran.code, 0, ran.stdout);
      assert.deepEqual(mongo.events.map((e) => e.op).slice(2), ["fsync"]);
    } finally {
      await mongo.close();
      f.cleanup();
    }
  },
});

Deno.test({
  ...options,
  name:
    "mongodb: the agent SIGKILLed mid-hold; check reports the lock and changes nothing, recover releases it once and says so",
  fn: async () => {
    const f = runFixture();
    const mongo = await startMongoWireServer();
    try {
      const slow = f.script("slow-snap.sh", `touch "${f.path("snapping")}"; exec sleep 300`);
      const config = f.config({
        snapshot: { command: [slow] },
        plugins: [{ type: "mongodb", name: "docs", uri: mongo.uri }],
      });
      const run = startBin(["run", "--json", "--config", config]);
      await waitFor("the snapshot", () => f.exists("snapping"), 20_000);
      process.kill(run.child.pid!, "SIGKILL");
      await run.done;
      spawnSync("pkill", ["-f", slow]);
      // The guard sees its agent die, thaws, and leaves its report: the recover below shows it.
      await waitFor(
        "the guard's report",
        () => readdirSync(join(f.dir, "state")).some((name) => name.startsWith("guard-")),
      );
      assert.equal(mongo.lockCount(), 1, "the fsync lock outlives the dead agent");
      const checked = await runBin(["check", "--config", config]);
      assert.match(
        checked.stdout,
        /\[DeadRunLeftover\] plugin "docs": run \S+ died holding its mongodb lock .*Fix: run vmsnap recover/,
      );
      assert.equal(mongo.lockCount(), 1, "check changes nothing");
      const recovered = await runBin(["recover", "--config", config]);
      assert.match(
        recovered.stdout,
        /plugin "docs": run \S+ died holding its lock: released one fsync lock/,
      );
      assert.equal(mongo.lockCount(), 0);
      assert.equal(mongo.events.filter((e) => e.op === "unlock").length, 1);
      assert.ok(!existsSync(join(f.dir, "state", "lock-mongodb-docs.json")));
      // A second start finds nothing more to do.
      const again = await runBin(["recover", "--config", config]);
      assert.match(again.stdout, /nothing to recover/);
    } finally {
      await mongo.close();
      f.cleanup();
    }
  },
});

Deno.test({
  ...options,
  name:
    "mongodb: wrong credentials and an unreachable server: PluginConnectFailed with the fix, no secret anywhere",
  fn: async () => {
    const f = runFixture();
    const mongo = await startMongoWireServer();
    try {
      const secret = "Mongo-Secret-pw-3319";
      const uriFile = put(
        join(f.dir, "mongo.uri"),
        `mongodb://backup:${secret}@127.0.0.1:${mongo.port}/?directConnection=true&authSource=admin\n`,
        0o600,
      );
      let ran = await runBin([
        "run",
        "--json",
        "--config",
        f.config({ plugins: [{ type: "mongodb", name: "docs", uriFile, timeoutInSeconds: 5 }] }),
      ]);
      let result = resultOf(ran.stdout);
      assert.equal(ran.code, 1);
      assert.deepEqual(codes(result), ["PluginConnectFailed"]);
      assert.match(
        result.errors[0].message,
        /Authentication failed.*Fix: check the credentials in .*mongo\.uri/,
      );
      assertNoSecret(secret, ran, join(f.dir, "log", "vmsnap.jsonl"));
      // The URI inline in the config: its password is scrubbed from the report too.
      ran = await runBin([
        "check",
        "--connect",
        "--json",
        "--config",
        f.config({
          plugins: [{
            type: "mongodb",
            name: "docs",
            uri: `mongodb://backup:${secret}@127.0.0.1:${mongo.port}/?directConnection=true`,
            timeoutInSeconds: 5,
          }],
        }, "inline.json"),
      ]);
      assert.equal(ran.code, 1);
      assertNoSecret(secret, ran);
      // Nothing listening.
      await mongo.close();
      ran = await runBin([
        "run",
        "--json",
        "--config",
        f.config({
          plugins: [{
            type: "mongodb",
            name: "docs",
            uri: `mongodb://127.0.0.1:${mongo.port}/?directConnection=true`,
            timeoutInSeconds: 2,
          }],
        }, "down.json"),
      ]);
      result = resultOf(ran.stdout);
      assert.deepEqual(codes(result), ["PluginConnectFailed"]);
      assert.match(result.errors[0].message, /Fix: is the server running and reachable/);
      // A uriFile open to group/other is refused before anything connects.
      spawnSync("chmod", ["644", uriFile]);
      ran = await runBin([
        "check",
        "--json",
        "--config",
        f.config({ plugins: [{ type: "mongodb", name: "docs", uriFile }] }, "open.json"),
      ]);
      assert.equal(JSON.parse(ran.stdout).problems[0].code, "InsufficientPermissionforConfigFile");
    } finally {
      await mongo.close().catch(() => {});
      f.cleanup();
    }
  },
});

// A real MongoDB server, where one is reachable: VMSNAP_TEST_MONGODB_URI=mongodb://... (not in CI here).
const realUri = process.env.VMSNAP_TEST_MONGODB_URI;
if (realUri) {
  Deno.test({
    ...options,
    name: "mongodb against a real server (VMSNAP_TEST_MONGODB_URI): lock, write waits, one unlock",
    fn: async () => {
      const f = runFixture();
      const client = new MongoClient(realUri, { serverSelectionTimeoutMS: 10_000 });
      try {
        const uriFile = put(join(f.dir, "mongo.uri"), `${realUri}\n`, 0o600);
        const snap = f.script("slow-snap.sh", `touch "${f.path("snapping")}"; sleep 1.5`);
        const run = startBin([
          "run",
          "--json",
          "--config",
          f.config({
            snapshot: { command: [snap] },
            plugins: [{ type: "mongodb", name: "real", uriFile }],
          }),
        ]);
        await waitFor("the snapshot", () => f.exists("snapping"), 30_000);
        const op = await client.db("admin").command({ currentOp: 1 });
        assert.equal(op.fsyncLock, true);
        const started = performance.now();
        await Promise.all([
          client.db("vmsnap_test").collection("writes").insertOne({ at: new Date() }),
          run.done,
        ]);
        assert.ok(performance.now() - started > 500, "the write waited for the unlock");
        const ran = await run.done;
        assert.equal(ran.code, 0, ran.stdout);
        assert.notEqual((await client.db("admin").command({ currentOp: 1 })).fsyncLock, true);
      } finally {
        await client.close();
        f.cleanup();
      }
    },
  });
}

Deno.test({
  ...options,
  name:
    "mongodb: a server that accepts the connection and then never answers: PluginQuiesceTimeout in time, the other plugins resume",
  fn: async () => {
    const f = runFixture();
    const mongo = await startMongoWireServer({ silentOn: ["buildInfo"] });
    try {
      const result = await runBeside(f, [
        { type: "mongodb", name: "docs", uri: mongo.uri, timeoutInSeconds: 2 },
      ]);
      assert.ok(mongo.events.some((e) => e.op === "silent:buildInfo"));
      assert.deepEqual(codes(result), ["PluginQuiesceTimeout"]);
      assert.match(result.errors[0].message, /buildInfo got no answer within timeoutInSeconds/);
      assert.equal(f.read("post-ran"), "x\n", "the script plugin resumed");
      assert.equal(mongo.lockCount(), 0);
    } finally {
      await mongo.close();
      f.cleanup();
    }
  },
});

Deno.test({
  ...options,
  name:
    "mongodb: SIGTERM while the server is silent after the connection: vmsnap exits at once, the other plugins resume",
  fn: async () => {
    const f = runFixture();
    const mongo = await startMongoWireServer({ silentOn: ["buildInfo"] });
    try {
      await sigtermWhileHung(
        f,
        [{ type: "mongodb", name: "docs", uri: mongo.uri, timeoutInSeconds: 300 }],
        () => mongo.events.some((e) => e.op === "silent:buildInfo"),
      );
    } finally {
      await mongo.close();
      f.cleanup();
    }
  },
});
