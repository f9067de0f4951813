/**
 * Concurrent freezing through the compiled binary: independent filesystems
 * are synced and frozen together by the freeze pool's threads (one level),
 * a filesystem mounted inside another keeps its order (a later level), a
 * failure in a level thaws everything the run froze and leaves another
 * tool's freeze alone, and the guard thaws every mount of a killed agent.
 * Only loop filesystems these tests make are frozen, with explicit lists.
 */
import assert from "node:assert/strict";
import { execFileSync, spawnSync } from "node:child_process";
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import process from "node:process";
import { codes, resultOf, runBin, startBin, timeToWrite, waitFor } from "../helpers.ts";
import { type LoopFs, makeLoopFs } from "../loop.ts";
import { type RunFixture, runFixture } from "../run_fixture.ts";
import type { RunResult } from "../../src/protocol.ts";

interface LogRecord {
  event: string;
  mount?: string;
  thread?: number;
  ok?: boolean;
}

/** The log's records of one event, in order. */
function logged(f: RunFixture, event: string): LogRecord[] {
  return readFileSync(join(f.dir, "log", "vmsnap.jsonl"), "utf8").trim().split("\n")
    .map((line) => JSON.parse(line) as LogRecord).filter((r) => r.event === event);
}

/** A fixture with `extra` more loop filesystems beside its own. */
function withSiblings(extra: string[]): { f: RunFixture; others: LoopFs[]; cleanup(): void } {
  const f = runFixture({ sizeMiB: 32 });
  const others: LoopFs[] = [];
  try {
    for (const name of extra) others.push(makeLoopFs({ dir: f.dir, name, sizeMiB: 32 }));
  } catch (error) {
    for (const fs of others.reverse()) fs.cleanup();
    f.cleanup();
    throw error;
  }
  return {
    f,
    others,
    cleanup() {
      for (const fs of [...others].reverse()) fs.cleanup();
      f.cleanup();
    },
  };
}

/**
 * A loop filesystem mounted inside `outer` whose image lies outside it (in
 * `dir`): nested by its mount point only, so freezing `outer` first (a list
 * in the wrong order) cannot block the inner freeze in the kernel.
 */
function mountInside(outer: string, dir: string): LoopFs {
  const image = join(dir, "inner.img");
  execFileSync("truncate", ["-s", "16M", image]);
  execFileSync("mkfs.ext4", ["-q", "-F", image], { stdio: "pipe" });
  return makeLoopFs({ dir: outer, name: "inner", image });
}

/** True when a write to the mount from another process blocks (it is frozen). */
async function frozen(mountPoint: string): Promise<boolean> {
  return (await timeToWrite(mountPoint, 300)) === Infinity;
}

Deno.test("independent filesystems: one level, synced and frozen by one thread each, all thawed", async () => {
  const { f, others, cleanup } = withSiblings(["b", "c", "d"]);
  try {
    const mounts = [f.mp, ...others.map((o) => o.mountPoint)];
    const run = startBin(["run", "--external", "--config", f.config({ freeze: { mounts } })]);
    await waitFor("the frozen line", () => run.stdout().includes("\n"));
    assert.deepEqual(JSON.parse(run.stdout().split("\n")[0]).mounts, mounts);
    for (const mp of mounts) assert.ok(await frozen(mp), `${mp} is frozen during the snapshot`);
    run.child.stdin.write("snapshot-done\n");
    const ran = await run.done;
    assert.equal(ran.code, 0, ran.stderr);
    for (const mp of mounts) assert.ok((await timeToWrite(mp)) < 1000, `${mp} thawed`);

    // The run's record: every mount frozen in level 0, thawed.
    // At log level debug, the log has the syncfs records too.
    const log = { file: join(f.dir, "log", "vmsnap.jsonl"), level: "debug" };
    const result = resultOf<RunResult>(
      (await runBin(["run", "--json", "--config", f.config({ freeze: { mounts }, log })])).stdout,
    );
    assert.deepEqual(result.errors, []);
    assert.deepEqual(
      result.freeze.mounts.map((m) => [m.mountPoint, m.frozen, m.level, m.thawed]),
      mounts.map((mp) => [mp, true, 0, true]),
    );
    // Each FIFREEZE (and each syncfs) of the level was issued by its own thread: the run's
    // thread (0) and three workers of the pool.
    const freezes = logged(f, "freeze").slice(-4);
    assert.deepEqual(freezes.map((r) => r.mount), mounts);
    assert.deepEqual(freezes.map((r) => r.thread), [0, 1, 2, 3]);
    assert.deepEqual(logged(f, "syncfs").slice(-4).map((r) => r.thread), [0, 1, 2, 3]);
  } finally {
    cleanup();
  }
});

