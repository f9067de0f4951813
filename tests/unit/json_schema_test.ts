/**
 * The config's JSON Schema: docs/vmsnap.schema.json is what the code
 * generates (else it is stale), it is a valid draft-07 schema, Azure's sample
 * and the packaged example validate, and on a set of configs the schema
 * agrees with the validator (valid ⇔ no problem and nothing lenient), checked
 * with Python's jsonschema, an independent implementation.
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { parse } from "jsonc-parser";
import { configJsonSchema, configJsonSchemaText } from "../../src/config/json_schema.ts";
import { parseConfig } from "../../src/config/config.ts";
import { PLUGINS } from "../../plugins/registry.ts";
import { ROOT } from "../helpers.ts";

Deno.test("docs/vmsnap.schema.json is up to date (else: deno task schema)", () => {
  const checkedIn = readFileSync(join(ROOT, "docs", "vmsnap.schema.json"), "utf8");
  assert.equal(
    checkedIn,
    configJsonSchemaText({ plugins: PLUGINS }),
    "stale: run deno task schema and commit it",
  );
});

/** Validates each document with Python's jsonschema (Draft 7); returns valid or the first error. */
function pyValidate(docs: unknown[]): (true | string)[] {
  const program = `
import json, sys
from jsonschema import Draft7Validator
data = json.load(sys.stdin)
Draft7Validator.check_schema(data["schema"])
v = Draft7Validator(data["schema"])
out = []
for doc in data["docs"]:
    errors = sorted(v.iter_errors(doc), key=lambda e: list(e.path))
    out.append(True if not errors else "/".join(map(str, errors[0].path)) + ": " + errors[0].message)
print(json.dumps(out))
`;
  const ran = spawnSync("python3", ["-c", program], {
    input: JSON.stringify({ schema: configJsonSchema({ plugins: PLUGINS }), docs }),
    encoding: "utf8",
  });
  assert.equal(ran.status, 0, ran.stderr);
  return JSON.parse(ran.stdout);
}

Deno.test("Azure's sample and the packaged example validate against the schema", () => {
  const docs = [
    JSON.parse(readFileSync(join(ROOT, "tests", "fixtures", "azure_sample.json"), "utf8")),
    parse(
      readFileSync(join(ROOT, "packaging", "VMSnapshotScriptPluginConfig.example.json"), "utf8"),
    ),
  ];
  assert.deepEqual(pyValidate(docs), [true, true]);
});

Deno.test("the schema and the validator agree on what is valid", () => {
  const cases: unknown[] = [
    {},
    { appName: "ignored, with a warning" },
    {
      freeze: { mounts: ["/data"], exclude: ["/boot"], maxFrozenSeconds: 30 },
      snapshot: { command: ["/usr/local/sbin/snap"], timeoutInSeconds: 60 },
      plugins: [
        { type: "mysql", socket: "/run/mysqld/mysqld.sock", passwordFile: "/etc/vmsnap/p" },
        { type: "postgresql", mode: "backup", stage: 2 },
        { type: "mongodb", uriFile: "/etc/vmsnap/mongodb.uri" },
        { type: "script", pre: "/usr/local/sbin/pre" },
      ],
      metrics: { textfile: "/var/lib/node-exporter/vmsnap.prom" },
      log: { level: "debug" },
    },
    { snapshot: { external: {} } },
    { fsFreezeEnable: true },
    { timeoutInSeconds: 4000 },
    { timeoutInSeconds: "30" },
    { preScriptParams: [1, true] },
    { freeze: { mounts: "autoo" } },
    { freeze: { mounts: ["data"] } },
    { freeze: { maxFrozenSeconds: 0 } },
    { plugins: [{ type: "mysq" }] },
    { plugins: [{ type: "postgresql", prot: 5432 }] },
    { plugins: [{ type: "postgresql", stage: 1000 }] },
    { plugins: [{ name: "no type" }] },
    { log: { level: "verbose" } },
    { snapshot: { command: [] } },
    { stateDir: "var/lib/vmsnap" },
    { metrics: { textfile: "vmsnap.prom" } },
  ];
  const bySchema = pyValidate(cases);
  cases.forEach((doc, i) => {
    const { problems, lenient } = parseConfig(JSON.stringify(doc), "case.json", {
      plugins: PLUGINS,
    });
    const byValidator = problems.length === 0 && lenient.length === 0;
    assert.equal(
      bySchema[i] === true,
      byValidator,
      `${JSON.stringify(doc)}: schema says ${bySchema[i]}, validator found ${
        JSON.stringify([...problems, ...lenient].map((p) => p.code))
      }`,
    );
  });
});
