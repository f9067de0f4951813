/** Edit distance between two strings (Levenshtein, case-insensitive). */
function distance(a: string, b: string): number {
  a = a.toLowerCase();
  b = b.toLowerCase();
  const row = Array.from({ length: b.length + 1 }, (_, i) => i);
  for (let i = 1; i <= a.length; i++) {
    let diagonal = row[0];
    row[0] = i;
    for (let j = 1; j <= b.length; j++) {
      const above = row[j];
      row[j] = Math.min(row[j] + 1, row[j - 1] + 1, diagonal + (a[i - 1] === b[j - 1] ? 0 : 1));
      diagonal = above;
    }
  }
  return row[b.length];
}

/**
 * The candidate nearest to `word`, or undefined when none is close enough to
 * be a likely typo (distance at most a third of the longer word, minimum 2).
 *
 * @example
 * ```ts
 * import { closest } from "./suggest.ts";
 * closest("preScriptLocaton", ["preScriptLocation", "postScriptLocation"]); // "preScriptLocation"
 * ```
 */
export function closest(word: string, candidates: readonly string[]): string | undefined {
  let best: string | undefined;
  let bestDistance = Infinity;
  for (const candidate of candidates) {
    const d = distance(word, candidate);
    if (d < bestDistance) {
      best = candidate;
      bestDistance = d;
    }
  }
  const limit = Math.max(2, Math.floor(Math.max(word.length, best?.length ?? 0) / 3));
  return bestDistance <= limit ? best : undefined;
}

/**
 * A " Did you mean …?" suffix for an error message, or "" when nothing is close.
 *
 * @example
 * ```ts
 * import { didYouMean } from "./suggest.ts";
 * `unknown command "chek".${didYouMean("chek", ["check", "run"])}`;
 * ```
 */
export function didYouMean(word: string, candidates: readonly string[]): string {
  const best = closest(word, candidates);
  return best === undefined ? "" : ` Did you mean "${best}"?`;
}
