/**
 * Issue 11, items 2 and 4: where Azure's framework still takes a snapshot (a
 * missing, unreadable, invalid or insecure config), vmsnap does too when it
 * has a snapshot method anyway; and a failed post-script lowers what the run
 * reports (`continueBackupOnFailure: true`) or fails it (`false`).
 *
 * The default freeze is `auto`, which on this machine would mean `/`: these
 * tests give vmsnap a mount table listing only their own loop filesystem
 * (`VMSNAP_TEST_MOUNTINFO`), so nothing else is ever frozen.
 *
 * @module
 */
import assert from "node:assert/strict";
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { codes, put, resultOf, runBin, startBin, waitFor } from "../helpers.ts";
import { type RunFixture, runFixture } from "../run_fixture.ts";

/** A mount table holding only the fixture's loop filesystem. */
function onlyLoopMountinfo(f: RunFixture): string {
  const line = readFileSync("/proc/self/mountinfo", "utf8").split("\n")
    .find((l) => l.split(" ")[4] === f.mp);
  assert.ok(line, `${f.mp} is in /proc/self/mountinfo`);
  const file = f.path("mountinfo");
  writeFileSync(file, `${line}\n`);
  return file;
}

/** Scripts that leave a mark when they run. */
function markingScripts(f: RunFixture): { pre: string; post: string } {
  return {
    pre: f.script("pre.sh", `echo pre >> "${f.path("ran")}"`),
    post: f.script("post.sh", `echo post >> "${f.path("ran")}"`),
  };
}

/** `run` with no usable config and a snapshot command on the command line. */
async function fallbackRun(f: RunFixture, config: string, extra: string[] = []) {
  const ran = await runBin(
    ["run", "--json", "--config", config, ...extra, "--snapshot-command", f.snap],
    { env: { VMSNAP_TEST_MOUNTINFO: onlyLoopMountinfo(f) } },
  );
  return { ran, result: resultOf(ran.stdout) };
}

/** What every fallback run must show: a snapshot with the default freeze, no scripts, exit 1. */
function assertFallback(
  f: RunFixture,
  { ran, result }: Awaited<ReturnType<typeof fallbackRun>>,
  code: string,
): void {
  assert.equal(ran.code, 1, ran.stdout + ran.stderr);
  assert.equal(result.snapshotTaken, true);
  assert.equal(result.consistency, "filesystem");
  assert.equal(result.status, "degraded");
  assert.deepEqual(result.freeze.mounts.map((m: { mountPoint: string }) => m.mountPoint), [f.mp]);
  assert.ok(result.freeze.mounts.every((m: { thawed: boolean }) => m.thawed));
  assert.equal(codes(result)[0], code, JSON.stringify(result.errors));
  assert.match(result.errors[0].message, /no scripts were run.*default freeze/s);
  assert.ok(existsSync(f.copy), "the snapshot command ran");
  assert.ok(!f.exists("ran"), "no script of the unusable config ran");
}

Deno.test("azure fallback: a missing config with --snapshot-command: no scripts, the default freeze, a snapshot, exit 1", async () => {
  const f = runFixture();
  try {
    assertFallback(f, await fallbackRun(f, f.path("absent.json")), "ConfigFileNotFound");
  } finally {
    f.cleanup();
  }
});

Deno.test("azure fallback: an invalid, an insecure and an unreadable-type config each still give the snapshot", async () => {
  const f = runFixture();
  try {
    const { pre, post } = markingScripts(f);
    const invalid = put(f.path("invalid.json"), `{"preScriptLocation": "${pre}",`, 0o600);
    assertFallback(f, await fallbackRun(f, invalid), "IncorrectJSONConfigFile");

    const body = JSON.stringify({ preScriptLocation: pre, postScriptLocation: post });
    const insecure = put(f.path("insecure.json"), body, 0o644);
    assertFallback(f, await fallbackRun(f, insecure), "InsufficientPermissionforConfigFile");

    const wrongValue = put(
      f.path("values.json"),
      JSON.stringify({ fsFreezeEnabled: "yes" }),
      0o600,
    );
    assertFallback(f, await fallbackRun(f, wrongValue), "InvalidConfigType");

    const directory = f.path("state-like-dir");
    Deno.mkdirSync(directory, { mode: 0o700 });
    assertFallback(f, await fallbackRun(f, directory), "ConfigFileNotRegular");
  } finally {
    f.cleanup();
  }
});

Deno.test("azure fallback: --external answers the same way; without a snapshot method it stays exit 2", async () => {
  const f = runFixture();
  try {
    const mountinfo = onlyLoopMountinfo(f);
    const started = startBin(["run", "--json", "--config", f.path("absent.json"), "--external"], {
      env: { VMSNAP_TEST_MOUNTINFO: mountinfo },
    });
    // Answered only after the frozen line: anything sent before it is discarded.
    await waitFor("the frozen event", () => started.stdout().includes('"frozen"'));
    started.child.stdin.end("snapshot-done\n");
    const external = await started.done;
    const result = resultOf(external.stdout);
    assert.equal(external.code, 1, external.stdout + external.stderr);
    assert.equal(result.snapshotTaken, true);
    assert.equal(result.consistency, "filesystem");

    const none = await runBin(["run", "--json", "--config", f.path("absent.json")], {
      env: { VMSNAP_TEST_MOUNTINFO: mountinfo },
    });
    assert.equal(none.code, 2);
    assert.equal(resultOf(none.stdout).snapshotTaken, false);
    assert.deepEqual(codes(resultOf(none.stdout)), ["ConfigFileNotFound"]);
  } finally {
    f.cleanup();
  }
});

Deno.test("azure policy: a failed post-script lowers the consistency (continueBackupOnFailure true) or fails the run (false)", async () => {
  const f = runFixture();
  try {
    const pre = f.script("pre.sh", "true");
    const failing = f.script("post-fail.sh", "echo 'could not restart the app' >&2; exit 9");
    const lenient = await runBin([
      "run",
      "--json",
      "--config",
      f.config({
        preScriptLocation: pre,
        postScriptLocation: failing,
        continueBackupOnFailure: true,
      }),
    ]);
    let result = resultOf(lenient.stdout);
    assert.equal(lenient.code, 1, "a snapshot at a lower consistency");
    assert.deepEqual([result.status, result.consistency], ["degraded", "filesystem"]);
    assert.deepEqual(codes(result), ["Post-ScriptExecutionFailed"]);

    const strict = await runBin([
      "run",
      "--json",
      "--config",
      f.config(
        { preScriptLocation: pre, postScriptLocation: failing, continueBackupOnFailure: false },
        "strict.json",
      ),
    ]);
    result = resultOf(strict.stdout);
    assert.equal(strict.code, 2, "the backup failed");
    assert.equal(result.status, "failed");
    assert.equal(result.snapshotTaken, true);
    assert.deepEqual(codes(result), ["Post-ScriptExecutionFailed", "DiscardSnapshot"]);
    assert.match(result.errors[1].message, /discard/i);
    assert.match(strict.stderr + strict.stdout, /discard/i);
    assert.ok(existsSync(join(f.dir, "copy.img")), "the snapshot itself was taken");
  } finally {
    f.cleanup();
  }
});
