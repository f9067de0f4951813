/**
 * How vmsnap starts itself again (the freeze guard is the same binary in a
 * hidden mode): the compiled binary runs itself; under `deno run` or
 * `bun run`, the runtime runs the entry module again.
 *
 * @module
 */
import process from "node:process";
import { fileURLToPath } from "node:url";

// deno-lint-ignore no-explicit-any
const runtime = globalThis as any;

/**
 * The argv that starts this program with the given arguments.
 *
 * @example
 * ```ts
 * import { selfCommand } from "./self.ts";
 * const [command, ...args] = selfCommand(["__guard"]);
 * ```
 */
export function selfCommand(args: string[]): string[] {
  const entry = fileURLToPath(new URL("../../mod.ts", import.meta.url));
  if (runtime.Bun) {
    // A compiled Bun binary serves its modules from /$bunfs.
    const compiled = String(runtime.Bun.main ?? "").startsWith("/$bunfs") ||
      import.meta.url.includes("$bunfs");
    return compiled ? [process.execPath, ...args] : [process.execPath, "run", entry, ...args];
  }
  if (runtime.Deno) {
    const compiled = import.meta.url.includes("deno-compile-");
    return compiled
      ? [runtime.Deno.execPath(), ...args]
      : [runtime.Deno.execPath(), "run", "--allow-all", "--no-check", entry, ...args];
  }
  return [process.execPath, entry, ...args];
}
