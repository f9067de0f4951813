/**
 * vmsnap's own state under stress, through the binary: the log across many
 * runs and rotations, records held while frozen, a log path that is not a
 * file, a reader that goes away, the run lock raced by many contenders, a
 * stateDir that is full or read-only.
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import {
  existsSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  writeFileSync,
} from "node:fs";
import { join } from "node:path";
import { BIN, codes, json, resultOf, runBin, startBin, waitFor } from "../helpers.ts";
import { figure } from "../proof.ts";
import { readLastResult } from "../../src/state/last_result.ts";
import { makeLoopFs } from "../loop.ts";
import { type RunFixture, runFixture } from "../run_fixture.ts";
import { assertCleanAfterFault } from "./fault_helpers.ts";

const options = { sanitizeResources: false, sanitizeOps: false };
/** The log's size limit (src/state/event_log.ts) and the generations it keeps. */
const MAX_BYTES = 10 * 1024 * 1024;

/** What every scenario leaves: nothing frozen, no process of the run, no lock, no marker. */
const cleanAfter = (f: RunFixture, runId: string) =>
  assertCleanAfterFault({ mounts: [f.mp], stateDir: join(f.dir, "state"), runId });

/** Every record of a log file and its generations, oldest first, each line parsed. */
// deno-lint-ignore no-explicit-any
function readGenerations(file: string): { name: string; size: number; records: any[] }[] {
  const dir = join(file, "..");
  const base = file.slice(dir.length + 1);
  const names = readdirSync(dir).filter((n) => n === base || n.startsWith(`${base}.`));
  const order = (n: string) => (n === base ? 0 : Number(n.slice(base.length + 1)));
  return names.sort((a, b) => order(b) - order(a)).map((name) => {
    const text = readFileSync(join(dir, name), "utf8");
    return {
      name,
      size: statSync(join(dir, name)).size,
      records: text.split("\n").filter(Boolean).map((line) => JSON.parse(line)),
    };
  });
}

Deno.test({
  ...options,
  name:
    "state: the log rotates across runs: full generations kept, no record lost, results in order",
  fn: async () => {
    const f = runFixture();
    try {
      // Each script prints 1000 lines of ~3.9 KB (all logged): ~8 MiB of records a run.
      const chatty = (name: string) =>
        f.script(
          name,
          `line=$(head -c 3900 /dev/zero | tr '\\0' x); i=0; while [ $i -lt 1000 ]; do echo "$i $line"; i=$((i+1)); done`,
        );
      const logFile = join(f.dir, "log", "vmsnap.jsonl");
      const config = f.config({
        preScriptLocation: chatty("pre.sh"),
        postScriptLocation: chatty("post.sh"),
      });
      const runIds: string[] = [];
      for (let i = 0; i < 4; i++) {
        const ran = await runBin(["run", "--json", "--config", config], { timeoutMs: 120_000 });
        const result = resultOf(ran.stdout);
        assert.equal(ran.code, 0, ran.stdout + ran.stderr);
        assert.equal(result.log.lost, 0);
        runIds.push(result.runId);
        figure("the log rotating across runs", `run ${i + 1} took`, result.durationMs);
      }
      const generations = readGenerations(logFile);
      // ~33 MiB of records at 10 MiB a file: 3 full generations and the current file.
      assert.deepEqual(generations.map((g) => g.name), [
        "vmsnap.jsonl.3",
        "vmsnap.jsonl.2",
        "vmsnap.jsonl.1",
        "vmsnap.jsonl",
      ]);
      for (const g of generations.slice(0, -1)) {
        // Rotated only when full: within one record of the limit, never past it.
        assert.ok(g.size <= MAX_BYTES && g.size > MAX_BYTES - 8192, `${g.name}: ${g.size} bytes`);
      }
      const records = generations.flatMap((g) => g.records);
      assert.deepEqual(
        records.filter((r) => r.event === "result").map((r) => r.runId),
        runIds,
        "every run's result, in order",
      );
      for (const runId of runIds) {
        const output = records.filter((r) => r.runId === runId && r.event === "script-output");
        assert.equal(output.length, 2000, `every script line of run ${runId}`);
      }
      figure("the log rotating across runs", "records kept over 4 runs", records.length, "records");
    } finally {
      f.cleanup();
    }
  },
});

