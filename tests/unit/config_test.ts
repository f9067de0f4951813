import assert from "node:assert/strict";
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { type LoadedConfig, parseConfig } from "../../src/config/config.ts";
import { PLUGINS } from "../../plugins/registry.ts";
import type { PluginSpec } from "../../src/config/plugin_spec.ts";
import type { Problem } from "../../src/errors.ts";
import type { ScriptConfig } from "../../plugins/script.ts";
import { ROOT } from "../helpers.ts";

const FILE = "/etc/azure/VMSnapshotScriptPluginConfig.json";
const SAMPLE = readFileSync(join(ROOT, "tests", "fixtures", "azure_sample.json"), "utf8");

/** Parses config text with the production plugin types. */
const parse = (text: string, file: string): LoadedConfig =>
  parseConfig(text, file, { plugins: PLUGINS });

function only(problems: Problem[]): Problem {
  assert.equal(
    problems.length,
    1,
    `expected one problem, got ${JSON.stringify(problems, null, 2)}`,
  );
  return problems[0];
}

Deno.test("Azure's sample config is accepted as is, with Azure's defaults", () => {
  const { config, problems, warnings } = parse(SAMPLE, FILE);
  assert.deepEqual(problems, []);
  assert.deepEqual(warnings, []); // no scripts set: the placeholder params are not passed anywhere
  assert.equal(config.pluginName, "ScriptRunner");
  assert.equal(config.continueBackupOnFailure, true);
  assert.equal(config.fsFreezeEnabled, true);
  assert.deepEqual(config.plugins, []);
  assert.deepEqual(config.freeze, {
    mounts: "auto",
    exclude: [],
    maxFrozenSeconds: 60,
    expediteRcu: false,
  });
  assert.deepEqual(config.log, { file: "/var/log/vmsnap/vmsnap.jsonl", level: "info" });
  assert.equal(config.stateDir, "/var/lib/vmsnap");
  assert.equal(config.snapshot, null);
});

