/**
 * Azure drop-in fidelity (issue 11), through the compiled binary: configs that
 * Azure's framework runs, run under vmsnap too, with a coded warning for what
 * Azure tolerates; `check` lists the same findings as problems. Nothing here
 * freezes: these runs set `fsFreezeEnabled: false`.
 */
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { json, put, putConfig, resultOf, runBin, secureDir } from "../helpers.ts";

interface Finding {
  lenient?: boolean;
  code: string;
  message: string;
  path?: string;
  line?: number;
}
interface Report {
  ok: boolean;
  problems: Finding[];
  warnings: Finding[];
  checks: { name: string; ok: boolean; detail: string }[];
}
interface Result {
  status: string;
  exitCode: number;
  snapshotTaken: boolean;
  errors: Finding[];
  warnings: Finding[];
}

/** A world for a run that freezes nothing: a pre-script that records its argv, a snapshot command. */
function world() {
  const { dir, cleanup } = secureDir("azure-");
  const argv = join(dir, "argv.txt");
  const pre = put(
    join(dir, "pre.sh"),
    `#!/bin/sh\nfor a in "$@"; do printf '%s\\n' "$a"; done > "${argv}"\n`,
    0o700,
  );
  const snap = put(join(dir, "snap.sh"), `#!/bin/sh\ntouch "${join(dir, "snapped")}"\n`, 0o700);
  const keys = {
    fsFreezeEnabled: false,
    snapshot: { command: [snap] },
    log: { file: join(dir, "log", "vmsnap.jsonl") },
    stateDir: join(dir, "state"),
  };
  return { dir, argv, pre, keys, cleanup };
}

Deno.test("configs Azure runs: run goes on with a coded warning for each, check lists them as problems", async () => {
  const w = world();
  try {
    // As an admin migrating from Azure might have it: a comment key, a timeout above Azure's cap,
    // a negative retry count, params that are not strings, and a key given twice.
    const text = `{
  "comment": "owned by the DBA team",
  "preScriptLocation": "${w.pre}",
  "preScriptParams": [1, true, "x", 2.50, null],
  "preScriptNoOfRetries": -1,
  "timeoutInSeconds": 30,
  "timeoutInSeconds": 3600,
  "fsFreezeEnabled": false,
  "snapshot": ${JSON.stringify(w.keys.snapshot)},
  "log": ${JSON.stringify(w.keys.log)},
  "stateDir": "${w.keys.stateDir}"
}`;
    const file = putConfig(w.dir, text);
    const expected = [
      ["UnknownConfigKey", "comment"],
      ["ScriptParamNotString", "preScriptParams[0]"],
      ["ScriptParamNotString", "preScriptParams[1]"],
      ["ScriptParamNotString", "preScriptParams[3]"],
      ["ScriptParamNotString", "preScriptParams[4]"],
      ["ConfigValueClamped", "preScriptNoOfRetries"],
      ["DuplicateConfigKey", "timeoutInSeconds"],
      ["ConfigValueClamped", "timeoutInSeconds"],
    ];
    const ran = await runBin(["run", "--json", "--config", file]);
    const result = resultOf<Result>(ran.stdout);
    assert.equal(ran.code, 0, ran.stdout);
    assert.equal(result.snapshotTaken, true);
    assert.deepEqual(result.errors, []);
    const sorted = (list: string[][]) => [...list].sort((a, b) => a.join().localeCompare(b.join()));
    assert.deepEqual(
      sorted(result.warnings.map((w) => [w.code, w.path ?? ""])),
      sorted(expected),
    );
    // Azure passes str(param): "1", "True", "2.5", "None".
    assert.equal(readFileSync(w.argv, "utf8"), "1\nTrue\nx\n2.5\nNone\n");
    // The log's result record carries the same warnings.
    const log = readFileSync(w.keys.log.file, "utf8").trim().split("\n").map((l) => JSON.parse(l));
    const logged = log.find((r) => r.event === "result");
    assert.deepEqual(
      sorted(logged.warnings.map((w: Finding) => [w.code, w.path ?? ""])),
      sorted(expected),
    );
    const clamp = result.warnings.find((w) =>
      w.code === "ConfigValueClamped" && w.path === "timeoutInSeconds"
    )!;
    assert.match(clamp.message, /:7:\d+: timeoutInSeconds is 3600; .*1800.*uses 1800/);

    const checked = await runBin(["check", "--json", "--config", file]);
    const report = json<Report>(checked);
    assert.equal(checked.code, 1, checked.stdout);
    assert.deepEqual(sorted(report.problems.map((p) => [p.code, p.path ?? ""])), sorted(expected));
    assert.ok(report.problems.every((p) => p.lenient), "each marked: run would go on and warn");
  } finally {
    w.cleanup();
  }
});

