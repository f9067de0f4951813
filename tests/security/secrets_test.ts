/**
 * Secrets in `check` output, through the binary: passwords with characters
 * JSON escapes, and passwords too short to scrub from free text.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { json, putConfig, resultOf, runBin, secureDir } from "../helpers.ts";

/** A config with one inline secret per database plugin. */
function configWith(dir: string, secrets: { mysql: string; pg: string; mongo: string }): string {
  return putConfig(dir, {
    fsFreezeEnabled: false,
    stateDir: join(dir, "state"),
    log: { file: join(dir, "log", "x.jsonl") },
    plugins: [
      { type: "mysql", name: "db", socket: "/run/vmsnap-test-none.sock", password: secrets.mysql },
      { type: "postgresql", name: "pg", password: secrets.pg },
      { type: "mongodb", name: "m", uri: `mongodb://u:${secrets.mongo}@127.0.0.1:1/` },
    ],
  });
}

/** Every form a secret may take in output: raw, and escaped inside a JSON string. */
const forms = (secret: string) => [secret, JSON.stringify(secret).slice(1, -1)];

Deno.test("security: check --json and check never show a password, whatever its characters or length", async () => {
  const { dir, cleanup } = secureDir("secrets-");
  try {
    // `"` and `\` are escaped by JSON; a 3-character password was never registered at all.
    const secrets = { mysql: 'pw"with\\quote-1', pg: "Q~%", mongo: 'mo"ngo\\pw' };
    const config = configWith(dir, secrets);
    const ranJson = await runBin(["check", "--json", "--config", config]);
    const report = json<{
      config: { plugins: { password?: string; uri?: string }[] };
      warnings: { code: string; message: string; plugin?: string }[];
    }>(ranJson);
    const ranText = await runBin(["check", "--config", config]);
    for (const secret of Object.values(secrets)) {
      for (const form of forms(secret)) {
        for (const [what, ran] of [["--json", ranJson], ["text", ranText]] as const) {
          assert.ok(!ran.stdout.includes(form), `${what}: ${form} in stdout:\n${ran.stdout}`);
          assert.ok(!ran.stderr.includes(form), `${what}: ${form} in stderr`);
        }
      }
    }
    // The fields are still there, replaced.
    assert.equal(report.config.plugins[0].password, "***");
    assert.equal(report.config.plugins[1].password, "***");
    assert.ok(!report.config.plugins[2].uri?.includes("mo"), String(report.config.plugins[2].uri));
    // A password too short to scrub from free text is pointed out.
    const short = report.warnings.filter((w) => w.code === "ShortSecret");
    assert.equal(short.length, 1, JSON.stringify(report.warnings));
    assert.match(short[0].message, /3 characters/);
    assert.ok(!short[0].message.includes(secrets.pg));
  } finally {
    cleanup();
  }
});

Deno.test("security: run's result warns ShortSecret too (an inline password under 4 characters)", async () => {
  const { dir, cleanup } = secureDir("secrets-");
  try {
    const config = putConfig(dir, {
      fsFreezeEnabled: false,
      snapshot: { command: ["/bin/true"] },
      stateDir: join(dir, "state"),
      log: { file: join(dir, "log", "x.jsonl") },
      plugins: [{ type: "mysql", name: "db", socket: join(dir, "none.sock"), password: "Q~%" }],
    });
    const ran = await runBin(["run", "--json", "--config", config]);
    const result = resultOf(ran.stdout);
    const short = result.warnings.filter((w: { code: string }) => w.code === "ShortSecret");
    assert.equal(short.length, 1, ran.stdout);
    assert.match(short[0].message, /3 characters.*Fix: use a longer password/);
    assert.ok(!short[0].message.includes("Q~%"));
  } finally {
    cleanup();
  }
});
