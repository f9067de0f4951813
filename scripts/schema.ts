/**
 * Writes docs/vmsnap.schema.json, the config's JSON Schema (what `vmsnap
 * schema` prints). A unit test fails when the checked-in file is stale.
 *
 * Usage: deno task schema
 *
 * @module
 */
import { writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { configJsonSchemaText } from "../src/config/json_schema.ts";
import { PLUGINS } from "../plugins/registry.ts";

const file = join(dirname(new URL(import.meta.url).pathname), "..", "docs", "vmsnap.schema.json");
writeFileSync(file, configJsonSchemaText({ plugins: PLUGINS }));
console.log(`wrote ${file}`);
