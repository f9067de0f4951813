/**
 * What Bun's bundler uses instead of some packages, for the compiled binary only (Deno and the
 * tests use the packages as they are): `scripts/bun/tsconfig.json`'s `paths` (jsonc-parser
 * without its formatter, whatwg-url as the runtime's own URL: see each file), plus a copy of
 * `bson` that does not zero-fill its 17 MiB serialization buffer when it loads, and a
 * `@mongodb-js/saslprep` that loads when first called.
 *
 * bson (the MongoDB driver's) allocates that buffer with `Buffer.alloc` at module load. Fresh
 * pages from the kernel are zero already and cost nothing until written, but when the allocator
 * hands out memory that was used before, zero-filling makes all 17 MiB resident: `vmsnap run`
 * with the mysql and mongodb plugins (mysql2 loading at the same time) peaked at ~78 or ~95 MiB
 * from one run to the next (bench/ANALYSIS.md, Peak RSS); never with either alone. The copy
 * allocates it with `Buffer.allocUnsafe`: only the bytes serialized are touched. This is as safe
 * as bson itself: it reuses the buffer from one `serialize` to the next without clearing it, and
 * copies out only the bytes it wrote.
 *
 * @mongodb-js/saslprep (the driver's SCRAM-SHA-256 password preparation) builds its Unicode
 * tables when it loads: ~3 MiB of every run with the mongodb plugin, though only SCRAM-SHA-256
 * authentication calls it. The stand-in loads the package on its first call.
 *
 * @module
 */
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join, resolve } from "node:path";

const here = dirname(new URL(import.meta.url).pathname);

/** bson's line that allocates the buffer, and what the copy says instead. */
const BSON_EAGER = "let buffer = ByteUtils.allocate(MAXSIZE);";
const BSON_LAZY = "let buffer = ByteUtils.allocateUnsafe(MAXSIZE);";

/**
 * Writes bson's patched copy and a tsconfig that maps every override into `dir`; returns
 * the tsconfig's path for `bun build --tsconfig-override`. Throws when bson's code no longer
 * has the line (a new bson version: look at it again).
 *
 * @example
 * ```ts
 * import { writeBundlerTsconfig } from "./overrides.ts";
 * const tsconfig = writeBundlerTsconfig("/var/tmp/vmsnap-build");
 * console.log(`bun build --tsconfig-override=${tsconfig} ...`);
 * ```
 */
export function writeBundlerTsconfig(dir: string): string {
  const base = JSON.parse(readFileSync(join(here, "tsconfig.json"), "utf8"));
  const paths: Record<string, string[]> = {};
  for (
    const [name, targets] of Object.entries(base.compilerOptions.paths as Record<string, string[]>)
  ) {
    paths[name] = targets.map((t) => resolve(here, t));
  }
  // The file the driver's require("bson") resolves to (bson's "require" export).
  const mongodb = createRequire(join(here, "..", "..", "package.json")).resolve("mongodb");
  const bsonFile = createRequire(mongodb).resolve("bson");
  const source = readFileSync(bsonFile, "utf8");
  if (source.split(BSON_EAGER).length !== 2) {
    throw new Error(
      `${bsonFile}: expected the line "${BSON_EAGER}" once (scripts/bun/overrides.ts). Fix: see whether this bson version still zero-fills its buffer at load, and update or drop the override.`,
    );
  }
  mkdirSync(dir, { recursive: true });
  const bson = join(dir, "bson.cjs");
  writeFileSync(bson, source.replace(BSON_EAGER, BSON_LAZY));
  paths.bson = [bson];
  const saslprepFile = createRequire(mongodb).resolve("@mongodb-js/saslprep");
  const saslprep = join(dir, "saslprep.cjs");
  writeFileSync(
    saslprep,
    `// @mongodb-js/saslprep, loaded on the first call (scripts/bun/overrides.ts).
let loaded;
function saslprep(input, options) {
  loaded ??= require(${JSON.stringify(saslprepFile)});
  return loaded.saslprep(input, options);
}
saslprep.saslprep = saslprep;
saslprep.default = saslprep;
module.exports = saslprep;
`,
  );
  paths["@mongodb-js/saslprep"] = [saslprep];
  const tsconfig = join(dir, "tsconfig.json");
  writeFileSync(tsconfig, JSON.stringify({ compilerOptions: { baseUrl: here, paths } }, null, 2));
  return tsconfig;
}
