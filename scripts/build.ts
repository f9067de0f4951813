/**
 * Builds the single binary `dist/vmsnap` from `mod.ts`: with `bun build
 * --compile`, or with `deno compile` when `DENORT_BIN` names a Deno runtime
 * (deno compile cannot download one here).
 *
 * Usage: deno task build [--outfile PATH]
 *
 * @module
 */
import { spawnSync } from "node:child_process";
import { mkdirSync, statSync } from "node:fs";
import { dirname, join } from "node:path";
import process from "node:process";
import { parseArgs } from "node:util";

const root = join(dirname(new URL(import.meta.url).pathname), "..");
const { values } = parseArgs({
  args: process.argv.slice(2),
  options: { outfile: { type: "string", default: join(root, "dist", "vmsnap") } },
});
const outfile = values.outfile!;
mkdirSync(dirname(outfile), { recursive: true });

const bin = (name: string) =>
  join(root, "node_modules", ...(name === "bun" ? ["bun", "bin", "bun.exe"] : ["deno", "deno"]));
const [command, args] = process.env.DENORT_BIN
  ? [bin("deno"), ["compile", "--allow-all", "--no-check", "--output", outfile, "mod.ts"]]
  : [bin("bun"), ["build", "--compile", "--minify-syntax", "--outfile", outfile, "mod.ts"]];

const started = performance.now();
const result = spawnSync(command, args, { cwd: root, stdio: "inherit" });
if (result.status !== 0) {
  console.error(
    `build failed: ${command} ${args.join(" ")} exited ${result.status ?? result.signal}`,
  );
  process.exit(1);
}
const size = statSync(outfile).size;
console.log(
  `built ${outfile} (${(size / 1048576).toFixed(1)} MiB) with ${
    process.env.DENORT_BIN ? "deno compile" : "bun build --compile"
  } in ${((performance.now() - started) / 1000).toFixed(1)} s`,
);
