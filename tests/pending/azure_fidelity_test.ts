/**
 * Issue 20, the Azure drop-in run side by side with Azure's own code (items
 * 6-10), through the compiled binary. Pending: each asserts what the issue
 * asks for and fails until the fix lands (run with
 * `deno test -A tests/pending/azure_fidelity_test.ts` after a build).
 *
 * What Azure does is read from its code (research: /work/tools/research/agents.md):
 * `ScriptRunner.get_config` takes each key as `json.load` gives it, with no
 * type check; `pre_script` runs `['sh', location] + [str(p) for p in params]`
 * (iterating whatever params is) and polls every 3 s until
 * `pollTotalCount = timeoutInSeconds / 3`; `FreezeSnapshotter` freezes when
 * `if self.g_fsfreeze_on:` (Python truthiness); `handle.py` takes no snapshot
 * when `g_fsfreeze_on == False and preResult.anyScriptFailed`.
 *
 * The runs freeze only the fixture's loop mount (`freeze.mounts` explicit);
 * no test here uses a snapshot method from the command line, so the
 * "unusable config" fallback (which freezes "auto") is never reached.
 */
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { json, put, putConfig, resultOf, ROOT, runBin } from "../helpers.ts";
import { type RunFixture, runFixture } from "../run_fixture.ts";
import { agentCall } from "../hook_agent.ts";

const options = { sanitizeResources: false, sanitizeOps: false };

interface Finding {
  code: string;
  message: string;
  path?: string;
}
interface RunOutcome {
  exitCode: number;
  status: string;
  snapshotTaken: boolean;
  errors: Finding[];
  warnings: Finding[];
  freeze: { mounts: { mountPoint: string; frozen?: boolean }[] };
}

/** A pre and a post script that record their argv (one line each), and a snapshot that says so. */
function azureScripts(f: RunFixture, body = { pre: "", post: "" }) {
  const record = (name: string) =>
    `for a in "$@"; do printf '%s\\n' "$a"; done > "${f.path(`${name}.argv`)}"`;
  return {
    pre: f.script("azure-pre.sh", `${record("pre")}\n${body.pre}`),
    post: f.script("azure-post.sh", `${record("post")}\n${body.post}`),
    snap: f.script("azure-snap.sh", `touch "${f.path("snapped")}"`),
    argv: (name: "pre" | "post") =>
      f.exists(`${name}.argv`) ? f.read(`${name}.argv`).split("\n").slice(0, -1) : undefined,
    reset() {
      for (const name of ["pre.argv", "post.argv", "snapped"]) {
        try {
          Deno.removeSync(f.path(name));
        } catch {
          // not there
        }
      }
    },
  };
}

/**
 * A config as an admin migrating from Azure has it: Azure's sample keys with
 * one value changed (spliced in as raw JSON text), vmsnap's keys for a test.
 */
function azureConfig(
  f: RunFixture,
  s: ReturnType<typeof azureScripts>,
  raw: Record<string, string>,
  name: string,
): string {
  const keys: Record<string, string> = {
    pluginName: '"ScriptRunner"',
    preScriptLocation: JSON.stringify(s.pre),
    postScriptLocation: JSON.stringify(s.post),
    preScriptParams: '["x"]',
    postScriptParams: '["y"]',
    preScriptNoOfRetries: "0",
    postScriptNoOfRetries: "0",
    timeoutInSeconds: "30",
    continueBackupOnFailure: "true",
    fsFreezeEnabled: "true",
    freeze: JSON.stringify({ mounts: [f.mp] }),
    snapshot: JSON.stringify({ command: [s.snap] }),
    stateDir: JSON.stringify(f.path("state")),
    log: JSON.stringify({ file: f.path("log/vmsnap.jsonl") }),
    ...raw,
  };
  const text = `{\n${Object.entries(keys).map(([k, v]) => `  "${k}": ${v}`).join(",\n")}\n}\n`;
  return putConfig(f.dir, text, name);
}

/** One value Azure runs with, and what Azure's code does with it. */
interface AzureCase {
  raw: Record<string, string>;
  /** The argv Azure gives the pre-script (`str()` of each item of what it iterates). */
  preArgv: string[];
  /** Whether Azure freezes (`if g_fsfreeze_on:`). */
  freezes: boolean;
}

