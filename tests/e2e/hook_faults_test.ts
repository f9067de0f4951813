/**
 * Hook mode when things go wrong, through the compiled binary with a real
 * MariaDB and the test's loop mount: the thaw never comes, the holder is
 * SIGKILLed, the freeze hook is killed while the holder quiesces, two freezes
 * in a row, a thaw without a freeze, the hook's own timeout. And the plugin
 * stage order.
 */
import assert from "node:assert/strict";
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import process from "node:process";
import { alive, runBin, startBin, timeToWrite, waitFor } from "../helpers.ts";
import { dbDir, mariadbWrite, startMariaDb } from "../db_servers.ts";
import { runFixture } from "../run_fixture.ts";
import { lastResult } from "../hook_agent.ts";

const SLEEP = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

function holderPid(stateDir: string): number {
  return JSON.parse(readFileSync(join(stateDir, "hook", "holder.json"), "utf8")).pid;
}

Deno.test({
  name: "hook faults: deadline, holder killed, hook killed, two freezes, thaw alone, timeout",
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async (t) => {
    const f = runFixture();
    const db = dbDir();
    const server = await startMariaDb(db.dir);
    const state = f.path("state");
    const mysql = { type: "mysql", name: "shop", socket: server.socket };
    const hook = (event: string, agent: string, config: string, extra: string[] = []) =>
      runBin(["hook", event, "--for", agent, "--config", config, ...extra]);
    /** Resolves when no holder runs any more (it wrote its result). */
    const holderGone = (pid: number) => waitFor(`holder ${pid} to exit`, () => !alive(pid), 30_000);
    try {
      server.sql("CREATE DATABASE app; CREATE TABLE app.t (id INT PRIMARY KEY) ENGINE=InnoDB");

      await t.step(
        "the thaw never comes: the guard thaws, the holder's deadline resumes",
        async () => {
          const config = f.config({
            plugins: [mysql],
            freeze: { mounts: [f.mp], maxFrozenSeconds: 2 },
            hook: { maxHoldSeconds: 4 },
          }, "deadline.json");
          const pre = await hook("pre", "gcp", config);
          assert.equal(pre.code, 0, pre.stderr);
          const pid = holderPid(state);
          const started = performance.now();
          const [file, row] = await Promise.all([
            timeToWrite(f.mp, 20_000),
            mariadbWrite(server.socket, "INSERT INTO app.t VALUES (1)", 20_000),
          ]);
          assert.ok(file > 1000 && file < 6000, `the guard thawed the mount (${file} ms)`);
          assert.ok(row > 2500 && row < 12_000, `the deadline released the lock (${row} ms)`);
          await holderGone(pid);
          assert.ok(performance.now() - started < 15_000);
          const post = await hook("post", "gcp", config);
          assert.equal(post.code, 2);
          assert.match(post.stderr, /\[HoldTimeout\].*ended by deadline/s);
          const result = lastResult(state);
          assert.equal(result.hook.endedBy, "deadline");
          assert.ok(result.errors.some((e) => e.code === "HoldTimeout"));
          assert.ok(result.errors.some((e) => e.code === "FreezeTimeout"));
          assert.equal(result.snapshotTaken, false);
        },
      );

      await t.step(
        "the holder is SIGKILLed: the DB ends its session, the guard thaws",
        async () => {
          const config = f.config({ plugins: [mysql] }, "kill.json");
          const pre = await hook("pre", "gcp", config);
          assert.equal(pre.code, 0, pre.stderr);
          const pid = holderPid(state);
          process.kill(pid, "SIGKILL");
          const [file, row] = await Promise.all([
            timeToWrite(f.mp, 10_000),
            mariadbWrite(server.socket, "INSERT INTO app.t VALUES (2)", 10_000),
          ]);
          assert.ok(file < 5000, `the guard thawed the mount when the holder died (${file} ms)`);
          assert.ok(row < 5000, `the server ended the dead holder's session (${row} ms)`);
          const post = await hook("post", "gcp", config);
          assert.equal(post.code, 2);
          assert.match(post.stderr, /\[HolderDied\]/);
          assert.match(post.stderr, /recovered: .*guard of run/);
        },
      );

      await t.step("the freeze hook is killed while the holder quiesces: all resumed", async () => {
        const slow = f.script("slow-pre.sh", `touch "${f.path("slow-started")}"\nsleep 5`);
        const config = f.config({
          fsFreezeEnabled: false,
          plugins: [{ type: "script", name: "app", pre: slow }, { ...mysql, stage: 1 }],
        }, "hookkill.json");
        const pre = startBin(["hook", "pre", "--for", "generic", "--config", config]);
        await waitFor("the slow pre-script", () => f.exists("slow-started"), 20_000);
        const pid = holderPid(state);
        pre.child.kill("SIGKILL");
        await holderGone(pid);
        const result = lastResult(state);
        assert.equal(result.hook.endedBy, "hook-gone");
        assert.ok(
          result.errors.some((e) => e.code === "HookAborted"),
          JSON.stringify(result.errors),
        );
        assert.equal(result.plugins[1].quiesce, null, "stage 1 (mysql) never started");
        assert.ok(await mariadbWrite(server.socket, "INSERT INTO app.t VALUES (3)", 5000) < 5000);
      });

      await t.step("two freezes in a row: HoldInProgress, the first hold intact", async () => {
        const config = f.config({ fsFreezeEnabled: false, plugins: [mysql] }, "twice.json");
        assert.equal((await hook("freeze", "vmware", config)).code, 0);
        const second = await hook("freeze", "vmware", config);
        assert.equal(second.code, 2);
        assert.match(second.stderr, /\[HoldInProgress\]/);
        const write = mariadbWrite(server.socket, "INSERT INTO app.t VALUES (4)", 15_000);
        const first = await Promise.race([write.then(() => "done"), SLEEP(800).then(() => "held")]);
        assert.equal(first, "held", "the first hold still holds");
        const thaw = await hook("thaw", "vmware", config);
        assert.equal(thaw.code, 0, thaw.stderr);
        assert.ok(await write !== Infinity);
        // Two at the same moment: one holds, the other is refused with the reason.
        const both = await Promise.all([
          hook("freeze", "vmware", config),
          hook("freeze", "vmware", config),
        ]);
        assert.deepEqual(
          both.map((r) => r.code).sort(),
          [0, 2],
          both.map((r) => r.stderr).join("\n"),
        );
        assert.match(both.find((r) => r.code === 2)!.stderr, /\[HoldInProgress\]/);
        assert.equal((await hook("thaw", "vmware", config)).code, 0);
      });

      await t.step("a thaw without a freeze: NoHolder, exit 2", async () => {
        const config = f.config({ fsFreezeEnabled: false }, "alone.json");
        const thaw = await hook("thaw", "qemu-ga", config);
        assert.equal(thaw.code, 2);
        assert.match(thaw.stderr, /\[NoHolder\] no holder is running/);
        assert.ok(!existsSync(join(state, "hook", "holder.sock")));
      });

      await t.step(
        "the hook's timeout: it returns in time, the holder resumes and ends",
        async () => {
          const slow = f.script("slower-pre.sh", "sleep 20");
          const config = f.config({
            fsFreezeEnabled: false,
            plugins: [{ type: "script", name: "app", pre: slow, timeoutInSeconds: 60 }],
          }, "timeout.json");
          const started = performance.now();
          const pre = await hook("pre", "generic", config, ["--timeout", "2"]);
          const took = performance.now() - started;
          assert.equal(pre.code, 2);
          assert.match(pre.stderr, /\[HookTimeout\]/);
          assert.ok(took < 6000, `the hook returned within its timeout (${Math.round(took)} ms)`);
          assert.ok(!existsSync(join(state, "hook", "holder.json")));
          // The holder ends on the abort, or on the hook's connection closing, whichever it sees first.
          assert.ok(["abort", "hook-gone"].includes(lastResult(state).hook.endedBy));
          assert.equal(lastResult(state).plugins[0].resume?.ok, true, "the plugin was resumed");
        },
      );

      await t.step(
        "a plugin fails to quiesce: exit 2 after resuming, or 0 with continueBackupOnFailure",
        async () => {
          const broken = { type: "mysql", name: "gone", socket: f.path("no-such.sock") };
          const strict = f.config({
            fsFreezeEnabled: false,
            continueBackupOnFailure: false,
            plugins: [mysql, { ...broken, stage: 1 }],
          }, "strict.json");
          const pre = await hook("pre", "vmware", strict);
          assert.equal(pre.code, 2, pre.stderr);
          assert.match(pre.stderr, /\[PluginConnectFailed\]/);
          assert.ok(!existsSync(join(state, "hook", "holder.json")), "no holder is left");
          const result = lastResult(state);
          assert.equal(result.hook.endedBy, "quiesce-failed");
          assert.equal(result.plugins[0].resume?.ok, true, "what was quiesced was resumed");
          assert.ok(await mariadbWrite(server.socket, "INSERT INTO app.t VALUES (5)", 5000) < 5000);

          const lenient = f.config(
            { fsFreezeEnabled: false, plugins: [mysql, broken] },
            "lenient.json",
          );
          const held = await hook("pre", "vmware", lenient);
          assert.equal(held.code, 0, held.stderr);
          assert.match(held.stderr, /gone: PluginConnectFailed/);
          const thaw = await hook("thaw", "vmware", lenient);
          assert.equal(thaw.code, 1, "a snapshot at a lower consistency");
          assert.equal(lastResult(state).consistency, "crash");
        },
      );

      await t.step("stages: quiesce ascending, resume descending", async () => {
        const order = f.path("order");
        const step = (name: string) => f.script(`${name}.sh`, `echo ${name} >> "${order}"`);
        const config = f.config({
          fsFreezeEnabled: false,
          plugins: [
            { type: "script", name: "db", stage: 2, pre: step("pre-db"), post: step("post-db") },
            { type: "script", name: "app", pre: step("pre-app"), post: step("post-app") },
            { type: "script", name: "web", stage: 1, pre: step("pre-web"), post: step("post-web") },
          ],
        }, "stages.json");
        assert.equal((await hook("pre", "generic", config)).code, 0);
        assert.equal((await hook("post", "generic", config)).code, 0);
        assert.deepEqual(f.read("order").trim().split("\n"), [
          "pre-app",
          "pre-web",
          "pre-db",
          "post-db",
          "post-web",
          "post-app",
        ]);
      });
    } finally {
      await server.stop();
      db.cleanup();
      f.cleanup();
    }
  },
});
