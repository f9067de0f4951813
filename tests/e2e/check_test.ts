/**
 * `vmsnap check` end to end, through the compiled binary.
 */
import assert from "node:assert/strict";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { json, put, putConfig, runBin, secureDir } from "../helpers.ts";
import { makeLoopFs } from "../loop.ts";
import { PERMISSION_CASES } from "../permission_cases.ts";
import { readFileSync } from "node:fs";
import { ROOT } from "../helpers.ts";

interface Report {
  ok: boolean;
  problems: { code: string; message: string; path?: string; line?: number; column?: number }[];
  warnings: { code: string; path?: string }[];
  freezeTargets: { mountPoint: string; device: string; fsType: string }[];
  skippedMounts: { mountPoint: string; reason: string }[];
  config: Record<string, unknown> | null;
}

const base = (dir: string) => ({
  stateDir: join(dir, "state"),
  log: { file: join(dir, "log", "vmsnap.jsonl") },
});

Deno.test("vmsnap --version and vmsnap version print vmsnap <semver>", async () => {
  for (const args of [["--version"], ["version"], ["-V"]]) {
    const ran = await runBin(args);
    assert.equal(ran.code, 0);
    assert.match(ran.stdout, /^vmsnap \d+\.\d+\.\d+\n$/);
  }
});

Deno.test("--help on every command, and help with no command", async () => {
  for (
    const args of [[], ["--help"], ["help"], ["check", "--help"], ["run", "--help"], [
      "version",
      "--help",
    ], ["help", "run"]]
  ) {
    const ran = await runBin(args);
    assert.equal(ran.code, 0, args.join(" "));
    assert.match(ran.stdout, /Usage: vmsnap/);
  }
});

