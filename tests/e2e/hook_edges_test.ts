/**
 * Hook mode at its edges, through the compiled binary: the freeze hook killed
 * before it attached, its output on a filesystem the holder froze, a stateDir
 * others can write (a planted holder), the deadline while the agent still
 * freezes the log's filesystem, Azure-tolerated config findings, a stateDir
 * that cannot be written, a recovery that would outlast the hook's timeout (a
 * dead run's database lock on a server that never answers).
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { chmodSync, existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import net from "node:net";
import { join } from "node:path";
import process from "node:process";
import { processStart } from "../../src/sys/process_identity.ts";
import { BIN, runBin, startBin, timeToWrite, waitFor } from "../helpers.ts";
import { lastResult } from "../hook_agent.ts";
import { makeLoopFs } from "../loop.ts";
import { dbDir, mariadbWrite, startMariaDb } from "../db_servers.ts";
import { runFixture } from "../run_fixture.ts";

/** A TCP server that accepts connections and never answers (a hung database). */
async function blackhole(): Promise<{ port: number; close(): void }> {
  const sockets: net.Socket[] = [];
  const server = net.createServer((socket) => {
    socket.on("error", () => {});
    sockets.push(socket);
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return {
    port: (server.address() as net.AddressInfo).port,
    close() {
      for (const socket of sockets) socket.destroy();
      server.close();
    },
  };
}

Deno.test({
  name:
    "hook edges: killed early, output on a frozen fs, planted holder, deadline, stateDir, recovery",
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async (t) => {
    const f = runFixture();
    try {
      await t.step(
        "the freeze hook killed before it attached: nothing quiesced, nothing frozen",
        async () => {
          const state = f.path("state-early");
          const ran = f.path("early-pre-ran");
          const config = f.config({
            stateDir: state,
            plugins: [{ type: "script", name: "app", pre: f.script("early.sh", `touch "${ran}"`) }],
            hook: { maxHoldSeconds: 30 },
          }, "early.json");
          const hook = startBin([
            "hook",
            "pre",
            "--for",
            "gcp",
            "--config",
            config,
            "--timeout",
            "3",
          ]);
          // Killed the moment its holder exists, as an agent's timeout or a crash would.
          const pid = hook.child.pid!;
          let holder: number | undefined;
          while (holder === undefined && hook.child.exitCode === null) {
            const children = readFileSync(`/proc/${pid}/task/${pid}/children`, "utf8").trim();
            if (children) holder = Number(children.split(" ")[0]);
          }
          hook.child.kill("SIGKILL");
          assert.ok(holder, "the holder was started");
          await waitFor("the holder to end", () => !existsSync(`/proc/${holder}`), 15_000);
          const result = lastResult(state);
          assert.equal(result.hook.endedBy, "hook-gone");
          assert.ok(
            result.errors.some((e) => e.code === "HookAborted"),
            JSON.stringify(result.errors),
          );
          assert.ok(!existsSync(ran), "no pre-script ran for a hook that was gone");
          assert.equal(result.plugins[0].quiesce, null);
          assert.deepEqual(result.freeze.mounts, [], "nothing was frozen");
        },
      );

      await t.step(
        "the freeze hook's output goes to a file on a filesystem it froze: it returns",
        async () => {
          const config = f.config({
            stateDir: f.path("state-out"),
            freeze: { mounts: [f.mp], maxFrozenSeconds: 20 },
            hook: { maxHoldSeconds: 30 },
          }, "out.json");
          const log = join(f.mp, "backup.log");
          // A cron job's "vmsnap hook pre --for generic >> /var/log/backup.log 2>&1", /var frozen.
          const started = performance.now();
          const pre = spawnSync(
            "/bin/sh",
            ["-c", `exec "$0" hook pre --for generic --config "$1" >> "$2" 2>&1`, BIN, config, log],
            { timeout: 15_000 },
          );
          const took = performance.now() - started;
          assert.ok(
            took < 8000,
            `the hook returned while the filesystem was frozen (${Math.round(took)} ms)`,
          );
          assert.equal(pre.status, 0);
          const post = await runBin(["hook", "post", "--for", "generic", "--config", config]);
          assert.equal(post.code, 0, post.stderr);
          const result = lastResult(f.path("state-out"));
          assert.equal(result.consistency, "filesystem");
          assert.equal(
            result.freeze.guard?.steppedIn,
            undefined,
            "the guard did not have to step in",
          );
        },
      );

      await t.step("a stateDir others can write: nothing planted there is trusted", async () => {
        const state = f.path("open-state");
        mkdirSync(join(state, "hook"), { recursive: true });
        chmodSync(state, 0o777);
        // A user's fake holder: a live pid (this test) and a socket that answers "success".
        writeFileSync(
          join(state, "hook", "holder.json"),
          JSON.stringify({
            pid: process.pid,
            started: processStart(process.pid),
            runId: "fake",
            agent: "vmware",
            since: "now",
          }),
        );
        writeFileSync(join(state, "hook", "token"), "planted");
        let contacted = false;
        const fake = net.createServer((socket) => {
          contacted = true;
          socket.end(`${JSON.stringify({ event: "result", result: { exitCode: 0 } })}\n`);
        });
        await new Promise<void>((resolve) =>
          fake.listen(join(state, "hook", "holder.sock"), resolve)
        );
        try {
          const config = f.config({ fsFreezeEnabled: false, stateDir: state }, "open.json");
          for (const event of ["thaw", "freeze"]) {
            const ran = await runBin(["hook", event, "--for", "vmware", "--config", config]);
            assert.equal(ran.code, 2, ran.stderr);
            assert.match(ran.stderr, /\[InsecureDirectory\] stateDir \S+open-state is refused/);
          }
          assert.equal(contacted, false, "the planted holder was never contacted");
        } finally {
          fake.close();
        }
      });

      await t.step(
        "the deadline while the agent still freezes the log's filesystem: the database is released",
        async () => {
          const db = dbDir();
          const server = await startMariaDb(db.dir);
          try {
            server.sql(
              "CREATE DATABASE app; CREATE TABLE app.t (id INT PRIMARY KEY) ENGINE=InnoDB",
            );
            // The log and stateDir live on the filesystem the agent freezes; the database does not.
            const state = join(f.mp, "state");
            const config = f.config({
              stateDir: state,
              log: { file: join(f.mp, "log", "vmsnap.jsonl") },
              plugins: [{ type: "mysql", name: "shop", socket: server.socket }],
              hook: { maxHoldSeconds: 3 },
            }, "agent-frozen.json");
            const pre = await runBin(["hook", "freeze", "--for", "vmware", "--config", config]);
            assert.equal(pre.code, 0, pre.stderr);
            const holder = JSON.parse(readFileSync(join(state, "hook", "holder.json"), "utf8")).pid;
            // VMware freezes after its freeze script (here: the test's own loop mount only).
            spawnSync("fsfreeze", ["--freeze", f.mp]);
            try {
              // The thaw never comes in time: at hook.maxHoldSeconds the lock must go.
              const row = await mariadbWrite(server.socket, "INSERT INTO app.t VALUES (1)", 10_000);
              assert.ok(row < 8000, `the deadline released the database while frozen (${row} ms)`);
            } finally {
              spawnSync("fsfreeze", ["--unfreeze", f.mp]);
            }
            await waitFor("the holder to end", () => !existsSync(`/proc/${holder}`), 15_000);
            const result = lastResult(state);
            assert.equal(result.hook.endedBy, "deadline");
            assert.equal(result.plugins[0].resume?.ok, true);
          } finally {
            await server.stop();
            db.cleanup();
          }
        },
      );

      await t.step(
        "what Azure's framework tolerates: accepted as run does, warned in the result",
        async () => {
          const state = f.path("state-lenient");
          const config = f.config({
            fsFreezeEnabled: false,
            stateDir: state,
            timeoutInSeconds: 5000,
            someUnknownKey: 1,
          }, "lenient.json");
          const pre = await runBin(["hook", "freeze", "--for", "vmware", "--config", config]);
          assert.equal(pre.code, 0, pre.stderr);
          const thaw = await runBin(["hook", "thaw", "--for", "vmware", "--config", config]);
          assert.equal(thaw.code, 0, thaw.stderr);
          const warned = lastResult(state).warnings.map((w) => w.code);
          assert.ok(warned.includes("ConfigValueClamped"), warned.join());
          assert.ok(warned.includes("UnknownConfigKey"), warned.join());
        },
      );

      await t.step("a thaw hook that times out while the holder resumes says so", async () => {
        const state = f.path("state-slow-post");
        const config = f.config({
          fsFreezeEnabled: false,
          stateDir: state,
          plugins: [{ type: "script", name: "app", post: f.script("slow-post.sh", "sleep 5") }],
          hook: { maxHoldSeconds: 600 },
        }, "slow-post.json");
        assert.equal(
          (await runBin(["hook", "freeze", "--for", "vmware", "--config", config])).code,
          0,
        );
        const holder = JSON.parse(readFileSync(join(state, "hook", "holder.json"), "utf8")).pid;
        const thaw = await runBin([
          "hook",
          "thaw",
          "--for",
          "vmware",
          "--config",
          config,
          "--timeout",
          "1",
        ]);
        assert.equal(thaw.code, 2, thaw.stderr);
        assert.match(thaw.stderr, /\[HookTimeout\] the holder received the thaw/);
        assert.doesNotMatch(thaw.stderr, /maxHoldSeconds/, "the hold is not left to its deadline");
        await waitFor("the holder to end", () => !existsSync(`/proc/${holder}`), 15_000);
        assert.equal(lastResult(state).hook.endedBy, "thaw");
      });

      await t.step(
        "holder and guard both killed, stateDir on the frozen filesystem: the next hooks thaw first",
        async () => {
          const state = join(f.mp, "state-on-frozen");
          const config = f.config({
            stateDir: state,
            freeze: { mounts: [f.mp], maxFrozenSeconds: 60 },
            hook: { maxHoldSeconds: 60 },
          }, "both-killed.json");
          /** A hold whose holder and guard die together (a cgroup SIGKILL), the mount left frozen. */
          const killedHold = async () => {
            const pre = await runBin(["hook", "pre", "--for", "gcp", "--config", config]);
            assert.equal(pre.code, 0, pre.stderr);
            const holder = JSON.parse(readFileSync(join(state, "hook", "holder.json"), "utf8")).pid;
            const guard = Number(
              readFileSync(`/proc/${holder}/task/${holder}/children`, "utf8").trim().split(" ")[0],
            );
            process.kill(guard, "SIGKILL");
            process.kill(holder, "SIGKILL");
            await waitFor("both gone", () => !existsSync(`/proc/${holder}`), 5000);
          };
          /** Runs a hook; fails (and thaws, so that it ends) if it is still blocked after 10 s. */
          const inTime = async (event: string) => {
            const hook = startBin(["hook", event, "--for", "gcp", "--config", config]);
            const late = new Promise<"late">((r) => setTimeout(() => r("late"), 10_000));
            const ran = await Promise.race([hook.done, late]);
            if (ran === "late") {
              spawnSync("fsfreeze", ["--unfreeze", f.mp]);
              await hook.done;
              assert.fail(`hook ${event} blocked on the frozen stateDir`);
            }
            return ran;
          };
          await killedHold();
          const post = await inTime("post");
          assert.equal(post.code, 2, post.stderr);
          assert.match(post.stderr, /recovered: thawed \S+ left frozen by run/);
          assert.match(post.stderr, /\[HolderDied\]/);
          assert.ok(await timeToWrite(f.mp, 3000) < 3000, "the mount was thawed");
          await killedHold();
          const pre = await inTime("pre");
          assert.equal(pre.code, 0, pre.stderr);
          assert.match(pre.stderr, /recovered: thawed/);
          assert.equal(
            (await runBin(["hook", "post", "--for", "gcp", "--config", config])).code,
            0,
          );
        },
      );

      await t.step(
        "SIGTERM while the holder resumes: it finishes, the result is kept",
        async () => {
          const state = f.path("state-term");
          const started = f.path("post-started");
          const config = f.config({
            fsFreezeEnabled: false,
            stateDir: state,
            plugins: [{
              type: "script",
              name: "app",
              post: f.script("term-post.sh", `touch "${started}"\nsleep 2`),
            }],
          }, "term.json");
          assert.equal(
            (await runBin(["hook", "freeze", "--for", "vmware", "--config", config])).code,
            0,
          );
          const holder = JSON.parse(readFileSync(join(state, "hook", "holder.json"), "utf8"));
          const thaw = startBin(["hook", "thaw", "--for", "vmware", "--config", config]);
          await waitFor("the post-script", () => existsSync(started), 10_000);
          // The agent's service stops (systemd sends SIGTERM to its cgroup) while plugins resume.
          process.kill(holder.pid, "SIGTERM");
          const ran = await thaw.done;
          assert.equal(ran.code, 0, ran.stderr);
          await waitFor("the holder to end", () => !existsSync(`/proc/${holder.pid}`), 10_000);
          const result = lastResult(state);
          assert.equal(result.runId, holder.runId, "the result of this hold was recorded");
          assert.equal(result.plugins[0].resume?.ok, true);
          assert.equal(result.hook.endedBy, "thaw");
          assert.ok(result.warnings.some((w) => w.code === "Interrupted"), "the signal is said");
        },
      );

      await t.step("a read-only stateDir: StateDirUnwritable, not a lost reason", async () => {
        const ro = makeLoopFs({ dir: f.dir, name: "state-ro", sizeMiB: 16 });
        try {
          mkdirSync(join(ro.mountPoint, "state"), { mode: 0o700 });
          spawnSync("mount", ["-o", "remount,ro", ro.mountPoint]);
          const config = f.config({
            stateDir: join(ro.mountPoint, "state"),
            hook: { maxHoldSeconds: 5 },
          }, "ro.json");
          const pre = await runBin(["hook", "pre", "--for", "gcp", "--config", config]);
          assert.equal(pre.code, 2, pre.stderr);
          assert.match(pre.stderr, /\[StateDirUnwritable\] stateDir \S+state cannot be written/);
          assert.match(pre.stderr, /EROFS/);
          const missing = f.config({ stateDir: join(ro.mountPoint, "state", "new") }, "ro2.json");
          const pre2 = await runBin(["hook", "freeze", "--for", "qemu-ga", "--config", missing]);
          assert.equal(pre2.code, 2, pre2.stderr);
          assert.match(pre2.stderr, /\[StateDirUnwritable\]/);
        } finally {
          ro.cleanup();
        }
      });

      await t.step(
        "a recovery that would outlast the hook's timeout: the hook returns in time",
        async () => {
          const hole = await blackhole();
          try {
            const state = f.path("state-recover");
            mkdirSync(state, { mode: 0o700 });
            const config = f.config({
              fsFreezeEnabled: false,
              stateDir: state,
              plugins: [{
                type: "mongodb",
                name: "m",
                uri: `mongodb://127.0.0.1:${hole.port}/?directConnection=true`,
                timeoutInSeconds: 60,
              }],
            }, "recover.json");
            // A dead run's fsyncLock marker: recovery tries to release it on a server that never answers.
            writeFileSync(
              join(state, "lock-mongodb-m.json"),
              JSON.stringify({
                type: "mongodb",
                plugin: "m",
                runId: "dead-run",
                pid: 2 ** 22 + 1,
                started: "0",
                configFile: config,
                since: "2026-01-01T00:00:00Z",
              }),
              { mode: 0o600 },
            );
            for (const event of ["pre", "post"]) {
              const started = performance.now();
              const ran = await runBin([
                "hook",
                event,
                "--for",
                "azure",
                "--config",
                config,
                "--timeout",
                "3",
              ]);
              const took = performance.now() - started;
              assert.equal(ran.code, 2, ran.stderr);
              assert.ok(
                took < 6000,
                `${event} returned within its timeout (${Math.round(took)} ms)`,
              );
              // pre: the timeout is why it stopped; post: there was no holder, and recovery was cut short.
              const why = event === "pre" ? /\[HookTimeout\].*recover/s : /\[NoHolder\].*recover/s;
              assert.match(ran.stderr, why, ran.stderr);
              assert.match(ran.stderr, /did not finish within the hook's timeout \(3 s\)/);
            }
            assert.ok(!existsSync(join(state, "hook", "holder.json")), "no holder was left");
            assert.ok(
              existsSync(join(state, "lock-mongodb-m.json")),
              "the marker is kept for later",
            );
          } finally {
            hole.close();
          }
        },
      );
    } finally {
      f.cleanup();
    }
  },
});
