import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import {
  createFreezer,
  type FreezeHandle,
  type FreezePool,
  runOnHandles,
} from "../../src/freeze/freezer.ts";
import { secureDir, timeToWrite } from "../helpers.ts";
import { type LoopFs, makeLoopFs } from "../loop.ts";

/** `count` loop filesystems of this test, opened; everything undone by `cleanup`. */
async function opened(count: number) {
  const { dir, cleanup } = secureDir();
  const freezer = await createFreezer("ioctl");
  const filesystems: LoopFs[] = [];
  const handles: FreezeHandle[] = [];
  try {
    for (let i = 0; i < count; i++) {
      const fs = makeLoopFs({ dir, name: `fs${i}`, sizeMiB: 16 });
      filesystems.push(fs);
      handles.push(freezer.open(fs.mountPoint).handle!);
    }
  } catch (error) {
    for (const fs of filesystems) fs.cleanup();
    cleanup();
    throw error;
  }
  return {
    freezer,
    filesystems,
    handles,
    /** syncfs or FIFREEZE on every filesystem of the test. */
    on: (pool: FreezePool, op: "sync" | "freeze", stopOnFailure: boolean) =>
      runOnHandles({ freezer, pool, op, handles, stopOnFailure }),
    cleanup() {
      for (const handle of handles) freezer.close(handle);
      for (const fs of filesystems) fs.cleanup();
      cleanup();
    },
  };
}

Deno.test("the pool syncs and freezes several filesystems, one thread each, through the run's descriptors", async () => {
  const t = await opened(3);
  const pool = t.freezer.startPool!({ workers: 2, capacity: 3 });
  try {
    assert.equal(await pool.ready(5000), true);
    const synced = t.on(pool, "sync", false);
    assert.deepEqual(synced.map((op) => [op?.ok, op?.thread]), [[true, 0], [true, 1], [true, 2]]);
    const frozen = t.on(pool, "freeze", true);
    assert.deepEqual(frozen.map((op) => [op?.ok, op?.thread]), [[true, 0], [true, 1], [true, 2]]);
    for (const fs of t.filesystems) assert.equal(await timeToWrite(fs.mountPoint, 200), Infinity);
    for (const handle of t.handles) assert.ok(t.freezer.thawHandle(handle).ok);
    for (const fs of t.filesystems) assert.ok((await timeToWrite(fs.mountPoint)) < 1000);
  } finally {
    pool.close();
    t.cleanup();
  }
});

Deno.test("the pool: EBUSY is reported with its errno; a thread's later jobs stop, the level's first calls all go out", async () => {
  const t = await opened(4);
  const pool = t.freezer.startPool!({ workers: 1, capacity: 4 });
  try {
    assert.equal(await pool.ready(5000), true);
    // Frozen by someone else: job 0 (this thread) fails; job 1 (the worker's first) still goes.
    assert.equal(spawnSync("fsfreeze", ["--freeze", t.filesystems[0].mountPoint]).status, 0);
    const ops = t.on(pool, "freeze", true);
    assert.deepEqual([ops[0]?.ok, ops[0]?.errno, ops[0]?.thread], [false, 16, 0]);
    assert.match(ops[0]?.error ?? "", /EBUSY/);
    assert.deepEqual([ops[1]?.ok, ops[1]?.thread], [true, 1]);
    assert.equal(ops[2], undefined, "this thread's next job was not started");
    for (const [i, op] of ops.entries()) if (op?.ok) t.freezer.thawHandle(t.handles[i]);
  } finally {
    pool.close();
    t.cleanup();
  }
});

Deno.test("a pool that was never confirmed ready is not used: one call after another on this thread", async () => {
  const t = await opened(2);
  const pool = t.freezer.startPool!({ workers: 1, capacity: 2 });
  try {
    const synced = t.on(pool, "sync", false);
    assert.deepEqual(synced.map((op) => [op?.ok, op?.thread]), [[true, 0], [true, 0]]);
  } finally {
    pool.close();
    t.cleanup();
  }
});
