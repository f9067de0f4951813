/**
 * Figures for docs/PROOF.md: a test records what it measured, and
 * `deno task proof` (scripts/proof.ts) collects them with the pass/fail of
 * each scenario. Outside the proof run, figures go nowhere.
 *
 * @module
 */
import { appendFileSync } from "node:fs";
import process from "node:process";

/**
 * Records a measured figure for the report.
 *
 * @example
 * ```ts
 * figure("agent SIGKILLed while frozen", "writer resumed after", 4.2, "ms");
 * ```
 */
export function figure(scenario: string, name: string, value: number, unit = "ms"): void {
  const file = process.env.VMSNAP_PROOF_FIGURES;
  if (!file) return;
  appendFileSync(
    file,
    JSON.stringify({ scenario, name, value: Math.round(value * 100) / 100, unit }) + "\n",
  );
}
