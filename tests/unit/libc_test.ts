import assert from "node:assert/strict";
import { closeSync, mkdtempSync, openSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { bindLibc, cString, LIBC_NAMES, LIBC_SYMBOLS } from "../../src/sys/libc.ts";
import { loadFreezeLibc } from "../../src/sys/freeze_libc.ts";
import { statusFlagsSetter, waitingBytesCounter } from "../../src/sys/descriptors.ts";

const ENOENT = 2;
const EBADF = 9;

Deno.test("libc: glibc's name first (under musl every libc.* name is musl itself)", () => {
  assert.equal(LIBC_NAMES[0], "libc.so.6");
  assert.ok(LIBC_NAMES.includes("libc.musl-x86_64.so.1"));
  assert.ok(LIBC_NAMES.includes("libc.musl-aarch64.so.1"));
});

Deno.test("libc: a set is bound once per thread; a failed call returns -errno", () => {
  const lock = bindLibc(LIBC_SYMBOLS.lock);
  assert.equal(bindLibc(LIBC_SYMBOLS.lock), lock, "the cache returns the same binding");
  assert.equal(lock.open(cString("/nonexistent/vmsnap"), 0, 0), -ENOENT);
  assert.equal(lock.flock(-1, 2), -EBADF);
  const dir = mkdtempSync(join(tmpdir(), "vmsnap-libc-"));
  try {
    const fd = lock.open(cString(join(dir, "f")), 0o100 | 0o2, 0o600); // O_CREAT | O_RDWR
    assert.ok(fd > 2, `a descriptor, got ${fd}`);
    assert.equal(lock.flock(fd, 2 | 4), 0); // LOCK_EX | LOCK_NB
    assert.equal(lock.close(fd), 0);
  } finally {
    rmSync(dir, { recursive: true });
  }
});

Deno.test("libc: the freeze set opens, syncs and closes; errors are -errno", async () => {
  const libc = await loadFreezeLibc();
  assert.equal(libc.open("/nonexistent/vmsnap"), -ENOENT);
  const fd = libc.open(tmpdir());
  assert.ok(fd > 2);
  try {
    assert.equal(libc.syncfs(fd), 0);
    assert.equal(libc.syncfs(-1), -EBADF);
  } finally {
    libc.close(fd);
  }
});

Deno.test("libc: the descriptor set reads FIONREAD and sets status flags", async () => {
  const counter = await waitingBytesCounter();
  const setFlags = await statusFlagsSetter();
  assert.ok(counter && setFlags, "FFI loads here");
  const fd = openSync("/dev/null", "r");
  try {
    assert.equal(setFlags(fd, 0o4000), true); // O_NONBLOCK
    assert.equal(setFlags(-1, 0), false);
    assert.equal(counter(-1), undefined);
  } finally {
    closeSync(fd);
  }
});
