/**
 * What the config needs of a plugin type: its keys, and how their validated
 * values become the plugin's config. The config loader gets the plugin types
 * from its caller (`parseConfig(text, file, { plugins })`), never from the
 * registry itself: plugins/ sits above config/, and a test registers a fake
 * plugin under its own type name. A plugin type (plugins/plugin.ts
 * `PluginDefinition`) is this and more: its checks, its runtime.
 *
 * @module
 */
import type { Field, ValidationContext } from "./spec.ts";

/** What every plugin's config has. */
export interface PluginConfig {
  type: string;
  name: string;
  /** Quiesce order: stages ascending (each stage in parallel), resume descending; default 0. */
  stage?: number;
}

/** What `normalize` gets besides the values. */
export interface NormalizeContext {
  /** JSON path of the plugin's entry (`plugins[2]`), or "" for Azure's top-level keys. */
  path: string;
  /** Where to report warnings and problems found in the values. */
  validation: ValidationContext;
}

/**
 * Keys at the config's top level that a plugin type reads as one implicit
 * plugin of its own: Azure's `preScriptLocation`, `postScriptLocation`, …,
 * read by the `script` type.
 */
export interface TopLevelKeys {
  /** The keys, in the order they stand in the config (and its JSON Schema). */
  readonly fields: Record<string, Field>;
  /** The implicit plugin from every top-level value, or null when the keys configure none. */
  normalize(values: Record<string, unknown>, ctx: NormalizeContext): PluginConfig | null;
}

/** The config's view of a plugin type. */
export interface PluginSpec<C extends PluginConfig = PluginConfig> {
  /** The value of `"type"` in the config. */
  readonly type: string;
  /** One line for `--help`, the README and the JSON Schema. */
  readonly summary: string;
  /** The plugin's keys besides `type`, `name` and `stage`. */
  readonly fields: Record<string, Field>;
  /** Builds the typed config from validated values (`name` and `type` included). */
  normalize(values: Record<string, unknown>, ctx: NormalizeContext): C;
  /** Top-level keys this type reads as an implicit plugin (at most one type has them). */
  readonly topLevel?: TopLevelKeys;
}

/** Plugin types by their `"type"` value (plugins/registry.ts `PLUGINS` in production). */
export type PluginSpecs = ReadonlyMap<string, PluginSpec>;

/** What reading a config depends on. */
export interface ConfigOptions {
  /** The plugin types the config may name. */
  plugins: PluginSpecs;
}

/**
 * The one plugin type that reads top-level keys, if any.
 *
 * @example
 * ```ts
 * import { topLevelKeys } from "./plugin_spec.ts";
 * topLevelKeys(new Map()); // undefined
 * ```
 */
export function topLevelKeys(plugins: PluginSpecs): TopLevelKeys | undefined {
  for (const spec of plugins.values()) if (spec.topLevel) return spec.topLevel;
  return undefined;
}
