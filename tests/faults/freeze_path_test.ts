/**
 * The run's freeze path against mounts that change under it, on loop
 * filesystems the tests make (a parent loop fs holds the target's mount point,
 * so that whatever the path leads to after a change is still the test's own):
 *
 * - a target lazily unmounted during the pre-script, or mounted over after
 *   the plan: FreezeMountNotFound before anything is frozen;
 * - a target unmounted while frozen: thawed through the descriptor that froze it;
 * - a target someone else froze first (EBUSY): nobody thaws their freeze, not
 *   even the guard when the agent dies.
 */
import assert from "node:assert/strict";
import { execFileSync, spawnSync } from "node:child_process";
import { join } from "node:path";
import process from "node:process";
import {
  put,
  putConfig,
  resultOf,
  runBin,
  secureDir,
  startBin,
  timeToWrite,
  waitFor,
} from "../helpers.ts";
import { type LoopFs, makeLoopFs } from "../loop.ts";
import type { RunResult } from "../../src/protocol.ts";

const options = { sanitizeResources: false, sanitizeOps: false };

interface Nest {
  dir: string;
  parent: LoopFs;
  target: LoopFs;
  script(name: string, body: string): string;
  config(keys?: Record<string, unknown>): string;
  cleanup(): void;
}

/** A loop fs (`target`) mounted on a directory of another (`parent`); only `target` is planned. */
function nest(): Nest {
  const { dir, cleanup } = secureDir("nest-");
  const parent = makeLoopFs({ dir, name: "parent" });
  const target = makeLoopFs({ dir, name: "target" });
  // Move the target's mount point under the parent: mount it again there.
  const mp = join(parent.mountPoint, "data");
  execFileSync("mkdir", ["-m", "700", mp]);
  execFileSync("umount", [target.mountPoint]);
  execFileSync("mount", [target.device, mp]);
  const moved: LoopFs = { ...target, mountPoint: mp };
  const script = (name: string, body: string) =>
    put(join(dir, name), `#!/bin/sh\n${body}\n`, 0o700);
  const snap = script("snap.sh", "exit 0");
  return {
    dir,
    parent,
    target: moved,
    script,
    config: (keys = {}) =>
      putConfig(dir, {
        freeze: { mounts: [mp] },
        snapshot: { command: [snap] },
        log: { file: join(dir, "log", "vmsnap.jsonl") },
        stateDir: join(dir, "state"),
        ...keys,
      }),
    cleanup() {
      try {
        for (const fs of [moved, parent]) {
          spawnSync("fsfreeze", ["--unfreeze", fs.mountPoint], { stdio: "ignore" });
        }
        spawnSync("umount", ["-l", mp], { stdio: "ignore" });
        target.cleanup();
        parent.cleanup();
      } finally {
        cleanup();
      }
    },
  };
}

/** True when `mountPoint` was frozen (and is thawed now): the test's own check, by fsfreeze. */
const wasFrozen = (mountPoint: string) =>
  spawnSync("fsfreeze", ["--unfreeze", mountPoint], { stdio: "ignore" }).status === 0;

Deno.test({
  ...options,
  name:
    "freeze path: the target lazily unmounted by the pre-script: FreezeMountNotFound, the filesystem under it is not frozen",
  fn: async () => {
    const n = nest();
    try {
      const pre = n.script("pre.sh", `umount -l "${n.target.mountPoint}"`);
      const ran = await runBin(["run", "--json", "--config", n.config({ preScriptLocation: pre })]);
      const result = resultOf<RunResult>(ran.stdout);
      assert.ok(
        result.errors.some((e) => e.code === "FreezeMountNotFound"),
        JSON.stringify(result.errors),
      );
      assert.deepEqual(result.freeze.mounts, [], "nothing was frozen");
      assert.equal(result.consistency, "crash");
      assert.equal(wasFrozen(n.parent.mountPoint), false, "the parent was never frozen");
    } finally {
      n.cleanup();
    }
  },
});

Deno.test({
  ...options,
  name:
    "freeze path: the target mounted over after the plan: FreezeMountNotFound, the filesystem on top is not frozen",
  fn: async () => {
    const n = nest();
    const other = makeLoopFs({ dir: n.dir, name: "other" });
    try {
      const pre = n.script("pre.sh", `mount --bind "${other.mountPoint}" "${n.target.mountPoint}"`);
      const post = n.script("post.sh", `umount "${n.target.mountPoint}"`);
      const ran = await runBin([
        "run",
        "--json",
        "--config",
        n.config({ preScriptLocation: pre, postScriptLocation: post }),
      ]);
      const result = resultOf<RunResult>(ran.stdout);
      const error = result.errors.find((e) => e.code === "FreezeMountNotFound");
      assert.ok(error, JSON.stringify(result.errors));
      assert.match(error.message, /no longer the filesystem vmsnap planned/);
      assert.deepEqual(result.freeze.mounts, []);
      assert.equal(wasFrozen(other.mountPoint), false, "the over-mounted filesystem never froze");
    } finally {
      spawnSync("umount", [n.target.mountPoint], { stdio: "ignore" });
      other.cleanup();
      n.cleanup();
    }
  },
});

