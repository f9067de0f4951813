/**
 * The README's error-code table, from the catalog in src/errors.ts. A unit
 * test checks that the README lists every code.
 *
 * Usage: deno run -A scripts/codes_table.ts [--write]   (--write: into README.md, between the markers)
 *
 * @module
 */
import { readFileSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import process from "node:process";
import { type CodeInfo, CODES } from "../src/errors.ts";

const cell = (text: string) => text.replace(/\|/g, "\\|");
const table = [
  "| code | what happened | fix | Azure |",
  "| --- | --- | --- | --- |",
  ...(Object.entries(CODES) as [string, CodeInfo][]).map(([code, info]) =>
    `| \`${code}\` | ${cell(info.summary)} | ${cell(info.fix)} | ${info.azure ? "yes" : ""} |`
  ),
].join("\n");

if (process.argv.includes("--write")) {
  const readme = join(dirname(new URL(import.meta.url).pathname), "..", "README.md");
  const text = readFileSync(readme, "utf8");
  const next = text.replace(
    /<!-- codes:start -->[\s\S]*<!-- codes:end -->/,
    `<!-- codes:start -->\n${table}\n<!-- codes:end -->`,
  );
  writeFileSync(readme, next);
  console.log(`wrote ${Object.keys(CODES).length} codes into README.md`);
} else {
  console.log(table);
}
