/**
 * The script plugin end to end, through the compiled binary: how scripts are
 * started (no `#!` line, interpreters), what their output becomes, and what a
 * timeout really kills. Only the fixture's loop filesystem is ever frozen.
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { existsSync, rmSync } from "node:fs";
import { join } from "node:path";
import process from "node:process";
import {
  codes,
  json,
  NOBODY,
  put,
  putConfig,
  resultOf,
  runBin,
  secureDir,
  waitFor,
} from "../helpers.ts";
import { runFixture } from "../run_fixture.ts";

Deno.test("an executable script without a #! line runs with /bin/sh, as pre- and as post-script (Azure runs `sh script`)", async () => {
  const f = runFixture();
  try {
    // Mode 700 and no #! line: execve gives ENOEXEC, as Azure's docs set it up.
    const pre = put(f.path("pre-noshebang"), `echo "pre $*" > "${f.path("pre.out")}"\n`, 0o700);
    const post = put(f.path("post-noshebang"), `echo "post $*" > "${f.path("post.out")}"\n`, 0o700);
    const ran = await runBin([
      "run",
      "--json",
      "--config",
      f.config({
        preScriptLocation: pre,
        preScriptParams: ["a"],
        postScriptLocation: post,
        postScriptParams: ["b"],
      }),
    ]);
    const result = resultOf(ran.stdout);
    assert.equal(ran.code, 0, ran.stdout + ran.stderr);
    assert.deepEqual(codes(result), []);
    assert.equal(result.status, "success");
    assert.equal(f.read("pre.out"), "pre a\n");
    assert.equal(f.read("post.out"), "post b\n");
    assert.ok(!existsSync(join(f.path("state"), "run.lock")), "the run lock is released");
    // Alone as a post-script (it used to crash vmsnap after the thaw, lock left behind).
    const again = await runBin([
      "run",
      "--json",
      "--config",
      f.config({ postScriptLocation: post, postScriptParams: ["c"] }),
    ]);
    assert.equal(again.code, 0, again.stdout + again.stderr);
    assert.equal(resultOf(again.stdout).plugins[0].resume.ok, true);
    assert.equal(f.read("post.out"), "post c\n");
    assert.ok(!existsSync(join(f.path("state"), "run.lock")), "the run lock is released");
    // A snapshot command without a #! line (0755, the executable rule) is run the same way.
    const snap = put(f.path("snap-noshebang"), `touch "${f.path("snap.ran")}"\n`, 0o755);
    const snapped = await runBin([
      "run",
      "--json",
      "--config",
      f.config(),
      "--snapshot-command",
      snap,
    ]);
    assert.equal(snapped.code, 0, snapped.stdout + snapped.stderr);
    assert.ok(f.exists("snap.ran"));
  } finally {
    f.cleanup();
  }
});

Deno.test("vmsnap's own script plugin accepts timeouts up to 24 h (Azure's top-level key is Azure's 1800 s)", async () => {
  const { dir, cleanup } = secureDir("scripts-");
  try {
    const pre = put(join(dir, "pre.sh"), "#!/bin/sh\ntrue\n", 0o700);
    const check = async (timeoutInSeconds: number) => {
      const config = putConfig(dir, {
        stateDir: join(dir, "state"),
        log: { file: join(dir, "log", "vmsnap.jsonl") },
        fsFreezeEnabled: false,
        plugins: [{ type: "script", name: "long", pre, timeoutInSeconds }],
      });
      return json<{ problems: { code: string; path?: string }[] }>(
        await runBin(["check", "--json", "--config", config]),
      );
    };
    for (const ok of [1800, 7200, 86400]) {
      assert.deepEqual((await check(ok)).problems, [], `${ok} s`);
    }
    const over = (await check(86401)).problems;
    assert.deepEqual(over.map((p) => [p.code, p.path]), [[
      "InvalidConfigValue",
      "plugins[0].timeoutInSeconds",
    ]]);
  } finally {
    cleanup();
  }
});

Deno.test("root never runs an interpreter a user could change: #! names a user's file, or env finds one in the fixed PATH", async () => {
  const f = runFixture();
  // A program on vmsnap's fixed PATH that a user owns (a unique name, removed below).
  const name = `vmsnap-test-interp-${process.pid}-${Date.now()}`;
  const onPath = `/usr/local/bin/${name}`;
  try {
    const ran = (marker: string) => `#!/bin/sh\ntouch "${f.path(marker)}"\n`;
    const users = put(f.path("bin/interp"), ran("user-interp.ran"), 0o755, NOBODY);
    put(onPath, ran("env-target.ran"), 0o755, NOBODY);
    for (
      const [line, marker, names] of [
        [`#!${users}`, "user-interp.ran", users],
        [`#!/usr/bin/env ${name}`, "env-target.ran", onPath],
      ]
    ) {
      const pre = put(f.path("pre.sh"), `${line}\n`, 0o700);
      const run = await runBin(["run", "--json", "--config", f.config({ preScriptLocation: pre })]);
      const result = resultOf(run.stdout);
      assert.ok(!f.exists(marker), `root ran ${names}, which uid ${NOBODY} owns`);
      assert.deepEqual(codes(result), ["InsufficientPermissionforPre-Script"], run.stdout);
      assert.match(result.errors[0].message, new RegExp(`${names}.*owned by uid ${NOBODY}`));
      assert.equal(run.code, 1, "the run goes on at lower consistency (continueBackupOnFailure)");
    }
  } finally {
    rmSync(onPath, { force: true });
    f.cleanup();
  }
});

Deno.test("script output: a character split across pipe reads stays whole; terminal escapes are shown escaped, never sent raw to the terminal", async () => {
  const f = runFixture();
  try {
    // "é" (c3 a9) and "€" (e2 82 ac) split across two writes, with a pause between them.
    const pre = f.script(
      "pre.sh",
      `printf 'caf\\303'; sleep 0.3; printf '\\251 \\342\\202'; sleep 0.3; printf '\\254\\n'
printf 'title\\033]0;pwned\\007 clear\\033[2J bidi \\342\\200\\256 end\\n' >&2
exit 3`,
    );
    const config = f.config({ preScriptLocation: pre });
    const ran = await runBin(["run", "--json", "--config", config]);
    const message = resultOf(ran.stdout).errors[0].message;
    assert.match(message, /stdout: café €/, message);
    assert.ok(!message.includes("\ufffd"), message);
    const log = f.read("log/vmsnap.jsonl");
    assert.ok(log.includes('"line":"café €"'), "the log has the whole line");
    // Without --json the verdict goes to the terminal: no ESC, BEL or bidi override in it.
    const human = await runBin(["run", "--config", config]);
    assert.equal(human.code, 1);
    assert.match(human.stderr, /stderr: title\\x1b\]0;pwned\\x07 clear\\x1b\[2J bidi \\u202e end/);
    // deno-lint-ignore no-control-regex
    assert.ok(!/[\x00-\x08\x0b-\x1f\x7f\u202e]/.test(human.stderr), JSON.stringify(human.stderr));
    assert.match(human.stderr, /stdout: café €/);
  } finally {
    f.cleanup();
  }
});

Deno.test("a timeout kills descendants that left the group and cleared their environment (setsid env -i, su -l)", async () => {
  const f = runFixture();
  const marker = `sleep 3${Date.now() % 100000}`;
  try {
    const pre = f.script(
      "pre.sh",
      `setsid env -i /bin/sh -c '${marker}1; true' &
su -l nobody -s /bin/sh -c '${marker}2; true' &
echo started; wait`,
    );
    const ran = await runBin([
      "run",
      "--json",
      "--config",
      f.config({ preScriptLocation: pre, timeoutInSeconds: 1 }),
    ]);
    const result = resultOf(ran.stdout);
    assert.deepEqual(codes(result), ["Pre-ScriptTimeout"], ran.stdout);
    assert.match(result.errors[0].message, /were killed \(tracked in their own cgroup\)/);
    assert.equal(result.plugins[0].quiesce.facts.attempts[0].tracking, "cgroup");
    assert.doesNotMatch(result.errors[0].message, /could not be killed/);
    for (const n of [1, 2]) {
      assert.equal(spawnSync("pgrep", ["-f", `${marker}${n}`]).status, 1, `${marker}${n} survived`);
    }
  } finally {
    spawnSync("pkill", ["-KILL", "-f", marker]);
    f.cleanup();
  }
});

Deno.test("check's readable report never sends a control character to the terminal (config values are escaped)", async () => {
  const { dir, cleanup } = secureDir("scripts-");
  try {
    const config = putConfig(dir, {
      stateDir: join(dir, "state"),
      log: { file: join(dir, "log", "vmsnap.jsonl") },
      fsFreezeEnabled: false,
      preScriptLocation: `${dir}/pre\u001b]0;pwned\u0007\u001b[2J.sh`,
    });
    const ran = await runBin(["check", "--config", config]);
    assert.equal(ran.code, 1);
    assert.match(ran.stdout, /pre\\x1b\]0;pwned\\x07\\x1b\[2J\.sh does not exist/);
    assert.ok(
      // deno-lint-ignore no-control-regex
      !/[\x00-\x08\x0b-\x1f\x7f]/.test(ran.stdout + ran.stderr),
      JSON.stringify(ran.stdout),
    );
    // --json stays JSON: the path is there, escaped by JSON itself.
    const report = json<{ problems: { message: string }[] }>(
      await runBin(["check", "--json", "--config", config]),
    );
    assert.ok(report.problems[0].message.includes("pre\u001b]0;pwned"));
  } finally {
    cleanup();
  }
});

Deno.test("a snapshot command blocked on the frozen filesystem: killed as far as possible, reported as still running, and the run goes on to thaw", async () => {
  const f = runFixture();
  try {
    // Writes to the frozen mount: uninterruptible until the thaw, so SIGKILL cannot end it.
    const snap = f.script("blocked-snap.sh", `echo writing; echo x > "${f.mp}/blocked"`);
    const started = performance.now();
    const ran = await runBin([
      "run",
      "--json",
      "--config",
      f.config({ snapshot: { command: [snap], timeoutInSeconds: 1 } }),
    ], { timeoutMs: 60_000 });
    const result = resultOf(ran.stdout);
    assert.ok(
      performance.now() - started < 30_000,
      "the run did not wait for an exit that never comes",
    );
    const error = result.errors.find((e: { code: string }) => e.code === "SnapshotTimeout");
    assert.ok(error, ran.stdout);
    assert.match(
      error.message,
      /1 could not be killed and are still running: pid \d+ \(.*state D\)/,
    );
    assert.equal(result.snapshotTaken, false);
    assert.ok(result.freeze.mounts.every((m: { thawed?: boolean }) => m.thawed !== false));
    // Thawed: the writer finished (or died), and nothing of it is left.
    await waitFor("the blocked writer to end", () => spawnSync("pgrep", ["-f", snap]).status === 1);
  } finally {
    f.cleanup();
  }
});
