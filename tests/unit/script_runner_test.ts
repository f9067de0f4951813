import assert from "node:assert/strict";
import { join } from "node:path";
import { put, secureDir } from "../helpers.ts";
import { runScriptSafely } from "../../plugins/script_runner.ts";

Deno.test("runScriptSafely: whatever the runner throws becomes a coded failed step, never a throw", async () => {
  const { dir, cleanup } = secureDir("runner-");
  try {
    const path = put(join(dir, "post.sh"), "#!/bin/sh\necho hi\n", 0o700);
    const result = await runScriptSafely({
      plugin: "app",
      phase: "post",
      step: { path, params: [], retries: 0, key: "postScriptLocation" },
      timeoutInSeconds: 5,
      env: {
        runId: "r",
        stateDir: dir,
        configFile: join(dir, "c.json"),
        signal: new AbortController().signal,
        log: () => {
          throw new Error("the log exploded");
        },
      },
    });
    assert.equal(result.ok, false);
    assert.equal(result.errors[0].code, "Post-ScriptExecutionFailed");
    assert.match(result.errors[0].message, /could not be run: the log exploded/);
  } finally {
    cleanup();
  }
});