Deno.test({
  ...options,
  name: "freeze path: the target unmounted while frozen is thawed through its descriptor, for real",
  fn: async () => {
    const n = nest();
    try {
      const run = startBin(["run", "--json", "--config", n.config()], {
        env: { VMSNAP_PAUSE_AT: "frozen", VMSNAP_PAUSE_MS: "1500" },
      });
      await waitFor("the pause", () => run.stderr().includes("paused at frozen"), 20_000);
      execFileSync("umount", ["-l", n.target.mountPoint]);
      const ran = await run.done;
      const result = resultOf<RunResult>(ran.stdout);
      assert.deepEqual(
        result.freeze.mounts.map((m) => [m.frozen, m.thawed]),
        [[true, true]],
        JSON.stringify(result.errors),
      );
      // Mounted again, the same superblock: a write goes through (it would block if still frozen).
      execFileSync("mount", [n.target.device, n.target.mountPoint]);
      assert.ok(await timeToWrite(n.target.mountPoint, 3000) < 3000, "really thawed");
    } finally {
      n.cleanup();
    }
  },
});

Deno.test({
  ...options,
  name:
    "freeze path: someone else's freeze (EBUSY) stays theirs when agent and guard are both SIGKILLed: the next recovery leaves it",
  fn: async () => {
    const n = nest();
    try {
      execFileSync("fsfreeze", ["--freeze", n.target.mountPoint]);
      const slow = n.script("slow-snap.sh", `touch "${join(n.dir, "snapping")}"; exec sleep 30`);
      const config = n.config({ snapshot: { command: [slow] } });
      const run = startBin(["run", "--json", "--config", config]);
      await waitFor(
        "the snapshot",
        () => spawnSync("test", ["-e", join(n.dir, "snapping")]).status === 0,
        20_000,
      );
      const guard = spawnSync("pgrep", ["-P", String(run.child.pid), "-f", "__guard"], {
        encoding: "utf8",
      }).stdout.trim();
      assert.ok(guard, "the run's guard is running");
      for (const pid of [Number(guard), run.child.pid!]) process.kill(pid, "SIGKILL");
      await run.done;
      spawnSync("pkill", ["-f", slow]);
      const recovered = await runBin(["recover", "--json", "--config", config]);
      assert.equal(recovered.code, 0, recovered.stdout + recovered.stderr);
      assert.equal(wasFrozen(n.target.mountPoint), true, "the other tool's freeze is still there");
    } finally {
      n.cleanup();
    }
  },
});

Deno.test({
  ...options,
  name:
    "freeze path: a target someone else froze first (EBUSY) stays theirs: neither the agent nor its guard (agent SIGKILLed) thaws it",
  fn: async () => {
    const n = nest();
    try {
      execFileSync("fsfreeze", ["--freeze", n.target.mountPoint]);
      const slow = n.script("slow-snap.sh", `touch "${join(n.dir, "snapping")}"; exec sleep 30`);
      const run = startBin([
        "run",
        "--json",
        "--config",
        n.config({ snapshot: { command: [slow] } }),
      ]);
      await waitFor(
        "the snapshot",
        () => spawnSync("test", ["-e", join(n.dir, "snapping")]).status === 0,
        20_000,
      );
      process.kill(run.child.pid!, "SIGKILL");
      await run.done;
      spawnSync("pkill", ["-f", slow]);
      // Give the guard (which reads EOF at once) time to act, had it anything to thaw.
      await new Promise((resolve) => setTimeout(resolve, 500));
      assert.equal(wasFrozen(n.target.mountPoint), true, "the other tool's freeze is still there");
    } finally {
      n.cleanup();
    }
  },
});

Deno.test({
  ...options,
  name:
    "freeze path: a snapshot command blocked on the frozen filesystem (D state) times out, is reported unkillable, and the thaw does not wait for it",
  fn: async () => {
    const n = nest();
    try {
      const stuck = n.script("stuck-snap.sh", `echo x > "${n.target.mountPoint}/during-freeze"`);
      const started = performance.now();
      const ran = await runBin([
        "run",
        "--json",
        "--config",
        n.config({
          snapshot: { command: [stuck], timeoutInSeconds: 1 },
          freeze: { mounts: [n.target.mountPoint], maxFrozenSeconds: 60 },
        }),
      ], { timeoutMs: 50_000 });
      const took = performance.now() - started;
      const result = resultOf<RunResult>(ran.stdout);
      const timeout = result.errors.find((e) => e.code === "SnapshotTimeout");
      assert.ok(timeout, JSON.stringify(result.errors));
      assert.match(timeout.message, /could not be killed .*state D/);
      assert.ok(
        !result.errors.some((e) => e.code === "FreezeTimeout"),
        "vmsnap thawed, not the guard",
      );
      assert.deepEqual(result.freeze.mounts.map((m) => [m.frozen, m.thawed]), [[true, true]]);
      assert.ok(took < 20_000, `the run ended ${Math.round(took)} ms after it started`);
      // Thawed, the blocked write completes.
      await waitFor(
        "the blocked write",
        () => spawnSync("test", ["-e", join(n.target.mountPoint, "during-freeze")]).status === 0,
        10_000,
      );
    } finally {
      n.cleanup();
    }
  },
});