Deno.test({
  ...options,
  name: "state: records held while frozen are bounded: the excess is dropped, counted and reported",
  fn: async () => {
    const f = runFixture();
    try {
      // The snapshot command prints ~13 MB while the filesystem is frozen.
      const snap = f.script(
        "loud-snap.sh",
        `cp --sparse=always "${f.fs.image}" "${f.copy}"; yes "$(head -c 300 /dev/zero | tr '\\0' y)" | head -n 30000`,
      );
      const logFile = join(f.dir, "log", "vmsnap.jsonl");
      const ran = await runBin([
        "run",
        "--json",
        "--config",
        f.config({ snapshot: { command: [snap] } }),
      ], {
        timeoutMs: 120_000,
      });
      const result = resultOf(ran.stdout);
      assert.equal(ran.code, 0, ran.stdout + ran.stderr);
      assert.equal(result.snapshotTaken, true);
      assert.ok(result.log.dropped > 0, JSON.stringify(result.log));
      assert.equal(result.log.lost, 0);
      const warning = result.warnings.find((w: { code: string }) => w.code === "LogRecordsDropped");
      assert.ok(warning, JSON.stringify(result.warnings));
      assert.match(warning.message, new RegExp(`${result.log.dropped} log record`));
      const records = readGenerations(logFile).flatMap((g) => g.records);
      // The start and the end of the frozen phase are kept; the gap is marked.
      const events = records.map((r) => r.event);
      for (const event of ["freeze", "snapshot-command", "thaw", "result"]) {
        assert.ok(events.includes(event), event);
      }
      const gap = records.find((r) => r.event === "log-records-dropped");
      assert.equal(gap?.dropped, result.log.dropped);
      assert.equal(
        records.filter((r) => r.event === "snapshot-output").length + result.log.dropped,
        30000,
        "every line is either in the log or counted as dropped",
      );
      figure(
        "records held while frozen",
        "records dropped (and reported)",
        result.log.dropped,
        "records",
      );
      await cleanAfter(f, result.runId);
    } finally {
      f.cleanup();
    }
  },
});

Deno.test({
  ...options,
  name: "state: a FIFO as log.file: run does not block, run and check name it (LogFileNotRegular)",
  fn: async () => {
    const f = runFixture();
    try {
      const fifo = f.path("log/vmsnap.jsonl");
      spawnSync("mkdir", ["-m", "700", f.path("log")]);
      assert.equal(spawnSync("mkfifo", ["-m", "600", fifo]).status, 0);
      const config = f.config({ log: { file: fifo } });
      const ran = await runBin(["run", "--json", "--config", config], { timeoutMs: 20_000 });
      assert.notEqual(ran.signal, "SIGKILL", "run blocked opening the FIFO");
      const result = resultOf(ran.stdout);
      assert.ok(codes(result).includes("LogFileNotRegular"), JSON.stringify(result.errors));
      const problem = result.errors.find((e: { code: string }) => e.code === "LogFileNotRegular");
      assert.ok(problem.message.includes(fifo), problem.message);
      assert.match(problem.message, /FIFO/);
      assert.match(problem.message, /Fix:/);
      assert.notEqual(result.status, "success");
      await cleanAfter(f, result.runId);
      const checked = await runBin(["check", "--json", "--config", config], { timeoutMs: 20_000 });
      assert.equal(checked.code, 1, checked.stdout);
      const report = json<{ problems: { code: string; message: string; path?: string }[] }>(
        checked,
      );
      const found = report.problems.find((p) => p.code === "LogFileNotRegular");
      assert.ok(found?.message.includes(fifo), checked.stdout);
      assert.equal(found?.path, "log.file");
    } finally {
      f.cleanup();
    }
  },
});

