/**
 * The error-code reference, docs/errors.md, from the catalog in src/errors.ts.
 * A unit test checks that docs/errors.md lists every code.
 *
 * Usage: deno run -A scripts/codes_table.ts [--write]
 *   (--write: into docs/errors.md, between the markers, then `deno fmt` of that file)
 *
 * @module
 */
import { spawnSync } from "node:child_process";
import { readFileSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import process from "node:process";
import { type CodeInfo, CODES } from "../src/errors.ts";

/** One list entry per code: what happened, then the fix (lists read well in a terminal). */
const list = (Object.entries(CODES) as [string, CodeInfo][]).map(([code, info]) =>
  `- **\`${code}\`**${info.azure ? " (Azure's name)" : ""}: ${info.summary} **Fix:** ${info.fix}`
).join("\n");

if (process.argv.includes("--write")) {
  const file = join(dirname(new URL(import.meta.url).pathname), "..", "docs", "errors.md");
  const text = readFileSync(file, "utf8");
  if (!/<!-- codes:start -->[\s\S]*<!-- codes:end -->/.test(text)) {
    throw new Error(`${file} lacks the <!-- codes:start --> / <!-- codes:end --> markers`);
  }
  const next = text.replace(
    /<!-- codes:start -->[\s\S]*<!-- codes:end -->/,
    `<!-- codes:start -->\n\n${list}\n\n<!-- codes:end -->`,
  );
  writeFileSync(file, next);
  // The same formatting `deno fmt --check` expects (lines wrapped at the configured width).
  const fmt = spawnSync(process.execPath, ["fmt", "--quiet", file], { stdio: "inherit" });
  if (fmt.status !== 0) throw new Error(`deno fmt ${file} failed (${fmt.status})`);
  console.log(`wrote ${Object.keys(CODES).length} codes into docs/errors.md`);
} else {
  console.log(list);
}
