import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { existsSync, mkdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { createFreezer } from "../../src/freeze/freezer.ts";
import { type GuardReport, guardReportPath, startGuard } from "../../src/freeze/guard.ts";
import { selfCommand } from "../../src/sys/self.ts";
import { secureDir, timeToWrite, waitFor } from "../helpers.ts";
import { makeLoopFs } from "../loop.ts";

Deno.test("the guard thaws at the deadline and reports it; release then finds nothing frozen", async () => {
  const { dir, cleanup } = secureDir();
  const fs = makeLoopFs({ dir, name: "fs", sizeMiB: 32 });
  mkdirSync(join(dir, "state"), { mode: 0o700 });
  try {
    const freezer = await createFreezer();
    const guard = await startGuard({
      op: "arm",
      runId: "t1",
      mounts: [fs.mountPoint],
      maxFrozenMs: 300,
      stateDir: join(dir, "state"),
    });
    assert.ok(freezer.freeze(fs.mountPoint).ok);
    const started = performance.now();
    const wrote = await timeToWrite(fs.mountPoint, 3000);
    assert.ok(
      wrote < 1500,
      `a blocked writer resumed after ${Math.round(performance.now() - started)} ms`,
    );
    await waitFor("the expired event", () => guard.expired() !== undefined);
    const report = guard.expired()!;
    assert.equal(report.reason, "deadline");
    assert.deepEqual(report.thawed.map((t) => [t.mount, t.wasFrozen, t.confirmed]), [[
      fs.mountPoint,
      true,
      true,
    ]]);
    assert.ok(report.afterMs >= 300);
    // A freeze that completes late is thawed too while the guard is expired.
    assert.ok(freezer.freeze(fs.mountPoint).ok);
    assert.ok((await timeToWrite(fs.mountPoint, 2000)) < 1000);
    assert.deepEqual(await guard.release([fs.mountPoint]), []);
    assert.ok(
      !existsSync(guardReportPath(join(dir, "state"), "t1")),
      "the agent got the report; no file",
    );
  } finally {
    fs.cleanup();
    cleanup();
  }
});

Deno.test("the guard thaws at once when its agent's pipe closes, and leaves a report", async () => {
  const { dir, cleanup } = secureDir();
  const fs = makeLoopFs({ dir, name: "fs", sizeMiB: 32 });
  mkdirSync(join(dir, "state"), { mode: 0o700 });
  try {
    const freezer = await createFreezer();
    const [command, ...args] = selfCommand(["__guard"]);
    const guard = spawn(command, args, { stdio: ["pipe", "pipe", "inherit"], detached: true });
    let out = "";
    guard.stdout.on("data", (d) => (out += d));
    guard.stdin.write(
      JSON.stringify({
        op: "arm",
        runId: "t2",
        mounts: [fs.mountPoint],
        maxFrozenMs: 60_000,
        stateDir: join(dir, "state"),
      }) + "\n",
    );
    await waitFor("armed", () => out.includes('"armed"'));
    assert.ok(freezer.freeze(fs.mountPoint).ok);
    const closedAt = performance.now();
    guard.stdin.end(); // the agent "dies"
    const wrote = await timeToWrite(fs.mountPoint, 3000);
    assert.ok(
      wrote < 1000,
      `thawed ${Math.round(performance.now() - closedAt)} ms after the pipe closed`,
    );
    const reportFile = guardReportPath(join(dir, "state"), "t2");
    await waitFor("the report", () => existsSync(reportFile));
    const report = JSON.parse(readFileSync(reportFile, "utf8")) as GuardReport;
    assert.equal(report.reason, "agent-died");
    assert.equal(report.thawed[0].wasFrozen, true);
    await new Promise((resolve) => guard.on("exit", resolve));
  } finally {
    fs.cleanup();
    cleanup();
  }
});