Deno.test("usage errors exit 64 and suggest the nearest word", async () => {
  const cases: [string[], RegExp][] = [
    [["chek"], /Did you mean "check"\?/],
    [["check", "--jsn"], /Did you mean --json\?/],
    [["check", "--log-level", "verbose"], /--log-level must be one of/],
    [["run", "--snapshot-command"], /needs the command's argv/],
  ];
  for (const [args, message] of cases) {
    const ran = await runBin(args);
    assert.equal(ran.code, 64, args.join(" "));
    assert.match(ran.stderr, message);
  }
});

for (const c of PERMISSION_CASES) {
  Deno.test(`permission matrix (binary): ${c.name}`, async () => {
    const { dir, cleanup } = secureDir();
    try {
      const ran = await runBin(["check", "--json", "--config", c.setup(dir)]);
      const report = json<Report>(ran);
      if (c.expect === null) {
        assert.deepEqual(report.problems, []);
        assert.equal(ran.code, 0);
      } else {
        assert.equal(ran.code, 1);
        const hit = report.problems.find((p) => p.code === c.expect);
        assert.ok(hit, `expected ${c.expect}, got ${ran.stdout}`);
        if (c.mentions) assert.ok(hit.message.includes(c.mentions(dir)), hit.message);
      }
    } finally {
      cleanup();
    }
  });
}

Deno.test("a valid root-owned 0600 config: exit 0, the normalized config, freeze targets", async () => {
  const { dir, cleanup } = secureDir();
  try {
    const pre = put(join(dir, "pre.sh"), "#!/bin/sh\n", 0o700);
    const file = putConfig(dir, {
      ...base(dir),
      preScriptLocation: pre,
      preScriptParams: ["--quick"],
    });
    const ran = await runBin(["check", "--json", "--config", file]);
    const report = json<Report>(ran);
    assert.equal(ran.code, 0, ran.stdout);
    assert.equal(report.ok, true);
    assert.deepEqual(report.problems, []);
    assert.ok(report.freezeTargets.length > 0);
    assert.ok(report.skippedMounts.some((m) => m.mountPoint === "/proc"));
    const config = report.config as {
      plugins: { name: string; pre: { params: string[] } }[];
      fsFreezeEnabled: boolean;
    };
    assert.equal(config.fsFreezeEnabled, true);
    assert.deepEqual(config.plugins[0].pre.params, ["--quick"]);
  } finally {
    cleanup();
  }
});

Deno.test("Azure's sample config, byte for byte with scripts set, passes and its placeholders are pointed out", async () => {
  const { dir, cleanup } = secureDir();
  try {
    const pre = put(join(dir, "pre.sh"), "#!/bin/sh\n", 0o700);
    const post = put(join(dir, "post.sh"), "#!/bin/sh\n", 0o700);
    const sample = readFileSync(join(ROOT, "tests", "fixtures", "azure_sample.json"), "utf8")
      .replace('"preScriptLocation" : ""', `"preScriptLocation" : "${pre}"`)
      .replace('"postScriptLocation" : ""', `"postScriptLocation" : "${post}"`);
    const file = put(join(dir, "VMSnapshotScriptPluginConfig.json"), sample, 0o600);
    // The sample does not name vmsnap's directories: use the defaults, as an admin would.
    const ran = await runBin(["check", "--json"], { env: { VMSNAP_CONFIG: file } });
    const report = json<Report>(ran);
    assert.equal(ran.code, 0, ran.stdout);
    // One warning per key that holds placeholders, not one per placeholder.
    assert.deepEqual(
      report.warnings.filter((w) => w.code === "EmptyScriptParam").map((w) => w.path),
      ["preScriptParams", "postScriptParams"],
    );
    const text = await runBin(["check", "--config", file]);
    assert.equal(text.code, 0);
    assert.match(text.stdout, /ok {4}plugin ScriptRunner \(script\): ready/);
    assert.match(text.stdout, /\[EmptyScriptParam\]/);
    // The two placeholders' keys, and no snapshot method configured.
    assert.match(text.stdout, /OK: no problems, 3 warning\(s\)\./);
  } finally {
    cleanup();
  }
});

Deno.test("broken configs: exit 1 with the right code, JSON path, line and column", async () => {
  const cases: {
    name: string;
    text: string;
    code: string;
    path?: string;
    line?: number;
    column?: number;
  }[] = [
    {
      name: "syntax",
      text: '{\n  "timeoutInSeconds": 30,\n  "fsFreezeEnabled": flase\n}',
      code: "IncorrectJSONConfigFile",
      line: 3,
      column: 22,
    },
    {
      name: "wrong type",
      text: '{\n\n  "timeoutInSeconds": "30"\n}',
      code: "InvalidConfigType",
      path: "timeoutInSeconds",
      line: 3,
      column: 23,
    },
    {
      name: "out of range",
      text: '{"timeoutInSeconds": 0}',
      code: "InvalidConfigValue",
      path: "timeoutInSeconds",
      line: 1,
      column: 22,
    },
    {
      name: "unknown key",
      text: '{\n "fsFreezeEnable": true}',
      code: "UnknownConfigKey",
      path: "fsFreezeEnable",
      line: 2,
      column: 2,
    },
    {
      name: "duplicate key",
      text: '{"pluginName": "a",\n "pluginName": "b"}',
      code: "DuplicateConfigKey",
      path: "pluginName",
      line: 1,
      column: 2,
    },
    {
      name: "duplicate plugin",
      text:
        '{"plugins": [{"type": "script", "name": "x", "pre": "/a"},\n {"type": "script", "name": "x", "pre": "/b"}]}',
      code: "DuplicatePluginName",
      path: "plugins[1].name",
      line: 2,
      column: 29,
    },
    {
      name: "relative path",
      text: '{"postScriptLocation": "post.sh"}',
      code: "RelativePath",
      path: "postScriptLocation",
      line: 1,
      column: 24,
    },
    {
      name: "unknown plugin type",
      text: '{"plugins": [{"type": "mysq"}]}',
      code: "UnknownPluginType",
      path: "plugins[0].type",
      line: 1,
      column: 23,
    },
    { name: "empty file", text: "", code: "IncorrectJSONConfigFile" },
    { name: "not an object", text: "[]", code: "IncorrectJSONConfigFile", line: 1, column: 1 },
  ];
  const { dir, cleanup } = secureDir();
  try {
    for (const c of cases) {
      const file = putConfig(dir, c.text, `${c.name.replace(/ /g, "-")}.json`);
      const ran = await runBin(["check", "--json", "--config", file]);
      assert.equal(ran.code, 1, c.name);
      const report = json<Report>(ran);
      const hit = report.problems.find((p) => p.code === c.code);
      assert.ok(hit, `${c.name}: expected ${c.code}, got ${ran.stdout}`);
      if (c.path) assert.equal(hit.path, c.path, c.name);
      if (c.line) assert.deepEqual([hit.line, hit.column], [c.line, c.column], c.name);
      assert.ok(hit.message.includes(file), `${c.name}: message names the file: ${hit.message}`);
    }
  } finally {
    cleanup();
  }
});

Deno.test("a config that is not UTF-8 names the line", async () => {
  const { dir, cleanup } = secureDir();
  try {
    const file = join(dir, "bad.json");
    writeFileSync(file, Buffer.from([0x7b, 0x0a, 0x22, 0xff, 0xfe, 0x22, 0x7d]), { mode: 0o600 });
    const ran = await runBin(["check", "--json", "--config", file]);
    assert.equal(ran.code, 1);
    const [problem] = json<Report>(ran).problems;
    assert.equal(problem.code, "IncorrectJSONConfigFile");
    assert.equal(problem.line, 2);
    assert.match(problem.message, /not valid UTF-8/);
  } finally {
    cleanup();
  }
});

Deno.test("a missing config: ConfigFileNotFound, exit 1, in text and JSON", async () => {
  const ran = await runBin(["check", "--json", "--config", "/etc/azure/does-not-exist.json"]);
  assert.equal(ran.code, 1);
  assert.equal(json<Report>(ran).problems[0].code, "ConfigFileNotFound");
  const text = await runBin(["check"], {
    env: { VMSNAP_CONFIG: "/etc/azure/does-not-exist.json" },
  });
  assert.equal(text.code, 1);
  assert.match(text.stdout, /\[ConfigFileNotFound\] .*does-not-exist\.json does not exist/);
});

Deno.test("the text report: one line per check, problems with their fix", async () => {
  const { dir, cleanup } = secureDir();
  try {
    const pre = put(join(dir, "pre.sh"), "#!/bin/sh\n", 0o755);
    const file = putConfig(dir, { ...base(dir), preScriptLocation: pre, timeoutInSeconds: 0 });
    const ran = await runBin(["check", "--config", file]);
    assert.equal(ran.code, 1);
    assert.match(ran.stdout, /^ {2}ok {4}config file permissions/m);
    assert.match(ran.stdout, /^ {2}FAIL {2}config values: 1 problem/m);
    assert.match(ran.stdout, /^ {2}FAIL {2}plugin ScriptRunner \(script\): 1 problem/m);
    assert.match(ran.stdout, /\[InsufficientPermissionforPre-Script\] .*mode 0755.*Fix: chmod 700/);
    assert.match(ran.stdout, /2 problems: fix them and run vmsnap check again\./);
  } finally {
    cleanup();
  }
});

Deno.test("freeze targets of real loop filesystems: listed, and a nested image ordered first", async () => {
  const { dir, cleanup } = secureDir();
  const outer = makeLoopFs({ dir, name: "outer", sizeMiB: 48 });
  let inner;
  try {
    // The inner filesystem's image lives on the outer filesystem, and it is mounted beside it.
    inner = makeLoopFs({ dir: outer.mountPoint, name: "inner", sizeMiB: 16 });
    const listed = putConfig(dir, {
      ...base(dir),
      freeze: { mounts: [outer.mountPoint, inner.mountPoint] },
    }, "listed.json");
    const report = json<Report>(await runBin(["check", "--json", "--config", listed]));
    assert.deepEqual(report.problems, []);
    assert.deepEqual(report.freezeTargets.map((t) => t.mountPoint), [
      outer.mountPoint,
      inner.mountPoint,
    ]);
    assert.ok(
      report.warnings.some((w) => w.code === "FreezeOrder" && w.path === "freeze.mounts[1]"),
      JSON.stringify(report.warnings),
    );

    const auto = putConfig(dir, { ...base(dir), freeze: { mounts: "auto" } }, "auto.json");
    const autoReport = json<Report>(await runBin(["check", "--json", "--config", auto]));
    const order = autoReport.freezeTargets.map((t) => t.mountPoint);
    assert.ok(
      order.includes(outer.mountPoint) && order.includes(inner.mountPoint),
      order.join(" "),
    );
    assert.ok(order.indexOf(inner.mountPoint) < order.indexOf(outer.mountPoint), order.join(" "));
    const target = autoReport.freezeTargets.find((t) => t.mountPoint === outer.mountPoint)!;
    assert.equal(target.fsType, "ext4");
    assert.match(target.device, /^7:\d+$/);

    const excluded = putConfig(
      dir,
      { ...base(dir), freeze: { exclude: [`${dir}/**`] } },
      "excluded.json",
    );
    const excludedReport = json<Report>(await runBin(["check", "--json", "--config", excluded]));
    assert.ok(!excludedReport.freezeTargets.some((t) => t.mountPoint.startsWith(dir)));
    assert.match(
      excludedReport.skippedMounts.find((m) => m.mountPoint === outer.mountPoint)!.reason,
      /excluded/,
    );
  } finally {
    inner?.cleanup();
    outer.cleanup();
    cleanup();
  }
});
