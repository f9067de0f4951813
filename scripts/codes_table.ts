/**
 * Prints the README's error-code table from the catalog in src/errors.ts.
 * A unit test checks that the README lists every code.
 *
 * Usage: deno run scripts/codes_table.ts
 *
 * @module
 */
import { type CodeInfo, CODES } from "../src/errors.ts";

console.log("| code | what happened | fix | Azure |");
console.log("| --- | --- | --- | --- |");
for (const [code, info] of Object.entries(CODES) as [string, CodeInfo][]) {
  const cell = (text: string) => text.replace(/\|/g, "\\|");
  console.log(
    `| \`${code}\` | ${cell(info.summary)} | ${cell(info.fix)} | ${info.azure ? "yes" : ""} |`,
  );
}
