/**
 * `vmsnap run` end to end, through the compiled binary, on loop-mounted
 * filesystems the tests create (and only those are ever frozen).
 */
import assert from "node:assert/strict";
import { execFileSync, spawnSync } from "node:child_process";
import { mkdirSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import process from "node:process";
import { join } from "node:path";
import {
  codes,
  NOBODY,
  put,
  resultOf as sharedResultOf,
  runBin,
  startBin,
  timeToWrite,
  waitFor,
} from "../helpers.ts";
import { runFixture } from "../run_fixture.ts";
import type { RunResult } from "../../src/protocol.ts";

/** The events of a --json run, the result last. */
function events(stdout: string): Record<string, unknown>[] {
  return stdout.trim().split("\n").filter(Boolean).map((line) => JSON.parse(line));
}
const resultOf = (stdout: string) => sharedResultOf<RunResult>(stdout);

/** True when no process has this marker on its command line. */
function noneRunning(marker: string): boolean {
  return spawnSync("pgrep", ["-f", marker]).status === 1;
}

Deno.test("a clean run: exit 0, application-consistent, the copy holds what the pre-script wrote", async () => {
  const f = runFixture();
  try {
    const pre = f.script("pre.sh", `echo "quiesced at $VMSNAP_PHASE" > "${f.mp}/app.txt"; sync`);
    const post = f.script("post.sh", `echo resumed > "${f.path("post.out")}"`);
    const config = f.config({ preScriptLocation: pre, postScriptLocation: post });
    const ran = await runBin(["run", "--json", "--config", config]);
    const result = resultOf(ran.stdout);
    assert.equal(ran.code, 0, ran.stdout + ran.stderr);
    assert.deepEqual([result.status, result.consistency, result.snapshotTaken], [
      "success",
      "application",
      true,
    ]);
    assert.deepEqual(events(ran.stdout).map((e) => e.event), [
      "quiesced",
      "frozen",
      "snapshot-taken",
      "thawed",
      "resumed",
      "result",
    ]);
    assert.deepEqual(result.freeze.mounts.map((m) => [m.mountPoint, m.frozen, m.thawed]), [[
      f.mp,
      true,
      true,
    ]]);
    assert.equal(f.read("post.out"), "resumed\n");
    // The snapshot: mount the copy read-only and read the application's file.
    const restored = f.path("restored");
    mkdirSync(restored);
    execFileSync("mount", ["-o", "loop,ro", f.copy, restored]);
    try {
      assert.equal(readFileSync(join(restored, "app.txt"), "utf8"), "quiesced at pre\n");
    } finally {
      execFileSync("umount", [restored]);
    }
    // The mount takes writes again.
    assert.ok((await timeToWrite(f.mp)) < 1000);
  } finally {
    f.cleanup();
  }
});

Deno.test("without --json: a readable timeline and a one-line verdict on stderr, nothing on stdout", async () => {
  const f = runFixture();
  try {
    const ran = await runBin(["run", "--config", f.config()]);
    assert.equal(ran.code, 0, ran.stderr);
    assert.equal(ran.stdout, "");
    for (const step of ["check", "freeze", "snapshot", "thaw"]) {
      assert.match(ran.stderr, new RegExp(`^\\+\\d+\\.\\d{3}s  ${step}`, "m"));
    }
    // No plugin configured: the config asked for filesystem consistency and got it.
    assert.match(ran.stderr, /^vmsnap run \S+: success, filesystem-consistent, exit 0, \d+ ms$/m);
  } finally {
    f.cleanup();
  }
});

Deno.test("scripts: argv with empty params, /bin/sh for mode 600, a clean environment", async () => {
  const f = runFixture();
  try {
    const pre = f.script(
      "pre.sh",
      `printf '%s|' "$@" > "${f.path("argv")}"; env | sort > "${f.path("env")}"; echo "$0" > "${
        f.path("shell")
      }"`,
      0o600,
    );
    const config = f.config({ preScriptLocation: pre, preScriptParams: ["a b", "", "c"] });
    const ran = await runBin(["run", "--json", "--config", config], {
      env: { LD_PRELOAD: "", LD_LIBRARY_PATH: "/nowhere", SECRET_TOKEN: "leak-me" },
    });
    assert.equal(ran.code, 0, ran.stdout);
    assert.equal(f.read("argv"), "a b||c|");
    assert.equal(f.read("shell").trim(), pre);
    const env = Object.fromEntries(
      f.read("env").trim().split("\n").map((l) => l.split(/=(.*)/s).slice(0, 2)),
    );
    assert.equal(env.VMSNAP_PHASE, "pre");
    assert.equal(env.VMSNAP_ATTEMPT, "1");
    assert.equal(env.LANG, "C");
    assert.equal(env.PATH, "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
    assert.match(env.VMSNAP_RUN_ID, /^\d{8}T\d{6}Z-[0-9a-f]{6}$/);
    for (const leaked of ["LD_PRELOAD", "LD_LIBRARY_PATH", "SECRET_TOKEN"]) {
      assert.equal(env[leaked], undefined, leaked);
    }
  } finally {
    f.cleanup();
  }
});

Deno.test("retries really re-run: fails twice, succeeds on attempt 3 with 2 retries", async () => {
  const f = runFixture();
  try {
    const count = f.path("count");
    const pre = f.script(
      "pre.sh",
      `n=$(cat "${count}" 2>/dev/null || echo 0); n=$((n+1)); echo $n > "${count}"; echo "attempt $n"; [ $n -ge 3 ]`,
    );
    const ran = await runBin([
      "run",
      "--json",
      "--config",
      f.config({ preScriptLocation: pre, preScriptNoOfRetries: 2 }),
    ]);
    const result = resultOf(ran.stdout);
    assert.equal(ran.code, 0, ran.stdout);
    assert.equal(f.read("count").trim(), "3");
    assert.deepEqual(
      (result.plugins[0].quiesce!.facts.attempts as { attempt: number; exitCode: number }[])
        .map((a) => [a.attempt, a.exitCode]),
      [[1, 1], [2, 1], [3, 0]],
    );
    const log = readFileSync(result.log.file!, "utf8");
    assert.equal(log.match(/"event":"script-attempt"/g)?.length, 3);
    assert.match(log, /"line":"attempt 2"/);
  } finally {
    f.cleanup();
  }
});

Deno.test("a failing pre-script with continueBackupOnFailure true: snapshot at filesystem consistency, exit 1, post still runs", async () => {
  const f = runFixture();
  try {
    const pre = f.script("pre.sh", "echo 'database refused' >&2; exit 7");
    const post = f.script("post.sh", `touch "${f.path("post.ran")}"`);
    const ran = await runBin([
      "run",
      "--json",
      "--config",
      f.config({ preScriptLocation: pre, postScriptLocation: post }),
    ]);
    const result = resultOf(ran.stdout);
    assert.equal(ran.code, 1);
    assert.deepEqual([result.status, result.consistency, result.snapshotTaken], [
      "degraded",
      "filesystem",
      true,
    ]);
    const error = result.errors.find((e) => e.code === "Pre-ScriptExecutionFailed")!;
    assert.match(error.message, /exited with code 7 on attempt 1 of 1/);
    assert.match(error.message, /stderr: database refused/);
    assert.equal(error.plugin, "ScriptRunner");
    assert.ok(f.exists("post.ran"), "post-script runs after a failed pre-script, as Azure does");
  } finally {
    f.cleanup();
  }
});

Deno.test("a failing pre-script with continueBackupOnFailure false: no snapshot, resumed, exit 2", async () => {
  const f = runFixture();
  try {
    const pre = f.script("pre.sh", "exit 1");
    const post = f.script("post.sh", `touch "${f.path("post.ran")}"`);
    const ran = await runBin([
      "run",
      "--json",
      "--config",
      f.config({
        preScriptLocation: pre,
        postScriptLocation: post,
        continueBackupOnFailure: false,
      }),
    ]);
    const result = resultOf(ran.stdout);
    assert.equal(ran.code, 2);
    assert.deepEqual([result.status, result.consistency, result.snapshotTaken], [
      "failed",
      "none",
      false,
    ]);
    assert.ok(!f.exists("copy.img"), "no snapshot command ran");
    assert.deepEqual(result.freeze.mounts, []);
    assert.ok(f.exists("post.ran"));
  } finally {
    f.cleanup();
  }
});

Deno.test("a plugin that fails its checks does not run; the run goes on at lower consistency (or stops)", async () => {
  const f = runFixture();
  try {
    const post = f.script("post.sh", `touch "${f.path("post.ran")}"`);
    const missing = f.path("missing.sh");
    let ran = await runBin([
      "run",
      "--json",
      "--config",
      f.config({ preScriptLocation: missing, postScriptLocation: post }),
    ]);
    let result = resultOf(ran.stdout);
    assert.equal(ran.code, 1);
    assert.deepEqual(codes(result), ["Pre-ScriptNotFound"]);
    assert.equal(result.consistency, "filesystem");
    assert.ok(!f.exists("post.ran"), "no pre step was attempted, so no post step");
    ran = await runBin([
      "run",
      "--json",
      "--config",
      f.config({ preScriptLocation: missing, continueBackupOnFailure: false }),
    ]);
    result = resultOf(ran.stdout);
    assert.equal(ran.code, 2);
    assert.equal(result.snapshotTaken, false);
  } finally {
    f.cleanup();
  }
});

Deno.test("a freeze failure: what was frozen is thawed; crash-consistent snapshot, or none", async () => {
  const f = runFixture();
  const { makeLoopFs } = await import("../loop.ts");
  const second = makeLoopFs({ dir: f.dir, name: "busy", sizeMiB: 32 });
  try {
    // Someone else froze the second filesystem: our FIFREEZE gets EBUSY.
    execFileSync("fsfreeze", ["--freeze", second.mountPoint]);
    const mounts = [f.mp, second.mountPoint];
    let ran = await runBin(["run", "--json", "--config", f.config({ freeze: { mounts } })]);
    let result = resultOf(ran.stdout);
    assert.equal(ran.code, 1, ran.stdout);
    assert.deepEqual([result.consistency, result.snapshotTaken], ["crash", true]);
    const failed = result.errors.find((e) => e.code === "FreezeFailed")!;
    assert.match(failed.message, /busy.*EBUSY/);
    assert.deepEqual(result.freeze.mounts.map((m) => [m.frozen, m.thawed]), [[true, true], [
      false,
      undefined,
    ]]);
    assert.ok((await timeToWrite(f.mp)) < 1000, "the first mount was thawed");

    ran = await runBin([
      "run",
      "--json",
      "--config",
      f.config({ freeze: { mounts }, continueBackupOnFailure: false }),
    ]);
    result = resultOf(ran.stdout);
    assert.equal(ran.code, 2);
    assert.equal(result.snapshotTaken, false);
    assert.ok((await timeToWrite(f.mp)) < 1000);
    // vmsnap did not thaw the freeze that was not its own.
    assert.equal(spawnSync("fsfreeze", ["--unfreeze", second.mountPoint]).status, 0);
  } finally {
    second.cleanup();
    f.cleanup();
  }
});

Deno.test("fsFreezeEnabled false: nothing frozen, crash-consistent is what was asked", async () => {
  const f = runFixture();
  try {
    const ran = await runBin(["run", "--json", "--config", f.config({ fsFreezeEnabled: false })]);
    const result = resultOf(ran.stdout);
    assert.equal(ran.code, 0);
    assert.deepEqual([result.consistency, result.requestedConsistency], ["crash", "crash"]);
    assert.deepEqual(result.freeze.mounts, []);
  } finally {
    f.cleanup();
  }
});

Deno.test("a config that cannot be used: nothing runs, exit 2, the right code", async () => {
  const f = runFixture();
  try {
    const pre = f.script("pre.sh", `touch "${f.path("pre.ran")}"`);
    const cases: [string, string][] = [
      [
        f.config({ preScriptLocation: pre, timeoutInSeconds: "30" }, "type.json"),
        "InvalidConfigType",
      ],
      [
        f.config({ preScriptLocation: pre, snapshot: undefined }, "nosnap.json"),
        "NoSnapshotMethod",
      ],
      [join(f.dir, "absent.json"), "ConfigFileNotFound"],
    ];
    const broken = f.path("broken.json");
    writeFileSync(broken, `{"preScriptLocation": "${pre}",`, { mode: 0o600 });
    cases.push([broken, "IncorrectJSONConfigFile"]);
    for (const [config, code] of cases) {
      const ran = await runBin(["run", "--json", "--config", config]);
      const result = resultOf(ran.stdout);
      assert.equal(ran.code, 2, code);
      assert.ok(codes(result).includes(code), `${code}: ${JSON.stringify(result.errors)}`);
      assert.equal(result.snapshotTaken, false);
    }
    assert.ok(!f.exists("pre.ran"), "no script ran from an unusable config");
    // A config group/other can read is refused before anything runs.
    const open = f.config({ preScriptLocation: pre });
    execFileSync("chmod", ["644", open]);
    const ran = await runBin(["run", "--json", "--config", open]);
    assert.equal(ran.code, 2);
    assert.deepEqual(codes(resultOf(ran.stdout)), ["InsufficientPermissionforConfigFile"]);
    assert.ok(!f.exists("pre.ran"));
  } finally {
    f.cleanup();
  }
});

Deno.test("run refuses to start unless root (NotRoot)", async () => {
  const f = runFixture();
  try {
    const { BIN } = await import("../helpers.ts");
    const ran = spawnSync("setpriv", [
      "--reuid=65534",
      "--regid=65534",
      "--clear-groups",
      BIN,
      "run",
      "--json",
      "--config",
      f.config(),
    ], { encoding: "utf8" });
    assert.equal(ran.status, 2, ran.stderr);
    assert.deepEqual(codes(resultOf(ran.stdout)), ["NotRoot"]);
  } finally {
    f.cleanup();
  }
});

Deno.test("a timeout kills the script and every process it started, setsid'd grandchild included", async () => {
  const f = runFixture();
  try {
    // A unique sleep length marks the script's processes on the command line.
    const marker = `sleep 3${Date.now() % 100000}`;
    const pre = f.script(
      "pre.sh",
      `setsid sh -c '${marker}; true' & sh -c '${marker}; true' & echo started; wait`,
    );
    const ran = await runBin([
      "run",
      "--json",
      "--config",
      f.config({ preScriptLocation: pre, timeoutInSeconds: 1 }),
    ]);
    const result = resultOf(ran.stdout);
    assert.equal(ran.code, 1);
    const error = result.errors.find((e) => e.code === "Pre-ScriptTimeout")!;
    assert.match(error.message, /did not finish within timeoutInSeconds \(1 s/);
    assert.match(error.message, /stdout: started/);
    assert.ok(noneRunning(marker), "no process started by the script survives");
  } finally {
    f.cleanup();
  }
});

Deno.test("output is read continuously: a script printing megabytes does not block, its tail is kept", async () => {
  const f = runFixture();
  try {
    const pre = f.script(
      "pre.sh",
      "head -c 8000000 /dev/zero | tr '\\0' 'x' | fold -w 100; echo; echo last-line; exit 3",
    );
    const ran = await runBin([
      "run",
      "--json",
      "--config",
      f.config({ preScriptLocation: pre, timeoutInSeconds: 20 }),
    ]);
    const result = resultOf(ran.stdout);
    const error = result.errors.find((e) => e.code === "Pre-ScriptExecutionFailed")!;
    assert.match(error.message, /stdout: last-line/);
    const attempt =
      (result.plugins[0].quiesce!.facts.attempts as unknown as { outputLines: number }[])[0];
    assert.equal(attempt.outputLines, 80001);
  } finally {
    f.cleanup();
  }
});

Deno.test("one run at a time: a second run exits 2 AnotherRunInProgress; a stale lock is taken over", async () => {
  const f = runFixture();
  try {
    const slow = f.script("slow-snap.sh", `touch "${f.path("snapping")}"; sleep 2`);
    const first = startBin([
      "run",
      "--json",
      "--config",
      f.config({ snapshot: { command: [slow] } }),
    ]);
    await waitFor("the first run's snapshot", () => f.exists("snapping"));
    const second = await runBin(["run", "--json", "--config", f.config()]);
    assert.equal(second.code, 2);
    assert.deepEqual(codes(resultOf(second.stdout)), ["AnotherRunInProgress"]);
    assert.match(resultOf(second.stdout).errors[0].message, /pid \d+/);
    const firstRan = await first.done;
    assert.equal(firstRan.code, 0, firstRan.stdout);
    // A lock left by a dead process.
    writeFileSync(
      join(f.dir, "state", "run.lock"),
      JSON.stringify({ pid: 999999, started: "1", runId: "old", since: "then" }),
    );
    const third = await runBin(["run", "--json", "--config", f.config()]);
    assert.equal(third.code, 0, third.stdout);
  } finally {
    f.cleanup();
  }
});

Deno.test("the snapshot command fails or times out: thawed, resumed, exit 2", async () => {
  const f = runFixture();
  try {
    const post = f.script("post.sh", `touch "${f.path("post.ran")}"`);
    const pre = f.script("pre.sh", "true");
    const failing = f.script("fail-snap.sh", "echo 'no space on the backup target' >&2; exit 4");
    let ran = await runBin([
      "run",
      "--json",
      "--config",
      f.config({
        preScriptLocation: pre,
        postScriptLocation: post,
        snapshot: { command: [failing] },
      }),
    ]);
    let result = resultOf(ran.stdout);
    assert.equal(ran.code, 2);
    assert.match(
      result.errors.find((e) => e.code === "SnapshotFailed")!.message,
      /exited with code 4.*no space on the backup target/s,
    );
    assert.ok(f.exists("post.ran"));
    assert.ok(result.freeze.mounts.every((m) => m.thawed));

    const hanging = f.script("hang-snap.sh", "sleep 300");
    ran = await runBin([
      "run",
      "--json",
      "--config",
      f.config({ snapshot: { command: [hanging], timeoutInSeconds: 1 } }),
    ]);
    result = resultOf(ran.stdout);
    assert.equal(ran.code, 2);
    assert.deepEqual(codes(result), ["SnapshotTimeout"]);
    assert.ok((await timeToWrite(f.mp)) < 1000);
  } finally {
    f.cleanup();
  }
});

Deno.test("--snapshot-command replaces the config's command and passes the same checks", async () => {
  const f = runFixture();
  try {
    const other = f.script("other-snap.sh", `touch "${f.path("other.ran")}"`);
    let ran = await runBin([
      "run",
      "--json",
      "--config",
      f.config(),
      "--snapshot-command",
      other,
      "x",
    ]);
    assert.equal(ran.code, 0, ran.stdout);
    assert.ok(f.exists("other.ran"));
    ran = await runBin([
      "run",
      "--json",
      "--config",
      f.config(),
      "--snapshot-command",
      put(f.path("users-true"), "#!/bin/sh\ntrue\n", 0o755, NOBODY),
    ]);
    assert.equal(ran.code, 2);
    assert.deepEqual(codes(resultOf(ran.stdout)), ["InsufficientPermissionforSnapshotCommand"]);
  } finally {
    f.cleanup();
  }
});

Deno.test("external handshake: frozen line, then snapshot-done / snapshot-failed / EOF", async () => {
  const f = runFixture();
  try {
    for (
      const [answer, code, exit] of [["snapshot-done", undefined, 0], [
        "snapshot-failed",
        "SnapshotFailed",
        2,
      ], [undefined, "SnapshotFailed", 2]] as const
    ) {
      const run = startBin(["run", "--external", "--config", f.config()]);
      await waitFor("the frozen line", () => run.stdout().includes("\n"));
      const frozen = JSON.parse(run.stdout().split("\n")[0]);
      assert.equal(frozen.event, "frozen");
      assert.deepEqual(frozen.mounts, [f.mp]);
      assert.ok((await timeToWrite(f.mp, 200)) === Infinity, "frozen while the caller snapshots");
      if (answer) run.child.stdin.write(`${answer}\n`);
      else run.child.stdin.end();
      const ran = await run.done;
      assert.equal(ran.code, exit, `${answer}: ${ran.stderr}`);
      if (code) assert.match(ran.stderr, new RegExp(`\\[${code}\\]`));
      assert.ok((await timeToWrite(f.mp)) < 1000);
    }
  } finally {
    f.cleanup();
  }
});

for (const signal of ["SIGTERM", "SIGINT", "SIGHUP"] as const) {
  Deno.test(`${signal} during the snapshot: stops it, thaws, resumes, exit 2 Interrupted`, async () => {
    const f = runFixture();
    try {
      const post = f.script("post.sh", `touch "${f.path("post.ran")}"`);
      const pre = f.script("pre.sh", "true");
      const slow = f.script("slow-snap.sh", `touch "${f.path("snapping")}"; exec sleep 300`);
      const run = startBin([
        "run",
        "--json",
        "--config",
        f.config({
          preScriptLocation: pre,
          postScriptLocation: post,
          snapshot: { command: [slow] },
        }),
      ]);
      await waitFor("the snapshot", () => f.exists("snapping"));
      // process.kill, not child.kill: Deno's child.kill makes the child look signal-killed.
      process.kill(run.child.pid!, signal);
      const ran = await run.done;
      const result = resultOf(ran.stdout);
      assert.equal(ran.code, 2);
      assert.match(result.errors[0].message, new RegExp(`received ${signal}`));
      assert.ok(codes(result).includes("Interrupted"));
      assert.ok(f.exists("post.ran"), "resumed");
      assert.ok((await timeToWrite(f.mp)) < 1000, "thawed");
      assert.ok(noneRunning(slow), "the snapshot command was stopped");
    } finally {
      f.cleanup();
    }
  });
}

Deno.test("post-script failures: Post-ScriptExecutionFailed and Post-ScriptTimeout; the snapshot stands at a lower consistency, status degraded", async () => {
  const f = runFixture();
  try {
    const pre = f.script("pre.sh", "true");
    const failing = f.script("post-fail.sh", "echo 'could not restart the app' >&2; exit 9");
    let ran = await runBin([
      "run",
      "--json",
      "--config",
      f.config({ preScriptLocation: pre, postScriptLocation: failing, postScriptNoOfRetries: 1 }),
    ]);
    let result = resultOf(ran.stdout);
    // Azure's rule: a failed post-script falls back to filesystem consistency (continueBackupOnFailure).
    assert.equal(ran.code, 1, "a snapshot at a lower consistency");
    assert.deepEqual([result.status, result.consistency], ["degraded", "filesystem"]);
    assert.deepEqual(codes(result), ["Post-ScriptExecutionFailed"]);
    assert.match(
      result.errors[0].message,
      /exited with code 9 on attempt 2 of 2\..*stderr: could not restart the app/s,
    );
    const hanging = f.script("post-hang.sh", "sleep 300");
    ran = await runBin([
      "run",
      "--json",
      "--config",
      f.config({ preScriptLocation: pre, postScriptLocation: hanging, timeoutInSeconds: 1 }),
    ]);
    result = resultOf(ran.stdout);
    assert.deepEqual(codes(result), ["Post-ScriptTimeout"]);
    assert.equal(result.status, "degraded");
    assert.ok(noneRunning(hanging));
  } finally {
    f.cleanup();
  }
});

Deno.test("the agent SIGKILLed while frozen: the guard thaws at once, a blocked writer resumes within a second", async () => {
  const f = runFixture();
  try {
    const slow = f.script("slow-snap.sh", `touch "${f.path("snapping")}"; exec sleep 300`);
    const run = startBin([
      "run",
      "--json",
      "--config",
      f.config({ snapshot: { command: [slow] } }),
    ]);
    await waitFor("the snapshot", () => f.exists("snapping"));
    const writer = timeToWrite(f.mp, 5000);
    await new Promise((r) => setTimeout(r, 200));
    const killedAt = performance.now();
    process.kill(run.child.pid!, "SIGKILL");
    await writer;
    const resumedAfter = performance.now() - killedAt;
    assert.ok(
      resumedAfter < 1000,
      `the writer resumed ${Math.round(resumedAfter)} ms after the kill`,
    );
    spawnSync("pkill", ["-f", slow]);
    // The guard left a report; the next run says what happened.
    await waitFor(
      "the guard's report",
      () => readdirSync(join(f.dir, "state")).some((n) => n.startsWith("guard-")),
    );
    const next = await runBin(["run", "--json", "--config", f.config()]);
    const recovered =
      (resultOf(next.stdout) as unknown as { recovered?: { guardReports: { reason: string }[] } })
        .recovered;
    assert.equal(recovered?.guardReports[0]?.reason, "agent-died");
  } finally {
    f.cleanup();
  }
});

Deno.test("a snapshot outliving maxFrozenSeconds: thawed at the deadline, FreezeTimeout, crash-consistent", async () => {
  const f = runFixture();
  try {
    const slow = f.script("slow-snap.sh", `touch "${f.path("snapping")}"; sleep 3`);
    const run = startBin([
      "run",
      "--json",
      "--config",
      f.config({ snapshot: { command: [slow] }, freeze: { mounts: [f.mp], maxFrozenSeconds: 1 } }),
    ]);
    await waitFor("the snapshot", () => f.exists("snapping"));
    const started = performance.now();
    const wrote = await timeToWrite(f.mp, 2500);
    const elapsed = performance.now() - started;
    assert.ok(
      wrote !== Infinity && elapsed < 1600,
      `the guard thawed during the snapshot (${Math.round(elapsed)} ms)`,
    );
    const ran = await run.done;
    const result = resultOf(ran.stdout);
    assert.equal(ran.code, 1);
    assert.deepEqual(codes(result), ["FreezeTimeout"]);
    assert.equal(result.consistency, "crash");
    assert.equal(result.freeze.guard?.steppedIn?.reason, "deadline");
  } finally {
    f.cleanup();
  }
});

Deno.test("the log file on the frozen filesystem: no stall, records land after the thaw", async () => {
  const f = runFixture();
  try {
    const pre = f.script("pre.sh", "echo quiescing");
    const logFile = join(f.mp, "log", "vmsnap.jsonl");
    const ran = await runBin([
      "run",
      "--json",
      "--config",
      f.config({ preScriptLocation: pre, log: { file: logFile } }),
    ], { timeoutMs: 20_000 });
    const result = resultOf(ran.stdout);
    assert.equal(ran.code, 0, ran.stdout + ran.stderr);
    assert.ok(result.freeze.frozenMs < 2000, `frozen ${result.freeze.frozenMs} ms`);
    assert.ok(result.log.heldMs >= result.freeze.frozenMs);
    const log = readFileSync(logFile, "utf8");
    for (const event of ["run-start", "freeze", "snapshot-command", "thaw", "result"]) {
      assert.match(log, new RegExp(`"event":"${event}"`));
    }
    assert.equal((execFileSync("stat", ["-c", "%a", logFile], { encoding: "utf8" })).trim(), "600");
    assert.equal(
      (execFileSync("stat", ["-c", "%a", join(f.mp, "log")], { encoding: "utf8" })).trim(),
      "700",
    );
  } finally {
    f.cleanup();
  }
});

Deno.test("the fsfreeze fallback runs /usr/sbin/fsfreeze, never one found through the caller's PATH", async () => {
  const f = runFixture();
  try {
    const fakeDir = f.path("fakebin");
    mkdirSync(fakeDir, { mode: 0o700 });
    put(join(fakeDir, "fsfreeze"), `#!/bin/sh\ntouch "${f.path("fake-ran")}"\nexit 0\n`, 0o755);
    const ran = await runBin(["run", "--json", "--config", f.config()], {
      env: { VMSNAP_FREEZE_METHOD: "fsfreeze", PATH: `${fakeDir}:/usr/sbin:/usr/bin:/sbin:/bin` },
    });
    assert.equal(f.exists("fake-ran"), false, "the fsfreeze in the caller's PATH never ran");
    assert.equal(ran.code, 0, ran.stdout);
    const result = resultOf(ran.stdout);
    assert.equal(result.freeze.method, "fsfreeze");
    assert.equal(result.consistency, "filesystem");
    assert.deepEqual(result.freeze.mounts.map((m) => [m.frozen, m.thawed]), [[true, true]]);
  } finally {
    f.cleanup();
  }
});
