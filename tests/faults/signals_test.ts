/**
 * Signals to the agent in every phase: SIGKILL, SIGTERM and SIGINT in
 * quiesce, frozen, snapshot, thaw and resume, with a real MariaDB locked by
 * the mysql plugin and two frozen loop filesystems. Afterwards nothing is
 * frozen, locked or left running, and the result (SIGTERM, SIGINT) or the
 * next start (SIGKILL) says what happened.
 */
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import process from "node:process";
import { runBin, startBin, timeToWrite, waitFor } from "../helpers.ts";
import { dbDir, startMariaDb } from "../db_servers.ts";
import { figure } from "../proof.ts";
import { runFixture } from "../run_fixture.ts";
import { assertCleanAfterFault } from "./fault_helpers.ts";

const PHASES = ["quiesce", "frozen", "snapshot", "thaw", "resume"] as const;
const SIGNALS = ["SIGKILL", "SIGTERM", "SIGINT"] as const;

Deno.test({
  name: "faults: a signal to the agent in each phase leaves nothing frozen, locked or running",
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async (t) => {
    const db = dbDir();
    const server = await startMariaDb(db.dir);
    server.sql("CREATE DATABASE app; CREATE TABLE app.t (id INT PRIMARY KEY)");
    let row = 0;
    try {
      for (const phase of PHASES) {
        for (const signal of SIGNALS) {
          await t.step(`${signal} while ${phase}`, async () => {
            const f = runFixture({ sizeMiB: 32 });
            try {
              const post = f.script("post.sh", `touch "${f.path("post.ran")}"`);
              const pre = f.script("pre.sh", "echo quiesced");
              const snap = phase === "snapshot"
                ? f.script("slow-snap.sh", `touch "${f.path("snapping")}"; exec sleep 300`)
                : f.script("snap.sh", "true");
              const mounts = [f.mp, server.fs.mountPoint];
              const config = f.config({
                preScriptLocation: pre,
                postScriptLocation: post,
                snapshot: { command: [snap] },
                freeze: { mounts, maxFrozenSeconds: 60 },
                plugins: [{ type: "mysql", name: "shop", socket: server.socket }],
              });
              const env: Record<string, string> = phase === "snapshot"
                ? {}
                : { VMSNAP_PAUSE_AT: phase, VMSNAP_PAUSE_MS: "30000" };
              const run = startBin(["run", "--json", "--config", config], { env });
              if (phase === "snapshot") {
                await waitFor("the snapshot", () => f.exists("snapping"), 20_000);
              } else {await waitFor(`the pause at ${phase}`, () =>
                  run.stderr().includes(`paused at ${phase}`), 20_000);}
              const runId = JSON.parse(readFileSync(join(f.dir, "state", "run.lock"), "utf8"))
                .runId as string;
              const frozenNow = phase === "frozen" || phase === "snapshot" || phase === "thaw";
              if (frozenNow) {
                assert.equal(
                  await timeToWrite(f.mp, 200),
                  Infinity,
                  "frozen at the moment of the signal",
                );
              }

              const signalledAt = performance.now();
              process.kill(run.child.pid!, signal);
              if (frozenNow) {
                const ms = await timeToWrite(f.mp, 5000);
                figure(
                  `${signal} while ${phase}`,
                  "a blocked writer resumed after the signal",
                  performance.now() - signalledAt,
                );
                assert.ok(ms !== Infinity);
              }
              const ran = await run.done;

              if (signal === "SIGKILL") {
                // The next start says what happened, and undoes what is left.
                const recovered = await runBin(["recover", "--json", "--config", config]);
                const report = JSON.parse(recovered.stdout);
                assert.equal(recovered.code, 0, recovered.stdout);
                assert.equal(report.deadRun?.runId, runId);
                if (frozenNow) {
                  assert.equal(report.guardReports[0]?.reason, "agent-died", recovered.stdout);
                }
                if (phase === "snapshot") {
                  assert.ok(
                    report.killed.some((k: { command: string }) => k.command.includes("sleep 300")),
                  );
                }
              } else {
                const result = JSON.parse(ran.stdout.trim().split("\n").at(-1)!);
                assert.ok(
                  result.errors.some((e: { code: string; message: string }) =>
                    e.code === "Interrupted" && e.message.includes(signal)
                  ),
                );
                const taken = phase === "thaw" || phase === "resume";
                assert.equal(result.snapshotTaken, taken);
                assert.equal(ran.code, taken ? 0 : 2, ran.stdout);
                // Whatever was quiesced was resumed.
                assert.equal(f.exists("post.ran"), phase !== "quiesce");
              }
              await assertCleanAfterFault({
                mounts,
                stateDir: join(f.dir, "state"),
                runId,
                db: { socket: server.socket, sql: `INSERT INTO app.t VALUES (${++row})` },
              });
            } finally {
              f.cleanup();
            }
          });
        }
      }
    } finally {
      await server.stop();
      db.cleanup();
    }
  },
});
