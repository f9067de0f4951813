/**
 * The one small interface every application plugin implements. A plugin
 * describes its config keys (validated by the config loader, with line and
 * column), turns them into a typed config, and checks what it needs on the
 * machine. The backup sequence calls `quiesce` and `resume` on what
 * `create` returns.
 *
 * @module
 */
import type { Problem } from "../src/errors.ts";
import type { Field, Location, ValidationContext } from "../src/schema.ts";

/** What every plugin's config has. */
export interface PluginConfig {
  type: string;
  name: string;
}

/** What `normalize` gets besides the values. */
export interface NormalizeContext {
  /** JSON path of the plugin's entry (`plugins[2]`), or "" for Azure's top-level keys. */
  path: string;
  /** Where to report warnings and problems found in the values. */
  validation: ValidationContext;
}

/** What `check` gets. */
export interface CheckContext {
  /** Where a JSON path of the config stands in the file. */
  locate(path: string): Location | undefined;
}

/**
 * A plugin type: its keys, how they become a config, and its checks.
 *
 * @example
 * ```ts
 * import type { PluginDefinition, PluginConfig } from "./plugin.ts";
 * const noop: PluginDefinition<PluginConfig> = {
 *   type: "noop",
 *   summary: "does nothing",
 *   fields: {},
 *   normalize: (_values, _ctx) => ({ type: "noop", name: "noop" }),
 *   check: () => [],
 * };
 * ```
 */
export interface PluginDefinition<C extends PluginConfig = PluginConfig> {
  /** The value of `"type"` in the config. */
  readonly type: string;
  /** One line for `--help` and the README. */
  readonly summary: string;
  /** The plugin's keys besides `type` and `name`. */
  readonly fields: Record<string, Field>;
  /** Builds the typed config from validated values (`name` and `type` included). */
  normalize(values: Record<string, unknown>, ctx: NormalizeContext): C;
  /** Checks that look at the machine: files, permissions. */
  check(config: C, ctx: CheckContext): Problem[] | Promise<Problem[]>;
}

/**
 * Adds the location of a config path to problems that lack one.
 *
 * @example
 * ```ts
 * import { locateProblems } from "./plugin.ts";
 * locateProblems([{ code: "Pre-ScriptNotFound", message: "…" }], "preScriptLocation", () => ({ line: 3, column: 25 }));
 * ```
 */
export function locateProblems(
  problems: Problem[],
  path: string,
  locate: (path: string) => Location | undefined,
  plugin?: string,
): Problem[] {
  const at = locate(path);
  return problems.map((p) => ({
    ...p,
    path: p.path ?? path,
    ...(at ?? {}),
    ...(plugin ? { plugin } : {}),
  }));
}