Deno.test("what stays refused: vmsnap's own keys misspelt or unknown inside vmsnap's objects, prototype names", async () => {
  const w = world();
  try {
    const cases: [Record<string, unknown>, string, string][] = [
      // A near-miss of a vmsnap key: ignoring it would change what is frozen or snapshotted.
      [{ freez: { mounts: ["/data"] } }, "UnknownConfigKey", "freez"],
      [
        { snapshot: { command: w.keys.snapshot.command, timeout: 5 } },
        "UnknownConfigKey",
        "snapshot.timeout",
      ],
      [
        { plugins: [{ type: "script", pre: w.pre, retry: 1 }] },
        "UnknownConfigKey",
        "plugins[0].retry",
      ],
      [{ preScriptNoOfRetries: 1.5 }, "InvalidConfigValue", "preScriptNoOfRetries"],
      [{ timeoutInSeconds: 0 }, "InvalidConfigValue", "timeoutInSeconds"],
      [{ preScriptParams: [["a"]] }, "InvalidConfigType", "preScriptParams[0]"],
    ];
    for (const [keys, code, path] of cases) {
      const file = putConfig(w.dir, { ...w.keys, preScriptLocation: w.pre, ...keys }, "bad.json");
      const ran = await runBin(["run", "--json", "--config", file]);
      const result = resultOf<Result>(ran.stdout);
      assert.equal(ran.code, 2, `${path}: ${ran.stdout}`);
      assert.ok(result.errors.some((e) => e.code === code), `${path}: ${ran.stdout}`);
      assert.equal(result.snapshotTaken, false);
    }
    // Keys named like Object.prototype members are unknown keys like any other.
    const file = putConfig(
      w.dir,
      `{"constructor": 1, "toString": "x", "__proto__": {"fsFreezeEnabled": true}, "freeze": {"hasOwnProperty": 1}, "preScriptLocation": "${w.pre}", "fsFreezeEnabled": false, "snapshot": ${
        JSON.stringify(w.keys.snapshot)
      }, "stateDir": "${w.keys.stateDir}", "log": ${JSON.stringify(w.keys.log)}}`,
      "proto.json",
    );
    const checked = json<Report>(await runBin(["check", "--json", "--config", file]));
    assert.deepEqual(
      checked.problems.map((p) => `${p.code} ${p.path}`).sort(),
      [
        "UnknownConfigKey __proto__",
        "UnknownConfigKey constructor",
        "UnknownConfigKey freeze.hasOwnProperty",
        "UnknownConfigKey toString",
      ],
    );
  } finally {
    w.cleanup();
  }
});

