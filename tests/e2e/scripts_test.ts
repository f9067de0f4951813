/**
 * The script plugin end to end, through the compiled binary: how scripts are
 * started (no `#!` line, interpreters), what their output becomes, and what a
 * timeout really kills. Only the fixture's loop filesystem is ever frozen.
 */
import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { join } from "node:path";
import { codes, json, put, putConfig, resultOf, runBin, secureDir } from "../helpers.ts";
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
