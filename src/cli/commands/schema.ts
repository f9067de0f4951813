/**
 * `vmsnap schema`: the config's JSON Schema.
 *
 * @module
 */
import { EXIT } from "../../exit_codes.ts";
import type { CommandSpec, Invocation } from "../command.ts";
import type { Io } from "../io.ts";

/** `vmsnap schema`'s help. */
export const spec: CommandSpec = {
  summary: "print the config's JSON Schema (for editors and config management)",
  usage: "vmsnap schema",
  description: `Prints the JSON Schema (draft-07) of the config, generated from the validator's own
field specs. A config valid against it has no problem and nothing clamped or ignored;
files, permissions and mounts are checked by vmsnap check.`,
  options: {},
};

/**
 * Prints the schema.
 *
 * @example
 * ```ts
 * import { handler } from "./schema.ts";
 * const io = { stdout: (t: string) => console.log(t), stderr: (t: string) => console.error(t), env: {} };
 * await handler({ command: "schema", configPath: "/etc/x.json", configGiven: false, json: false, help: false, positionals: [] }, io);
 * ```
 */
export async function handler(_args: Invocation, io: Io): Promise<number> {
  const { PLUGINS } = await import("../../../plugins/registry.ts");
  io.stdout(
    (await import("../../config/json_schema.ts")).configJsonSchemaText({ plugins: PLUGINS }),
  );
  return EXIT.ok;
}
