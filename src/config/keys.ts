/**
 * The config's keys, as field specs ({@link ./spec.ts}): Azure's framework
 * keys, the top-level keys of the plugin type that reads them (Azure's
 * script keys, from the `script` plugin), vmsnap's own keys, and each entry
 * of `plugins` through its type's keys. The validator checks a config
 * against {@linkcode configSpec}; the JSON Schema is generated from it.
 *
 * @module
 */
import type { Node } from "jsonc-parser";
import {
  DEFAULT_LOG_FILE,
  DEFAULT_MAX_FROZEN_SECONDS,
  DEFAULT_METRICS_FILE,
  DEFAULT_SNAPSHOT_TIMEOUT_SECONDS,
  DEFAULT_STATE_DIR,
} from "../defaults.ts";
import { LOG_LEVELS } from "./log_level.ts";
import {
  type PluginConfig,
  type PluginSpec,
  type PluginSpecs,
  topLevelKeys,
} from "./plugin_spec.ts";
import {
  childPath,
  type Field,
  type ObjectSpec,
  type Spec,
  type ValidationContext,
} from "./spec.ts";
import { didYouMean } from "./suggest.ts";
import { properties, report, validate, validateObject } from "./validate.ts";

const absolutePath: Spec = { type: "string", absolutePath: true, nonEmpty: true };

const mountsSpec: Spec = {
  type: "custom",
  validate(node, path, ctx) {
    if (node.type === "string" && node.value === "auto") return "auto";
    if (node.type === "array") {
      return validate(node, { type: "array", items: absolutePath }, path, ctx);
    }
    report(ctx, {
      node,
      path,
      code: node.type === "string" ? "InvalidConfigValue" : "InvalidConfigType",
      message: `${path} must be "auto" or a list of absolute mount points, found ${
        node.type === "string" ? JSON.stringify(node.value) : `a ${node.type}`
      }. Fix: write "auto" or ["/data", "/var/lib/mysql"].`,
    });
    return undefined;
  },
};

const snapshotSpec: ObjectSpec = {
  type: "object",
  fields: {
    command: { type: "array", items: { type: "string", nonEmpty: true }, minItems: 1 },
    timeoutInSeconds: { type: "integer", min: 1, max: 3600 },
    external: {
      type: "object",
      fields: {
        timeoutInSeconds: {
          type: "integer",
          min: 1,
          max: 3600,
          default: DEFAULT_SNAPSHOT_TIMEOUT_SECONDS,
        },
      },
    },
  },
};

/** Every plugin's `stage`: quiesce ascending, resume descending (src/run/stages.ts). */
export const STAGE_FIELD: Field = { type: "integer", min: -100, max: 100, default: 0 };

/**
 * The keys of one entry of `plugins` of a type: `type`, `name`, `stage`, then its own.
 *
 * @example
 * ```ts
 * import { pluginEntrySpec } from "./keys.ts";
 * const spec = pluginEntrySpec({ type: "noop", summary: "", fields: {}, normalize: () => ({ type: "noop", name: "x" }) });
 * Object.keys(spec.fields); // ["type", "name", "stage"]
 * ```
 */
export function pluginEntrySpec(plugin: PluginSpec): ObjectSpec {
  return {
    type: "object",
    fields: {
      type: { type: "string", required: true },
      name: { type: "string", nonEmpty: true, default: plugin.type },
      stage: STAGE_FIELD,
      ...plugin.fields,
    },
  };
}

/** `plugins`: an array of entries, each validated through its type's keys. */
function pluginsSpec(plugins: PluginSpecs): Field {
  return {
    type: "custom",
    default: [],
    validate(node, path, ctx) {
      if (node.type !== "array") {
        report(ctx, {
          node,
          path,
          code: "InvalidConfigType",
          message: `${path} must be an array of plugin objects.`,
        });
        return undefined;
      }
      return (node.children ?? []).map((item, i) =>
        validatePlugin(item, childPath(path, i), ctx, plugins)
      );
    },
  };
}