Deno.test({
  ...options,
  name: "state: run --json | head -1: no EPIPE stack, the run still thaws, resumes and finishes",
  fn: async () => {
    const f = runFixture();
    try {
      const pre = f.script("pre.sh", "true");
      const post = f.script("post.sh", `touch "${f.path("resumed")}"`);
      const snap = f.script(
        "slow-snap.sh",
        `cp --sparse=always "${f.fs.image}" "${f.copy}"; sleep 0.5`,
      );
      const config = f.config({
        preScriptLocation: pre,
        postScriptLocation: post,
        snapshot: { command: [snap] },
      });
      const ran = spawnSync("/bin/bash", [
        "-c",
        `"$0" run --json --config "$1" 2>"$2" | head -1; echo "\${PIPESTATUS[0]}" >"$3"`,
        BIN,
        config,
        f.path("stderr"),
        f.path("exit"),
      ], { encoding: "utf8", timeout: 60_000 });
      assert.equal(JSON.parse(ran.stdout.trim()).event, "quiesced", ran.stdout);
      const stderr = f.read("stderr");
      assert.doesNotMatch(stderr, /EPIPE|Error|at /, stderr);
      assert.equal(f.read("exit").trim(), "0", stderr);
      assert.ok(f.exists("resumed"), "the post-script ran");
      assert.ok(existsSync(f.copy), "the snapshot was taken");
      const log = readGenerations(f.path("log/vmsnap.jsonl")).flatMap((g) => g.records);
      const result = log.find((r) => r.event === "result");
      assert.equal(result?.status, "success", JSON.stringify(result));
      await cleanAfter(f, result.runId);
      // Without --json the timeline is on stderr: a reader of it that goes away is the same.
      const text = spawnSync("/bin/bash", [
        "-c",
        `"$0" run --config "$1" 2>&1 >/dev/null | head -1; echo "\${PIPESTATUS[0]}" >"$2"`,
        BIN,
        config,
        f.path("exit-text"),
      ], { encoding: "utf8", timeout: 60_000 });
      assert.match(text.stdout, /check/, text.stdout);
      assert.equal(f.read("exit-text").trim(), "0");
      const again = readGenerations(f.path("log/vmsnap.jsonl")).flatMap((g) => g.records)
        .filter((r) => r.event === "result");
      assert.equal(again.length, 2);
      assert.equal(again[1].status, "success");
      await cleanAfter(f, again[1].runId);
    } finally {
      f.cleanup();
    }
  },
});

Deno.test({
  ...options,
  name:
    "state: 8 runs racing on a stale run lock, 20 rounds: exactly one takes it over, nothing left behind",
  fn: async () => {
    const f = runFixture();
    try {
      // The holder keeps the lock until the test has seen the seven others exit (or 30 s): a
      // second holder is then always a double holder, never a later run, however slow the machine.
      const release = f.path("release");
      const slow = f.script(
        "slow.sh",
        `i=0; while [ ! -e "${release}" ] && [ $i -lt 600 ]; do sleep 0.05; i=$((i+1)); done`,
      );
      const config = f.config({ fsFreezeEnabled: false, snapshot: { command: [slow] } });
      const stateDir = f.path("state");
      mkdirSync(stateDir, { mode: 0o700 });
      let doubles = 0;
      for (let round = 0; round < 20; round++) {
        rmSync(release, { force: true });
        const dead = `dead-${round}`;
        writeFileSync(
          join(stateDir, "run.lock"),
          JSON.stringify({ pid: 999999, started: "1", runId: dead, since: "then" }),
          { mode: 0o600 },
        );
        const runs = Array.from(
          { length: 8 },
          () => startBin(["run", "--json", "--config", config]),
        );
        let exited = 0;
        for (const r of runs) r.done.then(() => exited++);
        await waitFor("seven contenders to exit", () => exited >= 7, 30_000).catch(() => {});
        writeFileSync(release, "");
        const done = await Promise.all(runs.map((r) => r.done));
        const results = done.map((d) => resultOf(d.stdout));
        const winners = results.filter((r) => r.exitCode === 0);
        if (winners.length > 1) doubles++;
        assert.equal(winners.length, 1, `round ${round}: ${winners.length} runs took the lock`);
        assert.equal(winners[0].recovered?.deadRun?.runId, dead, "the dead run is recovered");
        for (const loser of results.filter((r) => r.exitCode !== 0)) {
          assert.deepEqual(codes(loser), ["AnotherRunInProgress"], JSON.stringify(loser.errors));
        }
        assert.deepEqual(
          readdirSync(stateDir),
          ["last-result.json"],
          `round ${round}: nothing left in stateDir but the last result`,
        );
        assert.equal(readLastResult<{ runId: string }>(stateDir)?.runId, winners[0].runId);
      }
      figure("8 runs racing on a stale run lock", "rounds with two holders", doubles, "rounds");
    } finally {
      f.cleanup();
    }
  },
});

