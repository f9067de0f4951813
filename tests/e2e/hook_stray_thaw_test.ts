/**
 * A thaw with no freeze before it (qemu-ga `-F` runs the thaw hook on every
 * guest-fsfreeze-thaw; libvirt sends one on its error paths): the hook says
 * NoHolder, undoes what a dead run left that is dangerous (its processes, its
 * frozen mounts), and keeps the report of what it found, so that the next
 * `recover` (or `run`) still shows why that run died.
 */
import assert from "node:assert/strict";
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import process from "node:process";
import { runBin, startBin, timeToWrite, waitFor } from "../helpers.ts";
import { type RunFixture, runFixture } from "../run_fixture.ts";

/** Gone, reaped: a SIGKILLed process's /proc entry disappears once its parent (or init) reaps it. */
const gone = (pid: number) => !existsSync(`/proc/${pid}`);

/** A run stopped in its snapshot command (a shell that prints its pid, then sleeps). */
async function runInSnapshot(f: RunFixture) {
  const slow = f.script("slow-snap.sh", `echo $$ > "${f.path("snapping")}"; exec sleep 300`);
  const config = f.config({ snapshot: { command: [slow] } });
  const run = startBin(["run", "--json", "--config", config]);
  await waitFor("the snapshot", () => f.exists("snapping") && f.read("snapping").trim() !== "");
  return { config, agent: run.child.pid!, snapPid: Number(f.read("snapping").trim()) };
}

Deno.test("a stray thaw hook with no holder: NoHolder, the dead run's processes killed, its report kept for recover", async () => {
  const f = runFixture();
  try {
    const state = join(f.dir, "state");
    // A run whose agent is SIGKILLed while frozen: the guard thaws and leaves its report;
    // run.lock stays with the dead pid; the snapshot command still runs.
    const { config, agent, snapPid } = await runInSnapshot(f);
    process.kill(agent, "SIGKILL");
    await waitFor(
      "the guard's report",
      () => readdirSync(state).some((n) => n.startsWith("guard-")),
    );
    const runId = JSON.parse(readFileSync(join(state, "run.lock"), "utf8")).runId;
    assert.ok(await timeToWrite(f.mp, 3000) < 3000, "the guard thawed");

    const thaw = await runBin(["hook", "thaw", "--for", "qemu-ga", "--config", config]);
    assert.equal(thaw.code, 2, thaw.stderr);
    assert.match(thaw.stderr, /\[NoHolder\]/);
    assert.match(thaw.stderr, /recovered: killed pid/);
    await waitFor("the dead run's snapshot command killed", () => gone(snapPid), 5000);
    assert.ok(!existsSync(join(state, "run.lock")), "the dead run's lock released");
    const kept = readdirSync(state).filter((n) => n.startsWith("recovered-"));
    assert.equal(kept.length, 1, readdirSync(state).join(" "));
    const check = await runBin(["check", "--json", "--config", config]);
    assert.match(check.stdout, /vmsnap hook thaw \(qemu-ga\) undid what a dead run left/);

    // The next recover shows what the stray thaw found, and who undid it.
    const recover = await runBin(["recover", "--json", "--config", config]);
    assert.equal(recover.code, 0, recover.stderr);
    const shown = JSON.parse(recover.stdout);
    assert.equal(shown.earlier?.length, 1, recover.stdout);
    const earlier = shown.earlier[0];
    assert.match(earlier.by, /^vmsnap hook thaw \(qemu-ga\)$/);
    assert.equal(earlier.recovery.deadRun.runId, runId);
    assert.equal(earlier.recovery.guardReports[0].reason, "agent-died");
    assert.ok(earlier.recovery.killed.some((k: { pid: number }) => k.pid === snapPid));
    const text = await runBin(["recover", "--config", config]);
    assert.match(text.stdout, /nothing to recover/, "shown once, then removed");
  } finally {
    f.cleanup();
  }
});

Deno.test("a stray thaw hook after a run whose agent and guard died: thaws the mount, keeps the report for the next run", async () => {
  const f = runFixture();
  try {
    const state = join(f.dir, "state");
    const { config, agent, snapPid } = await runInSnapshot(f);
    const guard = readFileSync(`/proc/${agent}/task/${agent}/children`, "utf8").trim().split(" ")
      .map(Number).find((pid) => readFileSync(`/proc/${pid}/cmdline`, "utf8").includes("__guard"));
    assert.ok(guard, "the guard");
    process.kill(guard, "SIGKILL");
    process.kill(agent, "SIGKILL");
    await waitFor("both gone", () => gone(agent) && gone(guard), 5000);
    assert.equal(await timeToWrite(f.mp, 300), Infinity, "left frozen");
    const runId = JSON.parse(readFileSync(join(state, "frozen.json"), "utf8")).runId;

    const thaw = await runBin(["hook", "thaw", "--for", "qemu-ga", "--config", config]);
    assert.equal(thaw.code, 2, thaw.stderr);
    assert.match(thaw.stderr, /\[NoHolder\]/);
    await waitFor("its snapshot command killed", () => gone(snapPid), 5000);
    assert.ok(await timeToWrite(f.mp, 3000) < 3000, "the stray thaw thawed the dead run's mount");
    assert.ok(!existsSync(join(state, "frozen.json")), "acted on once: never thawed again");

    // The next run says what happened to the dead one, in its result (and so in status).
    const next = await runBin(["run", "--json", "--config", f.config()]);
    const result = JSON.parse(next.stdout.trim().split("\n").at(-1)!);
    const earlier = result.recovered?.earlier?.[0];
    assert.ok(earlier, next.stdout);
    assert.equal(earlier.recovery.thawed[0].runId, runId);
    assert.equal(earlier.recovery.thawed[0].wasFrozen, true);
    assert.ok(
      result.warnings.some((w: { message: string }) =>
        /thawed .* left frozen by run .*done by vmsnap hook thaw \(qemu-ga\)/.test(w.message)
      ),
      next.stdout,
    );
  } finally {
    f.cleanup();
  }
});