Deno.test("a filesystem mounted inside another keeps its order: a later level, thawed first", async () => {
  const { f, others, cleanup } = withSiblings(["side"]);
  let inner: LoopFs | undefined;
  try {
    inner = mountInside(f.mp, f.dir);
    const side = others[0].mountPoint;
    // Children first, as "auto" plans it: inner and side together, then the outer one.
    let ran = await runBin([
      "run",
      "--json",
      "--config",
      f.config({ freeze: { mounts: [inner.mountPoint, side, f.mp] } }),
    ]);
    let result = resultOf<RunResult>(ran.stdout);
    assert.equal(ran.code, 0, ran.stdout);
    assert.deepEqual(
      result.freeze.mounts.map((m) => [m.mountPoint, m.level, m.frozen, m.thawed]),
      [[inner.mountPoint, 0, true, true], [side, 0, true, true], [f.mp, 1, true, true]],
    );
    // Thawed in reverse: the outer filesystem (the last level) first.
    assert.deepEqual(logged(f, "thaw").slice(-3).map((r) => r.mount)[0], f.mp);

    // A list in the wrong order (warned): the order given is still kept, one level each.
    ran = await runBin([
      "run",
      "--json",
      "--config",
      f.config({ freeze: { mounts: [f.mp, inner.mountPoint] } }),
    ]);
    result = resultOf<RunResult>(ran.stdout);
    assert.ok(result.warnings.some((w) => w.code === "FreezeOrder"), ran.stdout);
    assert.deepEqual(
      result.freeze.mounts.map((m) => [m.mountPoint, m.level]),
      [[f.mp, 0], [inner.mountPoint, 1]],
    );
    for (const mp of [f.mp, inner.mountPoint, side]) {
      assert.ok((await timeToWrite(mp)) < 1000, `${mp} thawed`);
    }
  } finally {
    inner?.cleanup();
    cleanup();
  }
});

Deno.test("EBUSY in the middle of a concurrent level: FreezeFailed for that mount, the rest thawed, the other tool's freeze kept", async () => {
  const { f, others, cleanup } = withSiblings(["busy", "c"]);
  let inner: LoopFs | undefined;
  const [busy, c] = others.map((o) => o.mountPoint);
  try {
    inner = mountInside(f.mp, f.dir);
    // Someone else froze `busy`: vmsnap's FIFREEZE of it gets EBUSY.
    assert.equal(spawnSync("fsfreeze", ["--freeze", busy]).status, 0);
    // Levels: [inner, busy, c], then [the fixture's fs, which holds inner].
    const mounts = [inner.mountPoint, busy, c, f.mp];
    const ran = await runBin(["run", "--json", "--config", f.config({ freeze: { mounts } })]);
    const result = resultOf<RunResult>(ran.stdout);
    assert.equal(ran.code, 1, ran.stdout);
    assert.deepEqual(codes(result), ["FreezeFailed"]);
    assert.match(result.errors[0].message, new RegExp(`could not freeze ${busy} .*EBUSY`));
    assert.deepEqual([result.consistency, result.snapshotTaken], ["crash", true]);
    // The level went out together (one thread each): the two others froze and were thawed
    // again; the next level never started.
    assert.deepEqual(
      result.freeze.mounts.map((m) => [m.mountPoint, m.frozen, m.thawed, m.level]),
      [[inner.mountPoint, true, true, 0], [busy, false, undefined, 0], [c, true, true, 0]],
    );
    assert.match(result.freeze.mounts[1].error ?? "", /EBUSY/);
    for (const mp of [inner.mountPoint, c, f.mp]) {
      assert.ok((await timeToWrite(mp)) < 1000, `${mp} is writable after the run`);
    }
    // The other tool's freeze is still there: vmsnap did not thaw it.
    assert.ok(await frozen(busy), `${busy} is still frozen by the other tool`);
    assert.equal(spawnSync("fsfreeze", ["--unfreeze", busy]).status, 0);
  } finally {
    spawnSync("fsfreeze", ["--unfreeze", busy], { stdio: "ignore" });
    inner?.cleanup();
    cleanup();
  }
});

Deno.test("the agent SIGKILLed with several filesystems frozen: the guard thaws every one", async () => {
  const { f, others, cleanup } = withSiblings(["b", "c"]);
  try {
    const mounts = [f.mp, ...others.map((o) => o.mountPoint)];
    const slow = f.script("slow-snap.sh", `touch "${f.path("snapping")}"; exec sleep 300`);
    const run = startBin([
      "run",
      "--json",
      "--config",
      f.config({ freeze: { mounts }, snapshot: { command: [slow] } }),
    ]);
    await waitFor("the snapshot", () => f.exists("snapping"));
    for (const mp of mounts) assert.ok(await frozen(mp), `${mp} frozen before the kill`);
    process.kill(run.child.pid!, "SIGKILL");
    await run.done;
    for (const mp of mounts) {
      assert.ok((await timeToWrite(mp, 3000)) < 3000, `${mp} thawed by the guard`);
    }
    spawnSync("pkill", ["-f", slow]);
    await waitFor(
      "the guard's report",
      () => readdirSync(join(f.dir, "state")).some((n) => n.startsWith("guard-")),
    );
    const report = JSON.parse(
      readFileSync(
        join(
          f.dir,
          "state",
          readdirSync(join(f.dir, "state")).find((n) => n.startsWith("guard-"))!,
        ),
        "utf8",
      ),
    ) as { reason: string; thawed: { mount: string; wasFrozen: boolean }[] };
    assert.equal(report.reason, "agent-died");
    assert.deepEqual(
      report.thawed.map((t) => [t.mount, t.wasFrozen]),
      mounts.map((mp) => [mp, true]),
    );
  } finally {
    cleanup();
  }
});