for (const how of ["full", "read-only"] as const) {
  Deno.test({
    ...options,
    name:
      `state: a ${how} stateDir: StateDirUnwritable, nothing started, nothing left, a true message`,
    fn: async () => {
      const f = runFixture();
      const tiny = makeLoopFs({ dir: f.dir, name: "statefs", sizeMiB: 1 });
      try {
        const stateDir = join(tiny.mountPoint, "state");
        mkdirSync(stateDir, { mode: 0o700 });
        if (how === "full") {
          // Filled to the last block: blocks the kernel frees after a sync are taken too.
          spawnSync("/bin/sh", [
            "-c",
            `dd if=/dev/zero of="$0/fill" bs=4k status=none; for round in 1 2 3; do sync; i=0; while printf x >"$0/x-$round-$i" 2>/dev/null; do i=$((i+1)); done; done; sync`,
            tiny.mountPoint,
          ]);
          const probe = spawnSync("/bin/sh", ["-c", `printf x >"$0/probe"`, stateDir]);
          assert.notEqual(probe.status, 0, "the filesystem is full");
          spawnSync("rm", ["-f", join(stateDir, "probe")]);
        } else {
          assert.equal(spawnSync("mount", ["-o", "remount,ro", tiny.mountPoint]).status, 0);
        }
        const pre = f.script("pre.sh", `touch "${f.path("quiesced")}"`);
        const config = f.config({ stateDir, preScriptLocation: pre });
        for (let i = 0; i < 2; i++) {
          const ran = await runBin(["run", "--json", "--config", config]);
          const result = resultOf(ran.stdout);
          assert.equal(ran.code, 2, ran.stdout);
          assert.deepEqual(codes(result), ["StateDirUnwritable"], ran.stdout);
          const message = result.errors[0].message;
          assert.ok(message.includes(stateDir), message);
          assert.match(message, how === "full" ? /ENOSPC/ : /EROFS/);
          assert.match(message, /nothing was started/);
          assert.match(message, /Fix:/);
          assert.doesNotMatch(ran.stdout + ran.stderr, /thawed|resumed| {4}at /);
          assert.equal(result.status, "failed");
          assert.equal(f.exists("quiesced"), false, "no plugin ran");
          assert.deepEqual(readdirSync(stateDir), [], "nothing left in stateDir");
        }
        // Without --json: the same, in words, and no stack.
        const text = await runBin(["run", "--config", config]);
        assert.equal(text.code, 2);
        assert.match(text.stderr, /\[StateDirUnwritable\]/);
        assert.doesNotMatch(text.stderr, / {4}at |InternalError/);
      } finally {
        tiny.cleanup();
        f.cleanup();
      }
    },
  });
}

Deno.test({
  ...options,
  name:
    "state: stateDir full after the lock was taken (during the pre-script): the freeze marker's write is StateDirUnwritable, nothing frozen, the plugins resume",
  fn: async () => {
    const f = runFixture();
    const tiny = makeLoopFs({ dir: f.dir, name: "statefs", sizeMiB: 1 });
    try {
      const stateDir = join(tiny.mountPoint, "state");
      mkdirSync(stateDir, { mode: 0o700 });
      // The pre-script fills stateDir's filesystem to the last block and inode, after the lock.
      const pre = f.script(
        "pre.sh",
        `dd if=/dev/zero of="${tiny.mountPoint}/fill" bs=4k status=none; for round in 1 2 3; do sync; i=0; while printf x >"${tiny.mountPoint}/x-$round-$i" 2>/dev/null; do i=$((i+1)); done; done; sync; touch "${
          f.path("quiesced")
        }"`,
      );
      const post = f.script("post.sh", `touch "${f.path("resumed")}"`);
      const ran = await runBin([
        "run",
        "--json",
        "--config",
        f.config({ stateDir, preScriptLocation: pre, postScriptLocation: post }),
      ]);
      const result = resultOf(ran.stdout);
      assert.ok(f.exists("quiesced"), "the pre-script ran");
      assert.deepEqual(codes(result), ["StateDirUnwritable"], ran.stdout);
      assert.match(result.errors[0].message, /freeze marker could not be written/);
      assert.match(result.errors[0].message, /ENOSPC/);
      assert.match(result.errors[0].message, /nothing was frozen\. Fix:/);
      assert.deepEqual(result.freeze.mounts, [], "nothing was frozen");
      assert.ok(f.exists("resumed"), "the post-script ran");
      assert.equal(result.plugins[0].resume.ok, true);
      assert.ok(!existsSync(join(stateDir, "frozen.json")), "no marker left");
    } finally {
      tiny.cleanup();
      f.cleanup();
    }
  },
});

Deno.test({
  ...options,
  name:
    "state: the last result is kept in stateDir: 0600, replaced whole, equal to the printed one",
  fn: async () => {
    const f = runFixture();
    try {
      const config = f.config();
      const stateDir = f.path("state");
      for (let i = 0; i < 2; i++) {
        const ran = await runBin(["run", "--json", "--config", config]);
        const printed = resultOf(ran.stdout);
        assert.equal(ran.code, 0, ran.stdout);
        assert.deepEqual(readLastResult(stateDir), printed);
        assert.equal(statSync(join(stateDir, "last-result.json")).mode & 0o777, 0o600);
        assert.deepEqual(readdirSync(stateDir), ["last-result.json"]);
      }
    } finally {
      f.cleanup();
    }
  },
});