Deno.test("the config is read safely: a device, a FIFO, a directory, an oversized file give one coded problem each, at once", async () => {
  const w = world();
  try {
    const fifo = join(w.dir, "fifo.json");
    execFileSync("mkfifo", ["-m", "600", fifo]);
    const big = putConfig(w.dir, `{"comment": "${"x".repeat(2 << 20)}"}`, "big.json");
    const cases: [string, string, RegExp][] = [
      ["/dev/zero", "ConfigFileNotRegular", /\/dev\/zero is a character device, not a config file/],
      [fifo, "ConfigFileNotRegular", /is a FIFO \(named pipe\), not a config file/],
      [w.dir, "ConfigFileNotRegular", /is a directory, not a config file/],
      [big, "IncorrectJSONConfigFile", /is 2097\d+ bytes; a config is at most 1048576 bytes/],
    ];
    for (const [file, code, message] of cases) {
      const checked = await runBin(["check", "--json", "--config", file], { timeoutMs: 15_000 });
      assert.equal(checked.signal, null, `check ${file} did not finish`);
      assert.equal(checked.code, 1, file);
      const { problems } = json<Report>(checked);
      assert.deepEqual(problems.map((p) => p.code), [code], `${file}: ${checked.stdout}`);
      assert.match(problems[0].message, message);
      const ran = await runBin(["run", "--json", "--config", file], { timeoutMs: 15_000 });
      assert.equal(ran.signal, null, `run ${file} did not finish`);
      assert.equal(ran.code, 2, file);
      assert.deepEqual(resultOf<Result>(ran.stdout).errors.map((e) => e.code), [code], file);
    }
  } finally {
    w.cleanup();
  }
});

Deno.test("syntax errors are said in words, not the parser's names; an empty file is called empty", async () => {
  const w = world();
  try {
    const cases: [string, RegExp][] = [
      [
        '{\n  "fsFreezeEnabled": true\n  "timeoutInSeconds": 30\n}',
        /:3:3: invalid JSON: a comma is missing between two entries/,
      ],
      ["", /: the file is empty; a config is a JSON object/],
      ["  // nothing but a comment\n", /: the file is empty; a config is a JSON object/],
      ['{"fsFreezeEnabled": flase}', /:1:21: invalid JSON: flase is not a JSON value/],
      ['{"pluginName": "x}', /invalid JSON: a string is not closed/],
    ];
    for (const [text, message] of cases) {
      const file = putConfig(w.dir, text, "syntax.json");
      const checked = await runBin(["check", "--json", "--config", file]);
      const [problem] = json<Report>(checked).problems;
      assert.equal(problem.code, "IncorrectJSONConfigFile", text);
      assert.match(problem.message, message);
      assert.doesNotMatch(
        problem.message,
        /Expected|InvalidSymbol|UnexpectedEnd|InvalidCharacter/,
        problem.message,
      );
    }
  } finally {
    w.cleanup();
  }
});

Deno.test("check without a snapshot method: a NoSnapshotMethod warning, not an ok", async () => {
  const w = world();
  try {
    const file = putConfig(w.dir, { ...w.keys, snapshot: undefined, preScriptLocation: w.pre });
    const checked = await runBin(["check", "--json", "--config", file]);
    assert.equal(checked.code, 0, checked.stdout);
    const report = json<Report>(checked);
    const warning = report.warnings.find((x) => x.code === "NoSnapshotMethod");
    assert.ok(warning, checked.stdout);
    assert.match(warning.message, /--snapshot-command.*--external/);
    const text = await runBin(["check", "--config", file]);
    assert.match(text.stdout, /^ {2}warn {2}snapshot: none configured/m);
    assert.match(text.stdout, /\[NoSnapshotMethod\]/);
    // With a snapshot method in the config, there is nothing to warn about.
    for (const snapshot of [w.keys.snapshot, { external: {} }]) {
      const given = putConfig(w.dir, { ...w.keys, snapshot, preScriptLocation: w.pre }, "m.json");
      const report = json<Report>(await runBin(["check", "--json", "--config", given]));
      assert.ok(
        !report.warnings.some((x) => x.code === "NoSnapshotMethod"),
        JSON.stringify(snapshot),
      );
    }
  } finally {
    w.cleanup();
  }
});
