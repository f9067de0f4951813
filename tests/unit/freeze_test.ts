import assert from "node:assert/strict";
import { createFreezer, ERRNO, thawAndConfirm } from "../../src/freeze/freezer.ts";
import { secureDir, timeToWrite } from "../helpers.ts";
import { makeLoopFs } from "../loop.ts";

for (const method of ["ioctl", "fsfreeze"] as const) {
  Deno.test(`freeze and thaw a loop filesystem (${method}): EBUSY when frozen twice, EINVAL when not frozen`, async () => {
    const { dir, cleanup } = secureDir();
    const fs = makeLoopFs({ dir, name: "fs", sizeMiB: 32 });
    try {
      const freezer = await createFreezer(method);
      assert.equal(freezer.method, method);
      assert.ok(freezer.freeze(fs.mountPoint).ok);
      const again = freezer.freeze(fs.mountPoint);
      assert.deepEqual([again.ok, again.errno], [false, ERRNO.EBUSY]);
      // Another process's write blocks while frozen.
      assert.equal(await timeToWrite(fs.mountPoint, 300), Infinity);
      const thawed = thawAndConfirm(freezer, fs.mountPoint);
      assert.deepEqual([thawed.confirmed, thawed.wasFrozen], [true, true]);
      assert.ok((await timeToWrite(fs.mountPoint)) < 1000);
      const notFrozen = freezer.thaw(fs.mountPoint);
      assert.deepEqual([notFrozen.ok, notFrozen.errno], [false, ERRNO.EINVAL]);
      assert.deepEqual(thawAndConfirm(freezer, fs.mountPoint).wasFrozen, false);
    } finally {
      fs.cleanup();
      cleanup();
    }
  });
}

Deno.test("freezing what cannot freeze names the errno", async () => {
  const freezer = await createFreezer("ioctl");
  const missing = freezer.freeze("/nonexistent-mount-point");
  assert.deepEqual([missing.ok, missing.errno], [false, ERRNO.ENOENT]);
  // /proc is not freezable; FITHAW on it is harmless and says EINVAL or EOPNOTSUPP.
  const proc = freezer.thaw("/proc");
  assert.equal(proc.ok, false);
  assert.ok(proc.errno === ERRNO.EINVAL || proc.errno === ERRNO.EOPNOTSUPP, String(proc.error));
});
