/**
 * Text from scripts and commands shown on an admin's terminal: control
 * characters are shown escaped, never sent raw, so a script's output cannot
 * retitle the window, clear the screen, move the cursor or reorder text.
 *
 * @module
 */

/**
 * C0 controls but newline and tab, DEL, C1 controls, and the bidirectional
 * overrides and isolates (which reorder what the admin reads).
 */
// deno-lint-ignore no-control-regex
const UNSAFE = /[\x00-\x08\x0b-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]/g;

/**
 * Escapes what a terminal would interpret: `ESC` becomes `\x1b`, `BEL`
 * `\x07`, a C1 control `\x9b`, a bidi override `\u202e`. Newlines and tabs
 * are kept.
 *
 * @example
 * ```ts
 * import { escapeForTerminal } from "./terminal.ts";
 * escapeForTerminal("done\x1b]0;pwned\x07"); // "done\\x1b]0;pwned\\x07"
 * ```
 */
export function escapeForTerminal(text: string): string {
  return text.replace(UNSAFE, (c) => {
    const code = c.charCodeAt(0);
    return code <= 0xff
      ? `\\x${code.toString(16).padStart(2, "0")}`
      : `\\u${code.toString(16).padStart(4, "0")}`;
  });
}