const CASES: AzureCase[] = [
  { raw: { pluginName: '""' }, preArgv: ["x"], freezes: true },
  { raw: { preScriptNoOfRetries: "true" }, preArgv: ["x"], freezes: true },
  { raw: { preScriptNoOfRetries: "null" }, preArgv: ["x"], freezes: true },
  { raw: { preScriptNoOfRetries: '"2"' }, preArgv: ["x"], freezes: true },
  { raw: { postScriptNoOfRetries: "1.5" }, preArgv: ["x"], freezes: true },
  { raw: { timeoutInSeconds: "2.5" }, preArgv: ["x"], freezes: true },
  { raw: { timeoutInSeconds: "true" }, preArgv: ["x"], freezes: true },
  // `for param in "abc"` iterates the characters.
  { raw: { preScriptParams: '"abc"' }, preArgv: ["a", "b", "c"], freezes: true },
  // str() of a list and of a dict, as Python prints them.
  {
    raw: { preScriptParams: '[["a", 1], {"k": true}]' },
    preArgv: ["['a', 1]", "{'k': True}"],
    freezes: true,
  },
  // A non-empty string is true to Python: Azure freezes with "false" in quotes.
  { raw: { fsFreezeEnabled: '"false"' }, preArgv: ["x"], freezes: true },
  { raw: { fsFreezeEnabled: "0" }, preArgv: ["x"], freezes: false },
  { raw: { fsFreezeEnabled: "null" }, preArgv: ["x"], freezes: false },
  { raw: { fsFreezeEnabled: '""' }, preArgv: ["x"], freezes: false },
];

Deno.test({
  ...options,
  name:
    "issue 20 item 7: values Azure runs with run both scripts under vmsnap too, read by Python's rules, with a warning",
  fn: async (t) => {
    const f = runFixture();
    const s = azureScripts(f);
    try {
      for (const [i, c] of CASES.entries()) {
        const [key, value] = Object.entries(c.raw)[0];
        await t.step(`${key}: ${value}`, async () => {
          s.reset();
          const config = azureConfig(f, s, c.raw, `case-${i}.json`);
          const ran = await runBin(["run", "--json", "--config", config]);
          const result = resultOf<RunOutcome>(ran.stdout);
          assert.equal(result.exitCode, 0, `Azure runs both scripts and snapshots:\n${ran.stdout}`);
          assert.deepEqual(s.argv("pre"), c.preArgv, "the pre-script ran with Azure's arguments");
          assert.deepEqual(s.argv("post"), ["y"], "the post-script ran");
          assert.ok(f.exists("snapped"), "the snapshot was taken");
          assert.ok(
            result.warnings.some((w) => (w.path ?? "").startsWith(key)),
            `a coded warning names ${key}: ${JSON.stringify(result.warnings)}`,
          );
          const frozen = result.freeze.mounts.some((m) => m.mountPoint === f.mp && m.frozen);
          assert.equal(
            frozen,
            c.freezes,
            `fsFreezeEnabled as Azure reads it: ${c.freezes ? "freeze" : "no freeze"}`,
          );
        });
      }
      await t.step(
        "the same values through Azure's own invocation (sh vmsnap-pre.sh)",
        async () => {
          // Azure's ScriptRunner runs ['sh', preScriptLocation] with stdout and stderr piped.
          const prefix = join(f.dir, "root-azure");
          const config = azureConfig(
            f,
            s,
            { preScriptNoOfRetries: '"2"', timeoutInSeconds: "true", fsFreezeEnabled: "0" },
            "hook.json",
          );
          const installed = await runBin([
            "install",
            "--for",
            "azure",
            "--root",
            prefix,
            "--config",
            config,
          ]);
          assert.equal(installed.code, 0, installed.stdout + installed.stderr);
          s.reset();
          const pre = await agentCall(["sh", join(prefix, "etc/azure/vmsnap-pre.sh")]);
          const post = await agentCall(["sh", join(prefix, "etc/azure/vmsnap-post.sh")]);
          assert.equal(pre.code, 0, pre.stdout + pre.stderr);
          assert.equal(post.code, 0, post.stdout + post.stderr);
          assert.deepEqual(s.argv("pre"), ["x"], "the admin's pre-script ran inside the hold");
          assert.deepEqual(s.argv("post"), ["y"], "the admin's post-script ran");
        },
      );
    } finally {
      f.cleanup();
    }
  },
});