/** The type of a `plugins` entry, or undefined (reported) when it names none this vmsnap knows. */
function pluginType(
  node: Node,
  path: string,
  ctx: ValidationContext,
  plugins: PluginSpecs,
): PluginSpec | undefined {
  const typeEntry = properties(node).findLast(([key]) => key === "type");
  const known = [...plugins.keys()];
  if (!typeEntry || typeEntry[2].type !== "string") {
    report(ctx, {
      node: typeEntry?.[2] ?? node,
      path: childPath(path, "type"),
      code: typeEntry ? "InvalidConfigType" : "MissingConfigKey",
      message: `${path} needs "type": one of ${known.map((k) => JSON.stringify(k)).join(", ")}.`,
    });
    return undefined;
  }
  const type = String(typeEntry[2].value);
  const definition = plugins.get(type);
  if (!definition) {
    report(ctx, {
      node: typeEntry[2],
      path: childPath(path, "type"),
      code: "UnknownPluginType",
      message: `${path} has the unknown plugin type ${JSON.stringify(type)}.${
        didYouMean(type, known)
      } This vmsnap knows: ${known.join(", ")}.`,
    });
  }
  return definition;
}

/** Validates one entry of `plugins` through its type's definition. */
function validatePlugin(
  node: Node,
  path: string,
  ctx: ValidationContext,
  plugins: PluginSpecs,
): PluginConfig | undefined {
  if (node.type !== "object") {
    report(ctx, {
      node,
      path,
      code: "InvalidConfigType",
      message: `${path} must be an object with a "type".`,
    });
    return undefined;
  }
  const definition = pluginType(node, path, ctx, plugins);
  if (!definition) return undefined;
  const values = validateObject(node, pluginEntrySpec(definition), path, ctx);
  return {
    ...definition.normalize(values, { path, validation: ctx }),
    stage: values.stage as number,
  };
}

/** Azure's framework keys (the script keys come from the plugin type that reads them). */
const FRAMEWORK_FIELDS = {
  pluginName: { type: "string", nonEmpty: true, default: "ScriptRunner" },
  continueBackupOnFailure: { type: "boolean", default: true },
  fsFreezeEnabled: { type: "boolean", default: true },
} as const satisfies Record<string, Field>;

/** vmsnap's own top-level keys, which Azure's framework never reads. */
function vmsnapFields(plugins: PluginSpecs): Record<string, Field> {
  return {
    freeze: {
      type: "object",
      default: {},
      fields: {
        mounts: { ...mountsSpec, default: "auto" },
        exclude: { type: "array", items: { type: "string", nonEmpty: true }, default: [] },
        maxFrozenSeconds: {
          type: "integer",
          min: 1,
          max: 3600,
          default: DEFAULT_MAX_FROZEN_SECONDS,
        },
        expediteRcu: { type: "boolean", default: false },
      },
    },
    snapshot: snapshotSpec,
    plugins: pluginsSpec(plugins),
    log: {
      type: "object",
      default: {},
      fields: {
        file: { ...absolutePath, default: DEFAULT_LOG_FILE },
        level: { type: "string", oneOf: LOG_LEVELS, default: "info" },
      },
    },
    stateDir: { ...absolutePath, default: DEFAULT_STATE_DIR },
    hook: {
      type: "object",
      default: {},
      fields: { maxHoldSeconds: { type: "integer", min: 1, max: 86400, default: 600 } },
    },
    metrics: {
      type: "object",
      default: {},
      fields: { textfile: { ...absolutePath, default: DEFAULT_METRICS_FILE } },
    },
  };
}

/**
 * The whole config, top-level keys first (Azure's), then vmsnap's. The top
 * level is read as Azure reads it (unknown keys ignored, the last of a key
 * given twice wins) except for vmsnap's own keys; vmsnap's objects are strict.
 *
 * @example
 * ```ts
 * import { configSpec } from "./keys.ts";
 * Object.keys(configSpec(new Map()).fields)[0]; // "pluginName"
 * ```
 */
export function configSpec(plugins: PluginSpecs): ObjectSpec {
  const { pluginName, ...framework } = FRAMEWORK_FIELDS;
  const vmsnap = vmsnapFields(plugins);
  return {
    type: "object",
    fields: { pluginName, ...topLevelKeys(plugins)?.fields, ...framework, ...vmsnap },
    ignored: {
      appName: "vmsnap does not use it.",
      ScriptsExecutionPollTimeSeconds: "vmsnap waits for a script's exit instead of polling.",
    },
    azure: { strict: Object.keys(vmsnap) },
  };
}
