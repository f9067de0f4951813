import assert from "node:assert/strict";
import { execFileSync, spawnSync } from "node:child_process";
import {
  lstatSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  symlinkSync,
  writeFileSync,
} from "node:fs";
import { join } from "node:path";
import process from "node:process";
import {
  achievedConsistency,
  exitCodeFor,
  requestedConsistency,
} from "../../src/run/consistency.ts";
import { VmsnapError } from "../../src/errors.ts";
import { EventLog } from "../../src/state/event_log.ts";
import { readLastResult, writeLastResult } from "../../src/state/last_result.ts";
import { acquireRunLock } from "../../src/state/lock.ts";
import { addSecret } from "../../src/secrets.ts";
import { secureDir } from "../helpers.ts";

Deno.test("consistency: what was asked, what was achieved, the exit code", () => {
  const base = {
    snapshotTaken: true,
    plugins: 1,
    pluginsHeld: true,
    freezeRequested: true,
    freezeHeld: true,
  };
  const cases: [Partial<typeof base>, string, string, number][] = [
    [{}, "application", "application", 0],
    [{ pluginsHeld: false }, "application", "filesystem", 1],
    [{ freezeHeld: false }, "application", "crash", 1],
    [{ snapshotTaken: false }, "application", "none", 2],
    [{ plugins: 0, pluginsHeld: false }, "filesystem", "filesystem", 0],
    [{ plugins: 0, pluginsHeld: false, freezeHeld: false }, "filesystem", "crash", 1],
    [{ freezeRequested: false, freezeHeld: false }, "application", "application", 0],
    [
      { plugins: 0, pluginsHeld: false, freezeRequested: false, freezeHeld: false },
      "crash",
      "crash",
      0,
    ],
  ];
  for (const [change, requested, achieved, exit] of cases) {
    const facts = { ...base, ...change };
    assert.equal(requestedConsistency(facts), requested, JSON.stringify(change));
    assert.equal(achievedConsistency(facts), achieved, JSON.stringify(change));
    assert.equal(
      exitCodeFor(requestedConsistency(facts), achievedConsistency(facts)),
      exit,
      JSON.stringify(change),
    );
  }
});

Deno.test("the log: JSON lines, 0600 in a 0700 directory, held while frozen, secrets scrubbed", () => {
  const { dir, cleanup } = secureDir();
  try {
    const file = join(dir, "log", "vmsnap.jsonl");
    addSecret("s3cr3t-password");
    const log = new EventLog({ runId: "r1", file, level: "info" });
    log.record("info", "one", { n: 1, dsn: "mysql://root:s3cr3t-password@localhost" });
    log.record("debug", "hidden", {});
    log.hold();
    log.record("info", "two", { n: 2 });
    const before = readFileSync(file, "utf8");
    assert.equal(before.trim().split("\n").length, 1, "nothing written while held");
    log.release();
    log.close();
    const lines = readFileSync(file, "utf8").trim().split("\n").map((l) => JSON.parse(l));
    assert.deepEqual(lines.map((l) => [l.event, l.runId, l.level]), [["one", "r1", "info"], [
      "two",
      "r1",
      "info",
    ]]);
    assert.match(lines[0]["@timestamp"], /^\d{4}-\d\d-\d\dT/);
    assert.equal(lines[0].dsn, "mysql://root:***@localhost");
    assert.equal(lstatSync(file).mode & 0o777, 0o600);
    assert.equal(lstatSync(join(dir, "log")).mode & 0o777, 0o700);
    assert.deepEqual([log.stats.written, log.stats.lost], [2, 0]);
  } finally {
    cleanup();
  }
});

