/**
 * The plugin types vmsnap knows. A new plugin is one file under `plugins/`
 * and one line here.
 *
 * @module
 */
import type { PluginConfig, PluginDefinition } from "./plugin.ts";
import { mongodbPlugin } from "./mongodb.ts";
import { mysqlPlugin } from "./mysql.ts";
import { postgresqlPlugin } from "./postgresql.ts";
import { redisPlugin } from "./redis.ts";
import { sqlitePlugin } from "./sqlite.ts";
import { scriptPlugin } from "./script.ts";

/** Every plugin type by its `"type"` value. */
// deno-lint-ignore no-explicit-any
export const PLUGINS: ReadonlyMap<string, PluginDefinition<any>> = new Map<
  string,
  PluginDefinition<PluginConfig>
>([
  [scriptPlugin.type, scriptPlugin as PluginDefinition<PluginConfig>],
  [mysqlPlugin.type, mysqlPlugin as unknown as PluginDefinition<PluginConfig>],
  [postgresqlPlugin.type, postgresqlPlugin as unknown as PluginDefinition<PluginConfig>],
  [mongodbPlugin.type, mongodbPlugin as unknown as PluginDefinition<PluginConfig>],
  [redisPlugin.type, redisPlugin as unknown as PluginDefinition<PluginConfig>],
  [sqlitePlugin.type, sqlitePlugin as unknown as PluginDefinition<PluginConfig>],
]);
