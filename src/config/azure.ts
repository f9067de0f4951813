/**
 * How Azure's framework reads the keys it knows, for the keys vmsnap reads
 * the same way: what it tolerates (a timeout above its cap, a negative retry
 * count, a script param that is not a string) is a lenient finding, which
 * `vmsnap run` accepts with a warning and `vmsnap check` lists as a problem.
 * The `script` plugin (plugins/script.ts) describes Azure's top-level script
 * keys with these.
 *
 * @module
 */
import type { CustomSpec, Field } from "./spec.ts";
import { childPath } from "./spec.ts";
import { pythonStr } from "./python_str.ts";
import { report, validate } from "./validate.ts";

/** Azure's framework caps `timeoutInSeconds` at this (PluginHost's `timeoutInSeconds`). */
export const AZURE_MAX_TIMEOUT = 1800;

/**
 * Azure's script params: strings. A number, true/false or null is passed the
 * way Azure's framework passes it, as Python's `str()` of it (a lenient
 * finding).
 */
const azureParamsSpec: CustomSpec = {
  type: "custom",
  validate(node, path, ctx) {
    if (node.type !== "array") {
      return validate(node, { type: "array", items: { type: "string" } }, path, ctx);
    }
    const values = (node.children ?? []).map((item, i) => {
      const itemPath = childPath(path, i);
      if (item.type !== "number" && item.type !== "boolean" && item.type !== "null") {
        return validate(item, { type: "string" }, itemPath, ctx);
      }
      ctx.locations.set(itemPath, ctx.source.at(item.offset));
      const literal = ctx.source.raw(item);
      const text = pythonStr(literal);
      report(ctx, {
        node: item,
        path: itemPath,
        code: "ScriptParamNotString",
        message: `${itemPath} is ${literal}, not a string; Azure's framework passes it as ${
          JSON.stringify(text)
        } (Python's str()): vmsnap run does the same (and warns). Fix: write ${
          JSON.stringify(text)
        }, in quotes.`,
        lenient: true,
      });
      return text;
    });
    return values.some((v) => v === undefined) ? undefined : values;
  },
};

/**
 * Script params as Azure reads them, with the default of `field`.
 *
 * @example
 * ```ts
 * import { azureParams } from "./azure.ts";
 * const preScriptParams = azureParams({ type: "array", items: { type: "string" }, default: [] });
 * ```
 */
export function azureParams(field: Field): Field {
  return { ...azureParamsSpec, default: field.default };
}

/**
 * A retry count as Azure reads it: negative means none; any count is accepted
 * (clamped to `field`'s bounds, with a lenient finding).
 *
 * @example
 * ```ts
 * import { azureRetries } from "./azure.ts";
 * const retries = azureRetries({ type: "integer", min: 0, max: 100, default: 0 });
 * ```
 */
export function azureRetries(field: Field): Field {
  const max = field.type === "integer" ? field.max : undefined;
  return {
    ...field,
    type: "integer",
    clamp: {
      below: "Azure's framework treats a negative count as no retry, and so does vmsnap",
      above:
        `Azure's framework accepts any count (its retries never re-run the script); vmsnap re-runs a failed script at most ${max} times`,
    },
  };
}

/**
 * A script timeout as Azure reads it: from 1 to {@linkcode AZURE_MAX_TIMEOUT}
 * seconds, a larger one clamped to the cap (a lenient finding).
 *
 * @example
 * ```ts
 * import { azureTimeout } from "./azure.ts";
 * const timeoutInSeconds = azureTimeout(30);
 * ```
 */
export function azureTimeout(defaultSeconds: number): Field {
  return {
    type: "integer",
    min: 1,
    max: AZURE_MAX_TIMEOUT,
    default: defaultSeconds,
    clamp: {
      above:
        `Azure's framework caps script timeouts at ${AZURE_MAX_TIMEOUT} seconds, and so does vmsnap`,
    },
  };
}
