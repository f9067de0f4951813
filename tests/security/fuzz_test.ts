/**
 * A config fuzzer: mutated configs (truncated, wrong types, huge numbers,
 * deep nesting, invalid UTF-8, megabyte strings, NUL bytes in paths) through
 * the library in-process and through `vmsnap check` and `vmsnap run`. Never a
 * crash or a stack trace, always coded problems, never a script executed from
 * an invalid config. Fixed seed; VMSNAP_FUZZ_CASES raises the number of cases
 * run through the binary (default 300; the library sees 10x as many).
 *
 * A mutated config could ask to freeze `/` (remove `fsFreezeEnabled: false`,
 * and the default is "auto"): `run` only gets configs that are invalid (and
 * so run nothing) or that freeze nothing outside the fuzz directory.
 */
import assert from "node:assert/strict";
import { existsSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import process from "node:process";
import { parseConfig } from "../../src/config/config.ts";
import { PLUGINS } from "../../plugins/registry.ts";
import { CODES } from "../../src/errors.ts";
import { put, runBin, secureDir } from "../helpers.ts";
import { figure } from "../proof.ts";

const SEED = 20261125;
const CASES = Number(process.env.VMSNAP_FUZZ_CASES ?? 300);

/** A small seeded PRNG (mulberry32). */
function prng(seed: number): () => number {
  return () => {
    seed |= 0;
    seed = (seed + 0x6d2b79f5) | 0;
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const WEIRD: unknown[] = [
  1e309,
  -1,
  0,
  2 ** 63,
  1.5,
  "",
  "30",
  "true",
  "relative/path",
  "/etc/passwd\u0000x",
  null,
  true,
  [],
  {},
  [1, "a", null],
  { nested: { deeper: [{}] } },
  "x".repeat(1 << 20),
  "é\u202e\uFEFF",
];

/** Mutates a config (text or bytes), several ways at once sometimes. */
function mutate(base: Record<string, unknown>, rand: () => number): Uint8Array {
  const pick = <T>(items: T[]) => items[Math.floor(rand() * items.length)];
  const config = structuredClone(base) as Record<string, unknown>;
  const keys = Object.keys(config);
  const mutations = 1 + Math.floor(rand() * 3);
  for (let i = 0; i < mutations; i++) {
    const kind = Math.floor(rand() * 6);
    if (kind === 0) config[pick(keys)] = pick(WEIRD);
    else if (kind === 1) delete config[pick(keys)];
    else if (kind === 2) {
      config[pick(["preScriptLocaton", "fsFreeze", "zzz", "plugins", "snapshot"])] = pick(WEIRD);
    } else if (kind === 3) {
      const plugins = Array.isArray(config.plugins) ? config.plugins : [];
      plugins.push({
        type: pick(["script", "scirpt", "mysql", 7, null]),
        name: pick(["a", "a", "", null]),
        pre: pick(WEIRD),
      });
      config.plugins = plugins;
    } else if (kind === 4) {
      const freeze = (typeof config.freeze === "object" && config.freeze)
        ? config.freeze as Record<string, unknown>
        : {};
      freeze[pick(["mounts", "exclude", "maxFrozenSeconds"])] = pick(WEIRD);
      config.freeze = freeze;
    } else {
      let nested: unknown = 1;
      for (let d = 0; d < 10 + Math.floor(rand() * 90); d++) nested = [nested];
      config[pick(keys)] = nested;
    }
  }
  let bytes = new TextEncoder().encode(JSON.stringify(config, null, 1));
  const raw = rand();
  if (raw < 0.15) bytes = bytes.subarray(0, Math.floor(rand() * bytes.length)); // truncated
  else if (raw < 0.25) {
    const at = Math.floor(rand() * bytes.length);
    bytes = new Uint8Array([
      ...bytes.subarray(0, at),
      pick([0xff, 0xc3, 0x00, 0xed, 0xa0]),
      ...bytes.subarray(at),
    ]);
  } else if (raw < 0.3) {
    const copy = new Uint8Array(bytes);
    for (let i = 0; i < 5; i++) copy[Math.floor(rand() * copy.length)] = Math.floor(rand() * 256);
    bytes = copy;
  } else if (raw < 0.32) {
    bytes = new TextEncoder().encode(`{"x": "${"y".repeat(1_100_000)}"}`); // over the size limit
  }
  return bytes;
}

const CONFIG_CODES = new Set([
  "IncorrectJSONConfigFile",
  "InvalidConfigType",
  "InvalidConfigValue",
  "UnknownConfigKey",
  "DuplicateConfigKey",
  "MissingConfigKey",
  "RelativePath",
  "UnknownPluginType",
  "DuplicatePluginName",
]);

Deno.test({
  name: "security: the config fuzzer, in-process: never a throw, every problem coded and located",
  fn: () => {
    const rand = prng(SEED);
    const base = {
      preScriptLocation: "/etc/azure/pre.sh",
      fsFreezeEnabled: false,
      freeze: { mounts: ["/data"] },
      timeoutInSeconds: 30,
      plugins: [],
    };
    let problems = 0;
    for (let i = 0; i < CASES * 10; i++) {
      const bytes = mutate(base, rand);
      let text: string;
      try {
        text = new TextDecoder("utf-8", { fatal: true }).decode(bytes);
      } catch {
        continue; // invalid UTF-8 is the binary's job (loadConfig), below
      }
      const loaded = parseConfig(text, "/fuzz.json", { plugins: PLUGINS });
      for (const p of loaded.problems) {
        assert.ok(p.code in CODES, p.code);
        assert.ok(p.message.length > 0);
        if (p.line !== undefined) assert.ok(p.line >= 1 && p.line <= text.split("\n").length + 1);
      }
      problems += loaded.problems.length;
    }
    figure("the config fuzzer, in-process", "cases", CASES * 10, "cases");
    figure("the config fuzzer, in-process", "problems reported", problems, "problems");
  },
});

Deno.test({
  name:
    `security: the config fuzzer through the binary (${CASES} cases, seed ${SEED}): no crash, coded errors, no script from an invalid config`,
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    const { dir, cleanup } = secureDir("fuzz-");
    try {
      const marker = join(dir, "pre.ran");
      const pre = put(join(dir, "pre.sh"), `#!/bin/sh\ntouch "${marker}"\n`, 0o700);
      const snap = put(join(dir, "snap.sh"), "#!/bin/sh\ntrue\n", 0o700);
      const base = {
        pluginName: "ScriptRunner",
        preScriptLocation: pre,
        preScriptParams: ["", ""],
        timeoutInSeconds: 5,
        continueBackupOnFailure: true,
        fsFreezeEnabled: false,
        freeze: { mounts: [join(dir, "none")] },
        snapshot: { command: [snap] },
        log: { file: join(dir, "log", "v.jsonl") },
        stateDir: join(dir, "state"),
      };
      const rand = prng(SEED + 1);
      let runs = 0;
      let refused = 0;
      const started = performance.now();
      for (let i = 0; i < CASES; i++) {
        const bytes = mutate(base, rand);
        const file = join(dir, "fuzz.json");
        writeFileSync(file, bytes, { mode: 0o600 });
        const checked = await runBin(["check", "--json", "--config", file]);
        const context = `case ${i}: ${new TextDecoder().decode(bytes.subarray(0, 300))}`;
        assert.ok(
          checked.code === 0 || checked.code === 1,
          `${context}\nexit ${checked.code}\n${checked.stderr}`,
        );
        assert.doesNotMatch(
          checked.stderr,
          /Uncaught|TypeError|RangeError|at file:|\bat [\w.]+ \(/,
          context,
        );
        const report = JSON.parse(checked.stdout);
        for (const p of report.problems) assert.ok(p.code in CODES, `${context}: ${p.code}`);
        // What Azure's framework tolerates (lenient) is a problem for check, a warning for run.
        const invalid = report.problems.some((p: { code: string; lenient?: boolean }) =>
          CONFIG_CODES.has(p.code) && !p.lenient
        );
        // Only configs that cannot freeze or write outside this directory reach `run`.
        const config = report.config;
        const safe = invalid || (config &&
          (!config.fsFreezeEnabled ||
            (Array.isArray(config.freeze.mounts) &&
              config.freeze.mounts.every((m: string) => m.startsWith(dir)))) &&
          config.stateDir.startsWith(dir) && config.log.file.startsWith(dir));
        if (!safe || i % 3 !== 0) continue;
        rmSync(marker, { force: true });
        const ran = await runBin(["run", "--json", "--config", file]);
        runs++;
        assert.ok([0, 1, 2].includes(ran.code!), `${context}\nrun exit ${ran.code}\n${ran.stderr}`);
        assert.doesNotMatch(ran.stderr, /Uncaught|TypeError|RangeError|at file:/, context);
        const result = JSON.parse(ran.stdout.trim().split("\n").at(-1)!);
        for (const e of result.errors) assert.ok(e.code in CODES, `${context}: ${e.code}`);
        if (invalid) {
          refused++;
          assert.equal(ran.code, 2, context);
          assert.ok(!existsSync(marker), `${context}\na script ran from an invalid config`);
        }
      }
      figure("the config fuzzer through the binary", "check cases", CASES, "cases");
      figure("the config fuzzer through the binary", "run cases", runs, "cases");
      figure(
        "the config fuzzer through the binary",
        "invalid configs run refused",
        refused,
        "cases",
      );
      figure(
        "the config fuzzer through the binary",
        "time per invocation",
        (performance.now() - started) / (CASES + runs),
      );
    } finally {
      cleanup();
    }
  },
});
