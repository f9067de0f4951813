/**
 * Fault injection beyond signals: the guard dies, both agent and guard die, a
 * freeze blocks in the kernel, scripts misbehave, the snapshot hangs, the
 * database goes away while locked, two runs collide, the log's disk fills.
 */
import assert from "node:assert/strict";
import { execFileSync, spawnSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import process from "node:process";
import {
  BIN,
  codes,
  type Ran,
  resultOf,
  runBin,
  startBin,
  timeToWrite,
  waitFor,
} from "../helpers.ts";
import { dbDir, startMariaDb, startPostgres } from "../db_servers.ts";
import { makeLoopFs } from "../loop.ts";
import { startMongoWireServer } from "../mongo_wire_server.ts";
import { figure } from "../proof.ts";
import { runFixture } from "../run_fixture.ts";
import { assertCleanAfterFault } from "./fault_helpers.ts";

const options = { sanitizeResources: false, sanitizeOps: false };
/**
 * Runs vmsnap and then asserts what every fault scenario must leave: no mount
 * frozen, no process of the run, the run lock released (assertCleanAfterFault).
 */
async function faultRun(
  f: { mp: string; dir: string },
  args: string[],
  options: { timeoutMs?: number } = {},
): Promise<Ran> {
  const ran = await runBin(args, options);
  await cleanAfter(f, ran);
  return ran;
}

/** The aftermath check for a finished run (its id from the result line). */
async function cleanAfter(f: { mp: string; dir: string }, ran: Ran): Promise<void> {
  const result = resultOf(ran.stdout);
  await assertCleanAfterFault({
    mounts: [f.mp],
    stateDir: join(f.dir, "state"),
    runId: result.runId,
  });
}

const guardPids = () =>
  (spawnSync("pgrep", ["-f", `${BIN} __guard`], { encoding: "utf8" }).stdout ?? "").trim().split(
    "\n",
  ).filter(Boolean).map(Number);

Deno.test({
  ...options,
  name: "faults: the guard SIGKILLed while frozen; the agent still thaws and says so",
  fn: async () => {
    const f = runFixture();
    try {
      const run = startBin(["run", "--json", "--config", f.config()], {
        env: { VMSNAP_PAUSE_AT: "frozen", VMSNAP_PAUSE_MS: "1500" },
      });
      await waitFor("the pause", () => run.stderr().includes("paused at frozen"), 20_000);
      const [guard] = guardPids();
      assert.ok(guard, "a guard runs while frozen");
      process.kill(guard, "SIGKILL");
      const ran = await run.done;
      const result = resultOf(ran.stdout);
      assert.equal(ran.code, 0, ran.stdout);
      assert.ok(result.warnings.some((w: { code: string }) => w.code === "GuardFailed"));
      await cleanAfter(f, ran);
      assert.ok(result.freeze.mounts.every((m: { thawed: boolean }) => m.thawed));
      assert.ok((await timeToWrite(f.mp)) < 1000);
    } finally {
      f.cleanup();
    }
  },
});

// Only run, recover (and hook) recover: help and version change nothing (tests/e2e/side_effects_test.ts).
for (const how of ["vmsnap run", "vmsnap recover"] as const) {
  Deno.test({
    ...options,
    name:
      `faults: agent and guard both SIGKILLed while frozen; \`${how}\` thaws what the marker lists`,
    fn: async () => {
      const f = runFixture();
      try {
        const config = f.config();
        const run = startBin(["run", "--json", "--config", config], {
          env: { VMSNAP_PAUSE_AT: "frozen", VMSNAP_PAUSE_MS: "30000" },
        });
        await waitFor("the pause", () => run.stderr().includes("paused at frozen"), 20_000);
        const runId = JSON.parse(readFileSync(join(f.dir, "state", "run.lock"), "utf8")).runId;
        // The guard first: killed after the agent, it would thaw at once.
        for (const pid of guardPids()) process.kill(pid, "SIGKILL");
        await waitFor("the guard to die", () => guardPids().length === 0);
        process.kill(run.child.pid!, "SIGKILL");
        await run.done;
        assert.equal(await timeToWrite(f.mp, 300), Infinity, "left frozen: nothing else thaws it");
        const started = performance.now();
        const next = how === "vmsnap run"
          ? await runBin(["run", "--json", "--config", config])
          : await runBin(["recover", "--json", "--config", config]);
        figure(
          `\`${how}\` thaws`,
          "the next invocation took (thaw included)",
          performance.now() - started,
        );
        assert.equal(next.code, 0, next.stdout + next.stderr);
        if (how === "vmsnap run") {
          const result = resultOf(next.stdout);
          assert.deepEqual(
            result.recovered.thawed.map((
              t: { mount: string; wasFrozen: boolean; confirmed: boolean },
            ) => [t.mount, t.wasFrozen, t.confirmed]),
            [[f.mp, true, true]],
          );
          assert.ok(
            result.warnings.some((w: { message: string }) =>
              w.message.startsWith(`thawed ${f.mp}, left frozen by run ${runId}`)
            ),
            JSON.stringify(result.warnings),
          );
        } else {
          const report = JSON.parse(next.stdout);
          assert.deepEqual(
            report.thawed.map((
              t: { mount: string; wasFrozen: boolean; confirmed: boolean },
            ) => [t.mount, t.wasFrozen, t.confirmed]),
            [[f.mp, true, true]],
          );
          assert.equal(report.deadRun.runId, runId);
        }
        await assertCleanAfterFault({ mounts: [f.mp], stateDir: join(f.dir, "state"), runId });
        // Nothing more to do the time after.
        const again = await runBin(["recover", "--config", config]);
        assert.match(again.stdout, /nothing to recover/);
      } finally {
        f.cleanup();
      }
    },
  });
}

Deno.test({
  ...options,
  name:
    "faults: a freeze that blocks in the kernel (wrong order over a nested loop image) is broken by the guard",
  fn: async () => {
    const f = runFixture({ sizeMiB: 96 });
    let inner;
    try {
      inner = makeLoopFs({ dir: f.mp, name: "inner", sizeMiB: 32 });
      // Dirty data on the inner filesystem, so its freeze must write through the loop image.
      execFileSync("dd", [
        "if=/dev/urandom",
        `of=${join(inner.mountPoint, "data")}`,
        "bs=1M",
        "count=8",
        "status=none",
      ]);
      const wrong = f.config(
        { freeze: { mounts: [f.mp, inner.mountPoint], maxFrozenSeconds: 2 } },
        "wrong.json",
      );
      const checked = await runBin(["check", "--json", "--config", wrong]);
      assert.ok(
        JSON.parse(checked.stdout).warnings.some((w: { code: string }) => w.code === "FreezeOrder"),
      );
      const started = performance.now();
      const ran = await faultRun(f, ["run", "--json", "--config", wrong], { timeoutMs: 30_000 });
      const elapsed = performance.now() - started;
      figure(
        "a freeze that blocks in the kernel",
        "the run finished after (maxFrozenSeconds 2)",
        elapsed,
      );
      const result = resultOf(ran.stdout);
      assert.ok(codes(result).includes("FreezeTimeout"), ran.stdout);
      assert.equal(result.freeze.guard.steppedIn.reason, "deadline");
      assert.ok(elapsed < 10_000, `broken within the deadline (${Math.round(elapsed)} ms)`);
      for (const mount of [f.mp, inner.mountPoint]) {
        assert.ok((await timeToWrite(mount, 3000)) < 1000, mount);
      }
      // "auto" orders the inner filesystem first, and then nothing blocks.
      const auto = await runBin([
        "check",
        "--json",
        "--config",
        f.config({ freeze: { mounts: "auto" } }, "auto.json"),
      ]);
      const order = JSON.parse(auto.stdout).freezeTargets.map((t: { mountPoint: string }) =>
        t.mountPoint
      );
      assert.ok(order.indexOf(inner.mountPoint) < order.indexOf(f.mp), order.join(" "));
      const right = await faultRun(f, [
        "run",
        "--json",
        "--config",
        f.config(
          { freeze: { mounts: [inner.mountPoint, f.mp], maxFrozenSeconds: 10 } },
          "right.json",
        ),
      ]);
      assert.equal(right.code, 0, right.stdout);
      assert.ok(resultOf(right.stdout).freeze.frozenMs < 5000);
    } finally {
      spawnSync("fsfreeze", ["--unfreeze", f.mp]);
      if (inner) spawnSync("fsfreeze", ["--unfreeze", inner.mountPoint]);
      inner?.cleanup();
      f.cleanup();
    }
  },
});

Deno.test({
  ...options,
  name:
    "faults: misbehaving pre-scripts (daemon, 50 MB of output, closed stdout, SIGTERM ignored, hang)",
  fn: async (t) => {
    const f = runFixture();
    try {
      await t.step(
        "forks a daemon and exits: left alone, not waited for, named in the log",
        async () => {
          const marker = `sleep 7${Date.now() % 100000}`;
          const pre = f.script("daemon.sh", `(${marker} &) ; echo started`);
          const started = performance.now();
          // Not faultRun: the daemon carries the run's id and is meant to outlive the run.
          const ran = await runBin([
            "run",
            "--json",
            "--config",
            f.config({ preScriptLocation: pre }),
          ]);
          const elapsed = performance.now() - started;
          figure("forks a daemon and exits", "the run took", elapsed);
          assert.equal(ran.code, 0, ran.stdout);
          assert.ok(elapsed < 3000);
          const log = readFileSync(join(f.dir, "log", "vmsnap.jsonl"), "utf8");
          assert.match(log, new RegExp(`"event":"script-left-processes".*"command":"${marker}"`));
          assert.equal(spawnSync("pkill", ["-f", marker]).status, 0, "the daemon was left running");
        },
      );
      await t.step("prints 50 MB: never blocks, the tail is kept", async () => {
        const pre = f.script(
          "noisy.sh",
          "head -c 50000000 /dev/zero | tr '\\0' 'x' | fold -w 1000; echo; echo done",
        );
        const started = performance.now();
        const ran = await faultRun(f, [
          "run",
          "--json",
          "--config",
          f.config({ preScriptLocation: pre }),
        ], { timeoutMs: 120_000 });
        figure("prints 50 MB", "the run took", performance.now() - started);
        const result = resultOf(ran.stdout);
        assert.equal(ran.code, 0, ran.stderr);
        assert.equal(
          result.plugins[0].quiesce.facts.attempts[0].outputBytes,
          50_000_000 + 49_999 + 1 + 5,
        );
      });
      await t.step(
        "closes stdout and keeps running: waited for by its exit, killed at the timeout",
        async () => {
          let pre = f.script("closed.sh", "exec >&- 2>&-; sleep 1; exit 0");
          let ran = await faultRun(f, [
            "run",
            "--json",
            "--config",
            f.config({ preScriptLocation: pre }),
          ]);
          assert.equal(ran.code, 0, ran.stdout);
          assert.ok(resultOf(ran.stdout).plugins[0].quiesce.durationMs >= 1000);
          pre = f.script("closed-hang.sh", "exec >&- 2>&-; exec sleep 300");
          ran = await faultRun(f, [
            "run",
            "--json",
            "--config",
            f.config({ preScriptLocation: pre, timeoutInSeconds: 1 }),
          ]);
          assert.deepEqual(codes(resultOf(ran.stdout)), ["Pre-ScriptTimeout"]);
        },
      );
      await t.step("ignores SIGTERM: killed after the grace, nothing survives", async () => {
        const marker = `sleep 8${Date.now() % 100000}`;
        const pre = f.script("stubborn.sh", `trap '' TERM; ${marker}; true`);
        const ran = await faultRun(f, [
          "run",
          "--json",
          "--config",
          f.config({ preScriptLocation: pre, timeoutInSeconds: 1 }),
        ]);
        assert.deepEqual(codes(resultOf(ran.stdout)), ["Pre-ScriptTimeout"]);
        assert.equal(spawnSync("pgrep", ["-f", marker]).status, 1);
      });
      await t.step(
        "hangs: Pre-ScriptTimeout, the snapshot goes on at filesystem consistency",
        async () => {
          const pre = f.script("hang.sh", "exec sleep 300");
          const ran = await faultRun(f, [
            "run",
            "--json",
            "--config",
            f.config({ preScriptLocation: pre, timeoutInSeconds: 1 }),
          ]);
          const result = resultOf(ran.stdout);
          assert.deepEqual([ran.code, result.consistency], [1, "filesystem"]);
        },
      );
    } finally {
      f.cleanup();
    }
  },
});

Deno.test({
  ...options,
  name: "faults: the snapshot command hangs; the external peer never answers",
  fn: async () => {
    const f = runFixture();
    try {
      const hang = f.script("hang-snap.sh", "exec sleep 300");
      let ran = await faultRun(f, [
        "run",
        "--json",
        "--config",
        f.config({ snapshot: { command: [hang], timeoutInSeconds: 1 } }),
      ]);
      assert.deepEqual(codes(resultOf(ran.stdout)), ["SnapshotTimeout"]);
      assert.equal(spawnSync("pgrep", ["-f", hang]).status, 1, "the hanging command was killed");
      assert.ok((await timeToWrite(f.mp)) < 1000);
      const peer = startBin([
        "run",
        "--json",
        "--external",
        "--config",
        f.config({ snapshot: { external: { timeoutInSeconds: 1 } } }),
      ]);
      ran = await peer.done; // stdin stays open and silent
      assert.equal(ran.code, 2);
      await cleanAfter(f, ran);
      assert.deepEqual(codes(resultOf(ran.stdout)), ["SnapshotTimeout"]);
      assert.ok((await timeToWrite(f.mp)) < 1000);
    } finally {
      f.cleanup();
    }
  },
});

Deno.test({
  ...options,
  name: "faults: the database killed or restarted while locked, the connection dropped",
  fn: async (t) => {
    const f = runFixture();
    const db = dbDir();
    try {
      await t.step(
        "MariaDB killed during the snapshot: PluginLockLost, consistency drops to filesystem",
        async () => {
          const server = await startMariaDb(db.dir);
          try {
            const snap = f.script("kill-db.sh", `kill -9 ${server.pid}; sleep 0.5`);
            const ran = await faultRun(f, [
              "run",
              "--json",
              "--config",
              f.config({
                snapshot: { command: [snap] },
                plugins: [{ type: "mysql", name: "shop", socket: server.socket }],
              }),
            ]);
            const result = resultOf(ran.stdout);
            assert.equal(ran.code, 1, ran.stdout);
            assert.deepEqual(codes(result), ["PluginLockLost"]);
            assert.equal(result.consistency, "filesystem");
          } finally {
            await server.stop();
          }
        },
      );
      await t.step("PostgreSQL restarted during a backup: PluginLockLost", async () => {
        const pg = await startPostgres(db.dir);
        try {
          const restart = f.script(
            "restart-pg.sh",
            // The restarted postmaster is started by the snapshot command, so it is a process of the
            // run by construction: this step checks the lock, not the process list.
            `setpriv --reuid=postgres --regid=postgres --init-groups /usr/lib/postgresql/15/bin/pg_ctl -D ${pg.socketDir}/data -m fast -w restart -o "-k ${pg.socketDir} -p ${pg.port} -c listen_addresses=" > /dev/null`,
          );
          const ran = await runBin([
            "run",
            "--json",
            "--config",
            f.config({
              fsFreezeEnabled: false,
              snapshot: { command: [restart] },
              plugins: [{
                type: "postgresql",
                name: "pg",
                host: pg.socketDir,
                port: pg.port,
                mode: "backup",
              }],
            }),
          ]);
          const result = resultOf(ran.stdout);
          assert.equal(ran.code, 1, ran.stdout);
          assert.deepEqual(codes(result), ["PluginLockLost"]);
        } finally {
          // The restarted postmaster is not the pid we started: stop it by its data directory.
          spawnSync("setpriv", [
            "--reuid=postgres",
            "--regid=postgres",
            "--init-groups",
            "/usr/lib/postgresql/15/bin/pg_ctl",
            "-D",
            `${pg.socketDir}/data`,
            "-m",
            "immediate",
            "stop",
          ]);
          await pg.stop();
        }
      });
      await t.step(
        "MongoDB connection dropped while locked: resume reconnects and unlocks once",
        async () => {
          const mongo = await startMongoWireServer();
          try {
            const snap = f.script("drop.sh", `touch "${f.path("dropping")}"; sleep 1`);
            const run = startBin([
              "run",
              "--json",
              "--config",
              f.config({
                snapshot: { command: [snap] },
                plugins: [{ type: "mongodb", name: "docs", uri: mongo.uri }],
              }),
            ]);
            await waitFor("the snapshot", () => f.exists("dropping"), 20_000);
            mongo.dropConnections();
            const ran = await run.done;
            assert.equal(ran.code, 0, ran.stdout);
            assert.equal(mongo.lockCount(), 0);
            assert.equal(mongo.events.filter((e) => e.op === "unlock").length, 1);
          } finally {
            await mongo.close();
          }
        },
      );
    } finally {
      db.cleanup();
      f.cleanup();
    }
  },
});

Deno.test({
  ...options,
  name:
    "faults: two runs at once: one runs, one exits 2 AnotherRunInProgress, neither corrupts the other",
  fn: async () => {
    const f = runFixture();
    try {
      const slow = f.script("slow.sh", `touch "${f.path("snapping")}"; sleep 1`);
      const config = f.config({ snapshot: { command: [slow] } });
      const [a, b] = [
        startBin(["run", "--json", "--config", config]),
        startBin(["run", "--json", "--config", config]),
      ];
      const [ra, rb] = await Promise.all([a.done, b.done]);
      await cleanAfter(f, ra);
      await cleanAfter(f, rb);
      const exits = [ra.code, rb.code].sort();
      assert.deepEqual(exits, [0, 2]);
      const loser = ra.code === 2 ? ra : rb;
      assert.deepEqual(codes(resultOf(loser.stdout)), ["AnotherRunInProgress"]);
      const winner = resultOf((ra.code === 0 ? ra : rb).stdout);
      assert.equal(winner.status, "success");
      // The state is clean: a third run goes through, nothing to recover.
      assert.equal((await runBin(["run", "--json", "--config", config])).code, 0);
      assert.match((await runBin(["recover", "--config", config])).stdout, /nothing to recover/);
    } finally {
      f.cleanup();
    }
  },
});

Deno.test({
  ...options,
  name: "faults: a full disk for the log file: the run completes, the loss is reported",
  fn: async () => {
    const f = runFixture();
    // A tiny loop filesystem, filled to the last block.
    const tiny = makeLoopFs({ dir: f.dir, name: "tiny", sizeMiB: 1 });
    spawnSync("dd", [
      "if=/dev/zero",
      `of=${join(tiny.mountPoint, "fill")}`,
      "bs=4k",
      "status=none",
    ]);
    try {
      const pre = f.script("chatty.sh", "seq 1 2000");
      const ran = await faultRun(f, [
        "run",
        "--json",
        "--config",
        f.config({ preScriptLocation: pre, log: { file: join(tiny.mountPoint, "vmsnap.jsonl") } }),
      ]);
      const result = resultOf(ran.stdout);
      assert.equal(result.snapshotTaken, true);
      assert.equal(result.consistency, "application");
      assert.ok(result.log.lost > 0);
      assert.ok(codes(result).includes("LogWriteFailed"));
      // A result with an error is never "success" (issue 9, item 14).
      assert.equal(result.status, "degraded");
      assert.match(
        result.errors.find((e: { code: string }) => e.code === "LogWriteFailed").message,
        /No space left|ENOSPC/i,
      );
      figure(
        "a full disk for the log file",
        "records lost (and reported)",
        result.log.lost,
        "records",
      );
    } finally {
      tiny.cleanup();
      f.cleanup();
    }
  },
});