Deno.test({
  ...options,
  name:
    "issue 20 item 8: a script with Windows line endings runs as Azure's `sh script` runs it; check says so",
  fn: async () => {
    const f = runFixture();
    try {
      // What a script edited on Windows looks like, every line ending in \r\n. The trailing
      // comments keep the \r out of the path and the exit status under `sh`, as for Azure.
      const crlf = (name: string) =>
        put(
          f.path(name),
          `#!/bin/sh\r\ntouch "${f.path(`${name}.ran`)}" #\r\nexit 0 #\r\n`,
          0o700,
        );
      const pre = crlf("pre-crlf.sh");
      const post = crlf("post-crlf.sh");
      const config = f.config({
        fsFreezeEnabled: false,
        preScriptLocation: pre,
        postScriptLocation: post,
      });
      assert.match(readFileSync(pre, "utf8"), /^#!\/bin\/sh\r\n/);
      const checked = await runBin(["check", "--json", "--config", config]);
      const report = json<{ problems: Finding[]; warnings: Finding[] }>(checked);
      assert.ok(
        [...report.problems, ...report.warnings].some((p) =>
          /CRLF|line ending|carriage return|\\r/i.test(p.message)
        ),
        `check names the Windows line endings: ${checked.stdout}`,
      );
      const ran = await runBin(["run", "--json", "--config", config]);
      const result = resultOf<RunOutcome>(ran.stdout);
      assert.ok(
        f.exists("pre-crlf.sh.ran"),
        `the pre-script ran (Azure: sh script):\n${ran.stdout}`,
      );
      assert.ok(f.exists("post-crlf.sh.ran"), "the post-script ran");
      assert.equal(result.exitCode, 0, ran.stdout);
      assert.ok(
        result.warnings.some((w) => /CRLF|line ending|carriage return/i.test(w.message)),
        `a warning names the line ending: ${JSON.stringify(result.warnings)}`,
      );
    } finally {
      f.cleanup();
    }
  },
});

/** The paragraphs of a document. */
const paragraphs = (path: string) => readFileSync(join(ROOT, path), "utf8").split(/\n\s*\n/);

Deno.test({
  ...options,
  name:
    "issue 20 item 9: fsFreezeEnabled false and a failed script: no snapshot after a failed pre, a failed backup after a failed post",
  fn: async (t) => {
    const f = runFixture();
    try {
      for (const off of ["false", "0"]) {
        await t.step(`fsFreezeEnabled ${off}, the pre-script fails`, async () => {
          const s = azureScripts(f, { pre: "exit 3", post: "" });
          s.reset();
          const config = azureConfig(f, s, { fsFreezeEnabled: off }, `pre-fails-${off}.json`);
          const ran = await runBin(["run", "--json", "--config", config]);
          const result = resultOf<RunOutcome>(ran.stdout);
          // handle.py: if g_fsfreeze_on == False and preResult.anyScriptFailed: dobackup = False
          assert.equal(result.snapshotTaken, false, `no snapshot:\n${ran.stdout}`);
          assert.ok(!f.exists("snapped"), "the snapshot command did not run");
          assert.equal(result.exitCode, 2, "the backup failed");
          assert.deepEqual(s.argv("post"), ["y"], "the post-script still ran (handle.py runs it)");
        });
      }
      await t.step("fsFreezeEnabled false, the post-script fails", async () => {
        const s = azureScripts(f, { pre: "", post: "exit 3" });
        s.reset();
        const config = azureConfig(f, s, { fsFreezeEnabled: "false" }, "post-fails.json");
        const ran = await runBin(["run", "--json", "--config", config]);
        const result = resultOf<RunOutcome>(ran.stdout);
        // handle.py: if g_fsfreeze_on == False and postResult.anyScriptFailed: dobackup = False
        assert.equal(result.snapshotTaken, true, "the snapshot was taken before the post-script");
        assert.equal(result.exitCode, 2, `the backup is reported failed:\n${ran.stdout}`);
        assert.equal(result.status, "failed");
      });
      await t.step("docs/azure-migration.md states the rule", () => {
        assert.ok(
          paragraphs("docs/azure-migration.md").some((p) =>
            /fsFreezeEnabled/.test(p) && /pre-?script/i.test(p) &&
            /no snapshot|not taken|takes no snapshot/i.test(p)
          ),
          "a paragraph says: fsFreezeEnabled false and a failed pre-script means no snapshot",
        );
      });
    } finally {
      f.cleanup();
    }
  },
});

Deno.test({
  ...options,
  name:
    "issue 20 item 10: timeoutInSeconds 1 and a 2 s script: Azure's 3-second poll lets it finish; vmsnap matches or documents it",
  fn: async () => {
    const f = runFixture();
    try {
      const s = azureScripts(f, { pre: "sleep 2", post: "" });
      const config = azureConfig(f, s, { timeoutInSeconds: "1" }, "poll.json");
      const ran = await runBin(["run", "--json", "--config", config]);
      const result = resultOf<RunOutcome>(ran.stdout);
      const matched = result.exitCode === 0 && result.errors.length === 0;
      const documented = paragraphs("docs/azure-migration.md").some((p) =>
        /poll/i.test(p) && /3[- ]?s(econd)?|three seconds/i.test(p) && /timeoutInSeconds/.test(p)
      );
      assert.ok(
        matched || documented,
        `a 2 s script with timeoutInSeconds 1 timed out under vmsnap and docs/azure-migration.md does not list Azure's 3-second poll:\n${ran.stdout}`,
      );
    } finally {
      f.cleanup();
    }
  },
});
