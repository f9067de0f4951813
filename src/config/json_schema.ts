/**
 * The config's JSON Schema (draft-07, what editors and config management
 * tools read), generated from the same field specs the validator uses
 * ({@link ./keys.ts} `configSpec`, with each plugin type's `fields`). `vmsnap
 * schema` prints it; `docs/vmsnap.schema.json` is this output, checked in.
 *
 * The rule: a config is valid against the schema when `vmsnap check` finds no
 * problem in its shape and nothing to warn about either. The schema is a
 * little stricter than `run` where Azure's framework is lenient (an unknown
 * top-level key, a timeout above Azure's cap): those are warnings for `run`,
 * errors for the schema, so that a deployment catches them first. Checks
 * that need the machine (files, permissions, mounts) and rules across keys
 * (`snapshot.command` or `external`, an absolute `command[0]`, a script
 * plugin's `pre` or `post`, MongoDB's `uri` or `uriFile`) are `vmsnap check`'s.
 *
 * @module
 */
import { configSpec, pluginEntrySpec } from "./keys.ts";
import type { ConfigOptions, PluginSpecs } from "./plugin_spec.ts";
import type { Field, ObjectSpec, Spec } from "./spec.ts";

/** A JSON Schema object. */
export type JsonSchema = Record<string, unknown>;

/** Validators written as code (custom specs): their schema, by JSON path ("*" for an index). */
function customSchemas(plugins: PluginSpecs): Record<string, JsonSchema> {
  const absolute = { type: "string", pattern: "^/", minLength: 1 };
  const params = {
    type: "array",
    items: { type: "string" },
    description:
      "Arguments passed to the script. Azure's framework also takes numbers, true/false and null (as Python's str() of them); vmsnap does too, with a warning.",
  };
  const customs: Record<string, JsonSchema> = {
    "freeze.mounts": {
      description:
        '"auto" (every block-backed filesystem, children first) or mount points frozen in the order given.',
      oneOf: [{ const: "auto" }, { type: "array", items: absolute }],
    },
    preScriptParams: params,
    postScriptParams: params,
  };
  customs.plugins = {
    type: "array",
    description: "Applications to quiesce, each with its type's keys.",
    items: {
      oneOf: [...plugins.values()].map((definition) =>
        objectSchema(
          pluginEntrySpec(definition),
          { path: `plugins[*]`, customs },
          { type: { const: definition.type, description: definition.summary } },
        )
      ),
    },
  };
  return customs;
}

/** Where a spec stands: its JSON path, and the schemas of the custom validators. */
interface At {
  path: string;
  customs: Record<string, JsonSchema>;
}

/** A field's schema; `path` names it in errors and finds custom validators. */
function specSchema(spec: Spec | Field, { path, customs }: At): JsonSchema {
  const out: JsonSchema = {};
  switch (spec.type) {
    case "string":
      out.type = "string";
      if (spec.oneOf) out.enum = [...spec.oneOf];
      if (spec.nonEmpty) out.minLength = 1;
      if (spec.absolutePath) {
        // "" stands for "none" unless the spec refuses it.
        out.pattern = spec.nonEmpty ? "^/" : "^(/|$)";
      }
      break;
    case "integer":
      out.type = "integer";
      if (spec.min !== undefined) out.minimum = spec.min;
      if (spec.max !== undefined) out.maximum = spec.max;
      break;
    case "boolean":
      out.type = "boolean";
      break;
    case "array":
      out.type = "array";
      out.items = specSchema(spec.items, { path: `${path}[*]`, customs });
      if (spec.minItems !== undefined) out.minItems = spec.minItems;
      break;
    case "object":
      Object.assign(out, objectSchema(spec, { path, customs }));
      break;
    case "custom": {
      const known = customs[path];
      if (!known) {
        throw new Error(
          `json_schema.ts: the config key ${path} is validated by code and has no JSON Schema. Fix: add it to customSchemas().`,
        );
      }
      Object.assign(out, known);
    }
  }
  if ("default" in spec && spec.default !== undefined) out.default = spec.default;
  return out;
}

/** An object's schema: its fields, required keys, no other keys (but the ignored ones). */
function objectSchema(spec: ObjectSpec, at: At, extra: JsonSchema = {}): JsonSchema {
  const properties: Record<string, JsonSchema> = {};
  const required: string[] = [];
  for (const [key, field] of Object.entries(spec.fields)) {
    properties[key] = specSchema(field, { ...at, path: at.path ? `${at.path}.${key}` : key });
    if (field.required) required.push(key);
  }
  for (const [key, why] of Object.entries(spec.ignored ?? {})) {
    properties[key] = { description: `Accepted for Azure's sample and ignored: ${why}` };
  }
  Object.assign(properties, extra);
  return {
    type: "object",
    properties,
    ...(required.length ? { required } : {}),
    additionalProperties: false,
  };
}

/**
 * The config's JSON Schema.
 *
 * @example
 * ```ts
 * import { configJsonSchema } from "./json_schema.ts";
 * const schema = configJsonSchema({ plugins: new Map() }); // PLUGINS in production
 * schema.$schema; // "http://json-schema.org/draft-07/schema#"
 * ```
 */
export function configJsonSchema(options: ConfigOptions): JsonSchema {
  return {
    $schema: "http://json-schema.org/draft-07/schema#",
    title: "vmsnap config (Azure Backup's VMSnapshotScriptPluginConfig.json with vmsnap's keys)",
    description:
      "Generated from vmsnap's config validator (vmsnap schema). Files, permissions and mounts are checked by vmsnap check.",
    ...objectSchema(configSpec(options.plugins), {
      path: "",
      customs: customSchemas(options.plugins),
    }),
  };
}

/**
 * The schema as `vmsnap schema` prints it and docs/vmsnap.schema.json holds it.
 *
 * @example
 * ```ts
 * import { configJsonSchemaText } from "./json_schema.ts";
 * JSON.parse(configJsonSchemaText({ plugins: new Map() })).type; // "object"
 * ```
 */
export function configJsonSchemaText(options: ConfigOptions): string {
  return `${JSON.stringify(configJsonSchema(options), null, 2)}\n`;
}
