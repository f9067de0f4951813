/**
 * scripts/bun/overrides.ts: the compiled binary's copy of bson allocates its
 * serialization buffer without zero-filling it (17 MiB made resident now and
 * then: bench/ANALYSIS.md, Peak RSS). The copy must serialize exactly as bson
 * does, first call and later ones (tests/e2e/mongodb_test.ts: the binary
 * carries it).
 */
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { join } from "node:path";
import { BSON, Long } from "bson";
import { writeBundlerTsconfig } from "../../scripts/bun/overrides.ts";
import { ROOT, secureDir } from "../helpers.ts";

Deno.test("the bson override serializes every command the plugin sends as bson does", () => {
  const work = secureDir("bun-overrides-");
  try {
    const tsconfig = JSON.parse(readFileSync(writeBundlerTsconfig(work.dir), "utf8"));
    const [patchedFile] = tsconfig.compilerOptions.paths.bson;
    assert.match(
      readFileSync(patchedFile, "utf8"),
      /let buffer = ByteUtils\.allocateUnsafe\(MAXSIZE\);/,
    );
    assert.deepEqual(tsconfig.compilerOptions.paths["jsonc-parser"], [
      join(ROOT, "scripts", "bun", "jsonc_slim.js"),
    ]);
    const patched = createRequire(import.meta.url)(patchedFile) as typeof import("bson");
    const commands = [
      { hello: 1, helloOk: true, client: { driver: { name: "nodejs", version: "7.9.0" } } },
      { saslStart: 1, mechanism: "SCRAM-SHA-256", payload: new BSON.Binary(new Uint8Array(40)) },
      { fsync: 1, lock: true, $db: "admin", lsid: { id: new BSON.UUID() } },
      { currentOp: 1, $all: false, $db: "admin", txnNumber: Long.fromNumber(7) },
      { fsyncUnlock: 1, $db: "admin" },
      { ping: 1, $db: "admin" },
    ];
    // Twice: the second round writes over what the first left in the reused buffer.
    for (const round of [1, 2]) {
      for (const command of commands) {
        assert.deepEqual(
          patched.serialize(command),
          BSON.serialize(command),
          `round ${round}: ${Object.keys(command)[0]}`,
        );
      }
    }
  } finally {
    work.cleanup();
  }
});