Deno.test("Azure's sample with scripts set: one implicit script plugin, placeholders pointed out", () => {
  const text = SAMPLE.replace(
    '"preScriptLocation" : ""',
    '"preScriptLocation" : "/etc/azure/pre.sh"',
  )
    .replace('"postScriptLocation" : ""', '"postScriptLocation" : "/etc/azure/post.sh"');
  const { config, problems, warnings } = parse(text, FILE);
  assert.deepEqual(problems, []);
  const [plugin] = config.plugins as ScriptConfig[];
  assert.equal(plugin.name, "ScriptRunner");
  assert.equal(plugin.type, "script");
  assert.deepEqual(plugin.pre, {
    path: "/etc/azure/pre.sh",
    params: ["", ""],
    retries: 0,
    key: "preScriptLocation",
  });
  assert.equal(plugin.post?.path, "/etc/azure/post.sh");
  assert.equal(plugin.timeoutInSeconds, 30);
  assert.deepEqual(warnings.map((w) => [w.code, w.path, w.line]), [
    ["EmptyScriptParam", "preScriptParams", 5],
    ["EmptyScriptParam", "postScriptParams", 6],
  ]);
  assert.match(
    warnings[0].message,
    /preScriptParams holds 2 "" \(Azure's sample placeholders, at positions 0, 1\); .* Fix: remove them/,
  );
});

Deno.test("JSONC: comments and trailing commas are allowed", () => {
  const { problems, config } = parse(
    `// vmsnap config\n{\n  /* freeze off */ "fsFreezeEnabled": false, // really\n  "freeze": { "exclude": ["/boot",], },\n}\n`,
    FILE,
  );
  assert.deepEqual(problems, []);
  assert.equal(config.fsFreezeEnabled, false);
  assert.deepEqual(config.freeze.exclude, ["/boot"]);
});

Deno.test("a UTF-8 byte order mark is accepted", () => {
  assert.deepEqual(parse(`\ufeff{"fsFreezeEnabled": true}`, FILE).problems, []);
});

Deno.test("malformed JSON: IncorrectJSONConfigFile with line and column, every syntax error", () => {
  const { problems } = parse(
    `{\n  "timeoutInSeconds": 30\n  "fsFreezeEnabled": tru\n}`,
    FILE,
  );
  assert.ok(problems.length >= 2);
  assert.ok(problems.every((p) => p.code === "IncorrectJSONConfigFile"));
  assert.deepEqual([problems[0].line, problems[0].column], [3, 3]);
  assert.match(
    problems[0].message,
    /^\/etc\/azure\/VMSnapshotScriptPluginConfig\.json:3:3: invalid JSON: a comma is missing between two entries/,
  );
});

Deno.test("an empty file, a bare value and an array are not configs", () => {
  for (const text of ["", "   \n", "42", "[1]", '"x"', "null"]) {
    const p = only(parse(text, FILE).problems);
    assert.equal(p.code, "IncorrectJSONConfigFile", text);
  }
});

Deno.test("deep nesting is refused before the parser recurses", () => {
  const text = `{"freeze": ${"[".repeat(100_000)}${"]".repeat(100_000)}}`;
  const p = only(parse(text, FILE).problems);
  assert.equal(p.code, "IncorrectJSONConfigFile");
  assert.match(p.message, /nesting deeper than 32/);
});

Deno.test("wrong types name the path, the line, and a fix", () => {
  const { problems } = parse(
    `{\n "timeoutInSeconds": "30",\n "fsFreezeEnabled": "true",\n "preScriptParams": "x",\n "continueBackupOnFailure": 1\n}`,
    FILE,
  );
  assert.deepEqual(problems.map((p) => [p.code, p.path, p.line, p.column]), [
    ["InvalidConfigType", "timeoutInSeconds", 2, 22],
    ["InvalidConfigType", "fsFreezeEnabled", 3, 21],
    ["InvalidConfigType", "preScriptParams", 4, 21],
    ["InvalidConfigType", "continueBackupOnFailure", 5, 29],
  ]);
  assert.match(
    problems[0].message,
    /must be an integer from 1 to 1800, found "30" \(a string\)\. Fix: write 30 without quotes\./,
  );
  assert.match(problems[1].message, /Fix: write true without quotes/);
  assert.match(problems[2].message, /Fix: put it in a list: \["x"\]/);
});

Deno.test("out-of-range numbers", () => {
  const cases: [string, string][] = [
    ['"timeoutInSeconds": 0', "timeoutInSeconds"],
    ['"timeoutInSeconds": 2.5', "timeoutInSeconds"],
    ['"timeoutInSeconds": 1e400', "timeoutInSeconds"],
    ['"preScriptNoOfRetries": 1.5', "preScriptNoOfRetries"],
    ['"freeze": {"maxFrozenSeconds": 0}', "freeze.maxFrozenSeconds"],
    ['"plugins": [{"type": "script", "pre": "/a", "retries": -1}]', "plugins[0].retries"],
  ];
  for (const [text, path] of cases) {
    const p = only(parse(`{${text}}`, FILE).problems);
    assert.equal(p.code, "InvalidConfigValue", text);
    assert.equal(p.path, path);
  }
});

Deno.test("what Azure's framework clamps is clamped, as a lenient finding (item 3, item 7)", () => {
  const cases: [string, string, number][] = [
    ['"timeoutInSeconds": 1801', "timeoutInSeconds", 1800],
    ['"timeoutInSeconds": 86400', "timeoutInSeconds", 1800],
    ['"preScriptNoOfRetries": -1', "preScriptNoOfRetries", 0],
    ['"postScriptNoOfRetries": 99999999999999999999', "postScriptNoOfRetries", 100],
  ];
  for (const [text, path, value] of cases) {
    const loaded = parse(
      `{"preScriptLocation": "/a", "postScriptLocation": "/b",\n ${text}}`,
      FILE,
    );
    assert.deepEqual(loaded.problems, [], text);
    const p = only(loaded.lenient);
    assert.deepEqual([p.code, p.path, p.line], ["ConfigValueClamped", path, 2], text);
    assert.match(p.message, new RegExp(`uses ${value} \\(and warns\\)\\. Fix: write ${value}`));
    const [plugin] = loaded.config.plugins as ScriptConfig[];
    const got = path === "timeoutInSeconds"
      ? plugin.timeoutInSeconds
      : path.startsWith("pre")
      ? plugin.pre!.retries
      : plugin.post!.retries;
    assert.equal(got, value, text);
  }
});

Deno.test("non-string params become Python's str() of them, as a lenient finding", () => {
  const loaded = parse(
    `{"preScriptLocation": "/a", "preScriptParams": ["a", 1, -0, true, false, null, 1.0, 1e5, 0.00001, 12345678901234567890, 1e16, 2.50]}`,
    FILE,
  );
  assert.deepEqual(loaded.problems, []);
  const [plugin] = loaded.config.plugins as ScriptConfig[];
  assert.deepEqual(plugin.pre!.params, [
    "a",
    "1",
    "0",
    "True",
    "False",
    "None",
    "1.0",
    "100000.0",
    "1e-05",
    "12345678901234567890",
    "1e+16",
    "2.5",
  ]);
  assert.equal(loaded.lenient.length, 11);
  assert.ok(loaded.lenient.every((p) => p.code === "ScriptParamNotString"));
  assert.match(loaded.lenient[2].message, /preScriptParams\[3\] is true, not a string; .*"True"/);
  // A list or an object inside the params stays a problem.
  const nested = parse(`{"preScriptParams": [["a"], {"b": 1}]}`, FILE);
  assert.deepEqual(nested.problems.map((p) => [p.code, p.path]), [
    ["InvalidConfigType", "preScriptParams[0]"],
    ["InvalidConfigType", "preScriptParams[1]"],
  ]);
});

Deno.test("unknown keys suggest the nearest one; Azure ignores those at the top level", () => {
  const { problems, lenient } = parse(
    `{"preScriptLocaton": "/x", "freeze": {"mount": "auto"}, "zzz": 1, "Snapshot": {}}`,
    FILE,
  );
  assert.deepEqual(problems.map((p) => [p.code, p.path]), [
    ["UnknownConfigKey", "freeze.mount"],
    ["UnknownConfigKey", "Snapshot"],
  ]);
  assert.deepEqual(lenient.map((p) => [p.code, p.path]), [
    ["UnknownConfigKey", "preScriptLocaton"],
    ["UnknownConfigKey", "zzz"],
  ]);
  assert.match(
    lenient[0].message,
    /Azure's framework ignores it.* Did you mean "preScriptLocation"\?/,
  );
  assert.match(problems[0].message, /in freeze\. Did you mean "mounts"\?/);
  assert.match(problems[1].message, /Did you mean "snapshot"\?/);
  assert.doesNotMatch(lenient[1].message, /Did you mean/);
});

Deno.test("keys named like Object.prototype members are unknown keys", () => {
  const { problems, lenient, config } = parse(
    `{"constructor": 1, "__proto__": {"fsFreezeEnabled": false}, "freeze": {"toString": 1}}`,
    FILE,
  );
  assert.deepEqual(problems.map((p) => p.path), ["freeze.toString"]);
  assert.deepEqual(lenient.map((p) => p.path), ["constructor", "__proto__"]);
  assert.equal(config.fsFreezeEnabled, true);
});

Deno.test("keys Azure's sample carries that change nothing are warnings", () => {
  const { problems, warnings } = parse(
    `{"appName": "x", "ScriptsExecutionPollTimeSeconds": 5}`,
    FILE,
  );
  assert.deepEqual(problems, []);
  assert.deepEqual(warnings.map((w) => [w.code, w.path]), [
    ["IgnoredConfigKey", "appName"],
    ["IgnoredConfigKey", "ScriptsExecutionPollTimeSeconds"],
  ]);
});

Deno.test("duplicate keys: the last wins, as in Azure's reader; lenient for Azure's keys only", () => {
  const loaded = parse(`{"timeoutInSeconds": 5,\n"timeoutInSeconds": 6}`, FILE);
  assert.deepEqual(loaded.problems, []);
  const p = only(loaded.lenient);
  assert.deepEqual([p.code, p.path, p.line, p.column], [
    "DuplicateConfigKey",
    "timeoutInSeconds",
    1,
    2,
  ]);
  assert.match(p.message, /the later one \(line 2\) wins/);
  assert.equal(loaded.config.plugins.length, 0);
  const withScript = parse(
    `{"preScriptLocation": "/a", "timeoutInSeconds": 5, "timeoutInSeconds": 6}`,
    FILE,
  );
  assert.equal((withScript.config.plugins[0] as ScriptConfig).timeoutInSeconds, 6);
  const own = parse(
    `{"stateDir": "/a", "stateDir": "/b", "freeze": {"exclude": [], "exclude": []}}`,
    FILE,
  );
  assert.deepEqual(own.problems.map((p) => [p.code, p.path]), [
    ["DuplicateConfigKey", "stateDir"],
    ["DuplicateConfigKey", "freeze.exclude"],
  ]);
  assert.equal(own.config.stateDir, "/b");
});

Deno.test("relative paths are refused where absolute ones are needed", () => {
  const { problems } = parse(
    JSON.stringify({
      preScriptLocation: "pre.sh",
      stateDir: "var/lib",
      log: { file: "vmsnap.log" },
      freeze: { mounts: ["data"] },
      snapshot: { command: ["cp", "a", "b"] },
    }),
    FILE,
  );
  assert.deepEqual(problems.map((p) => [p.code, p.path]), [
    ["RelativePath", "preScriptLocation"],
    ["RelativePath", "stateDir"],
    ["RelativePath", "log.file"],
    ["RelativePath", "freeze.mounts[0]"],
    ["RelativePath", "snapshot.command[0]"],
  ]);
  assert.match(problems[4].message, /command -v cp/);
});

Deno.test("a NUL byte in a path is refused", () => {
  const p = only(parse(`{"preScriptLocation": "/etc/azure/pre\\u0000.sh"}`, FILE).problems);
  assert.equal(p.code, "InvalidConfigValue");
});

Deno.test("plugins: types, names, duplicates, the script plugin's own keys", () => {
  const { problems, config } = parse(
    JSON.stringify({
      preScriptLocation: "/etc/azure/pre.sh",
      plugins: [
        { type: "script", name: "app", pre: "/opt/app/pre.sh", retries: 2, preParams: ["--fast"] },
        { type: "scirpt", name: "typo" },
        { name: "no-type" },
        { type: "script", name: "app", post: "/opt/app/post.sh" },
        { type: "script", name: "ScriptRunner", post: "/x" },
        { type: "script", name: "empty" },
        "not an object",
        { type: "script", name: "bad", retries: "2", colour: 1 },
      ],
    }),
    FILE,
  );
  assert.deepEqual(problems.map((p) => [p.code, p.path]), [
    ["UnknownPluginType", "plugins[1].type"],
    ["MissingConfigKey", "plugins[2].type"],
    ["MissingConfigKey", "plugins[5]"],
    ["InvalidConfigType", "plugins[6]"],
    ["InvalidConfigType", "plugins[7].retries"],
    ["UnknownConfigKey", "plugins[7].colour"],
    ["MissingConfigKey", "plugins[7]"],
    ["DuplicatePluginName", "plugins[3].name"],
    ["DuplicatePluginName", "plugins[4].name"],
  ]);
  assert.match(problems[0].message, /Did you mean "script"\?/);
  assert.match(problems[7].message, /already used by plugins\[0\]\.name/);
  assert.match(problems[8].message, /already used by pluginName/);
  const app = config.plugins[1] as ScriptConfig;
  assert.deepEqual(app.pre, {
    path: "/opt/app/pre.sh",
    params: ["--fast"],
    retries: 2,
    key: "plugins[0].pre",
  });
  assert.equal(app.post, null);
});

Deno.test("snapshot: command or external, not both, not neither", () => {
  assert.deepEqual(
    parse(
      `{"snapshot": {"command": ["/usr/local/sbin/snap", "-q"], "timeoutInSeconds": 20}}`,
      FILE,
    ).config.snapshot,
    { kind: "command", command: ["/usr/local/sbin/snap", "-q"], timeoutInSeconds: 20 },
  );
  assert.deepEqual(parse(`{"snapshot": {"external": {}}}`, FILE).config.snapshot, {
    kind: "external",
    timeoutInSeconds: 60,
  });
  assert.equal(only(parse(`{"snapshot": {}}`, FILE).problems).code, "MissingConfigKey");
  assert.equal(
    only(parse(`{"snapshot": {"command": ["/x"], "external": {}}}`, FILE).problems).code,
    "InvalidConfigValue",
  );
  assert.equal(
    only(parse(`{"snapshot": {"command": []}}`, FILE).problems).code,
    "InvalidConfigValue",
  );
});

Deno.test("freeze.mounts is auto or a list; log.level one of the levels", () => {
  assert.deepEqual(
    parse(`{"freeze": {"mounts": ["/data", "/"]}}`, FILE).config.freeze.mounts,
    ["/data", "/"],
  );
  const bad = parse(`{"freeze": {"mounts": "all"}, "log": {"level": "verbose"}}`, FILE).problems;
  assert.deepEqual(bad.map((p) => [p.code, p.path]), [
    ["InvalidConfigValue", "freeze.mounts"],
    ["InvalidConfigValue", "log.level"],
  ]);
});

Deno.test("every problem is reported at once, not only the first", () => {
  const { problems } = parse(
    `{"timeoutInSeconds": -5, "fsFreezeEnabled": "no", "freez": "", "stateDir": "rel", "plugins": [{"type": "x"}]}`,
    FILE,
  );
  assert.equal(problems.length, 5);
  assert.ok(problems.every((p) => p.line === 1 && typeof p.column === "number"));
});

Deno.test("the sample fixture is Azure's published file, byte for byte", () => {
  const shared = join(
    ROOT,
    "..",
    "shared",
    "reference",
    "VMSnapshotScriptPluginConfig.sample.json",
  );
  const fixture = readFileSync(join(ROOT, "tests", "fixtures", "azure_sample.json"));
  // The shared copy sits beside the checkout on developer machines and in CI.
  if (existsSync(shared)) assert.deepEqual(fixture, readFileSync(shared));
  assert.match(fixture.toString(), /"preScriptParams" : \["", ""\],/);
});

Deno.test("the plugin types come from the caller: a fake type under its own name, nothing else", () => {
  const fake: PluginSpec = {
    type: "fake",
    summary: "a test's plugin",
    fields: { level: { type: "integer", min: 1, max: 3, default: 2 } },
    normalize: (values) => ({ type: "fake", name: String(values.name), level: values.level }),
  };
  const text =
    `{"plugins": [{"type": "fake", "name": "f", "level": 3}, {"type": "script", "pre": "/x"}]}`;
  const { config, problems } = parseConfig(text, FILE, { plugins: new Map([["fake", fake]]) });
  assert.deepEqual(config.plugins, [{ type: "fake", name: "f", level: 3, stage: 0 }]);
  const unknown = only(problems);
  assert.equal(unknown.code, "UnknownPluginType");
  assert.match(unknown.message, /This vmsnap knows: fake\.$/);
  // With the production types the same entry is a script plugin, and "fake" is unknown.
  assert.deepEqual(
    parse(text, FILE).problems.map((p) => [p.code, p.path]),
    [["UnknownPluginType", "plugins[0].type"]],
  );
});

Deno.test("Azure's top-level script keys are read by the plugin type that declares them", () => {
  const text = `{"preScriptLocation": "/etc/azure/pre.sh", "timeoutInSeconds": 5}`;
  const withScript = parse(text, FILE);
  assert.deepEqual(withScript.problems, []);
  assert.equal((withScript.config.plugins[0] as ScriptConfig).timeoutInSeconds, 5);
  // Without such a type the keys are unknown: ignored as Azure's framework ignores them (lenient).
  const without = parseConfig(text, FILE, { plugins: new Map() });
  assert.deepEqual(without.config.plugins, []);
  assert.deepEqual(without.problems, []);
  assert.deepEqual(without.lenient.map((p) => [p.code, p.path]), [
    ["UnknownConfigKey", "preScriptLocation"],
    ["UnknownConfigKey", "timeoutInSeconds"],
  ]);
});
