/**
 * The plugin types vmsnap knows. A new plugin is one file under `plugins/`
 * (its keys, and `definePlugin` from `plugin.ts`) and one line here.
 *
 * @module
 */
import type { PluginDefinition } from "./plugin.ts";
import { mongodbPlugin } from "./mongodb.ts";
import { mysqlPlugin } from "./mysql.ts";
import { postgresqlPlugin } from "./postgresql.ts";
import { redisPlugin } from "./redis.ts";
import { sqlitePlugin } from "./sqlite.ts";
import { scriptPlugin } from "./script.ts";

/** Every plugin type, in the order `--help`, the JSON Schema and messages list them. */
const TYPES: PluginDefinition[] = [
  scriptPlugin,
  mysqlPlugin,
  postgresqlPlugin,
  mongodbPlugin,
  redisPlugin,
  sqlitePlugin,
];

/** Every plugin type by its `"type"` value. */
export const PLUGINS: ReadonlyMap<string, PluginDefinition> = new Map(
  TYPES.map((plugin) => [plugin.type, plugin]),
);