Deno.test("the log rotates by size", () => {
  const { dir, cleanup } = secureDir();
  try {
    const file = join(dir, "v.jsonl");
    const log = new EventLog({ runId: "r", file, level: "info", maxBytes: 2000, keep: 2 });
    for (let i = 0; i < 100; i++) log.record("info", "e", { i, pad: "x".repeat(50) });
    log.close();
    for (const f of [file, `${file}.1`, `${file}.2`]) assert.ok(lstatSync(f).size <= 2000, f);
    // Rotated when full, not at every record once the limit was first reached.
    for (const f of [`${file}.1`, `${file}.2`]) assert.ok(lstatSync(f).size > 1800, f);
    assert.throws(() => lstatSync(`${file}.3`));
    const last = readFileSync(file, "utf8").trim().split("\n").map((l) => JSON.parse(l).i);
    assert.equal(last.at(-1), 99);
  } finally {
    cleanup();
  }
});

Deno.test("a full disk loses log records, counts them, never throws", () => {
  const { dir, cleanup } = secureDir();
  const mnt = join(dir, "tiny");
  mkdirSync(mnt, { mode: 0o700 });
  execFileSync("mount", ["-t", "tmpfs", "-o", "size=64k,mode=0700", "tmpfs", mnt]);
  try {
    const log = new EventLog({ runId: "r", file: join(mnt, "v.jsonl"), level: "info" });
    for (let i = 0; i < 2000; i++) log.record("info", "e", { i, pad: "x".repeat(100) });
    log.close();
    assert.ok(log.stats.written > 0);
    assert.ok(log.stats.lost > 0);
    assert.match(log.stats.error!, /ENOSPC|no space/i);
  } finally {
    spawnSync("umount", [mnt]);
    cleanup();
  }
});

Deno.test("the log refuses to follow a symlink planted at its path", () => {
  const { dir, cleanup } = secureDir();
  try {
    mkdirSync(join(dir, "log"), { mode: 0o700 });
    writeFileSync(join(dir, "target"), "");
    symlinkSync(join(dir, "target"), join(dir, "log", "v.jsonl"));
    const log = new EventLog({ runId: "r", file: join(dir, "log", "v.jsonl"), level: "info" });
    log.record("info", "e", {});
    log.close();
    assert.equal(log.stats.lost, 1);
    assert.equal(readFileSync(join(dir, "target"), "utf8"), "");
  } finally {
    cleanup();
  }
});

Deno.test("the run lock: one holder; a live holder refuses, a dead one is taken over", () => {
  const { dir, cleanup } = secureDir();
  try {
    const lock = acquireRunLock(dir, "first");
    assert.throws(
      () => acquireRunLock(dir, "second"),
      (e) => e instanceof VmsnapError && e.code === "AnotherRunInProgress",
    );
    lock.release();
    const again = acquireRunLock(dir, "third");
    again.release();
    writeFileSync(
      join(dir, "run.lock"),
      JSON.stringify({ pid: 999999, started: "1", runId: "dead", since: "x" }),
    );
    const taken = acquireRunLock(dir, "fourth");
    assert.equal(taken.tookOverFrom?.runId, "dead");
    // A pid reused by another process does not keep a stale lock alive.
    taken.release();
    writeFileSync(
      join(dir, "run.lock"),
      JSON.stringify({ pid: process.pid, started: "not-my-start", runId: "reused", since: "x" }),
    );
    const reused = acquireRunLock(dir, "fifth");
    assert.equal(reused.tookOverFrom?.runId, "reused");
    reused.release();
  } finally {
    cleanup();
  }
});

Deno.test("the last result: none before a run, then replaced whole, 0600, nothing left aside", () => {
  const { dir, cleanup } = secureDir();
  try {
    assert.equal(readLastResult(dir), undefined);
    writeLastResult(dir, { event: "result", runId: "a" });
    writeLastResult(dir, { event: "result", runId: "b" });
    assert.deepEqual(readLastResult(dir), { event: "result", runId: "b" });
    assert.deepEqual(readdirSync(dir), ["last-result.json"]);
    assert.equal(lstatSync(join(dir, "last-result.json")).mode & 0o777, 0o600);
    assert.match(writeLastResult(join(dir, "missing"), { runId: "c" }) ?? "", /ENOENT/);
    writeFileSync(join(dir, "last-result.json"), "{half");
    assert.equal(readLastResult(dir), undefined);
  } finally {
    cleanup();
  }
});
