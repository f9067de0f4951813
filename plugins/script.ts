/**
 * The `script` plugin: Azure's pre/post-script pair. Azure's top-level keys
 * (`preScriptLocation`, …) are one implicit script plugin named after
 * `pluginName`; more can be listed under `plugins` with `"type": "script"`.
 *
 * @module
 */
import type { Problem } from "../src/errors.ts";
import { azureParams, azureRetries, azureTimeout } from "../src/config/azure.ts";
import { childPath, type Field } from "../src/config/spec.ts";
import type { Location } from "../src/config/syntax.ts";
import { reportAt } from "../src/config/validate.ts";
import {
  definePlugin,
  locateProblems,
  type NormalizeContext,
  type PluginConfig,
  type PluginEnv,
  type StepResult,
} from "./plugin.ts";
import { checkScript, type Phase, runScriptSafely, type ScriptStep } from "./script_runner.ts";

export type { Phase, ScriptStep };

/** A normalized script plugin config. */
export interface ScriptConfig extends PluginConfig {
  type: "script";
  pre: ScriptStep | null;
  post: ScriptStep | null;
  /** The budget of each script for all its attempts together. */
  timeoutInSeconds: number;
}

/** Azure's default script timeout. */
const DEFAULT_TIMEOUT_SECONDS = 30;
/** The longest a script of vmsnap's own `script` plugin may run: 24 hours. */
export const MAX_SCRIPT_TIMEOUT_SECONDS = 24 * 60 * 60;
const PATH_FIELD = { type: "string", absolutePath: true, default: "" } as const;
const PARAMS_FIELD = { type: "array", items: { type: "string" }, default: [] } as const;
const RETRIES_FIELD = { type: "integer", min: 0, max: 100, default: 0 } as const;

/** The keys of an entry of `plugins` with `"type": "script"`. */
const FIELDS = {
  pre: PATH_FIELD,
  post: PATH_FIELD,
  preParams: PARAMS_FIELD,
  postParams: PARAMS_FIELD,
  retries: RETRIES_FIELD,
  /** Azure's default, up to 24 hours (Azure's own keys stop at 1800 s). */
  timeoutInSeconds: {
    type: "integer",
    min: 1,
    max: MAX_SCRIPT_TIMEOUT_SECONDS,
    default: DEFAULT_TIMEOUT_SECONDS,
  },
} as const satisfies Record<string, Field>;

/** The keys a step is read from: its script's path, its params, its retry count. */
interface StepKeys {
  path: string;
  params: string;
  retries: string;
}

/** Azure's top-level keys of each step. */
const AZURE_KEYS: Record<Phase, StepKeys> = {
  pre: { path: "preScriptLocation", params: "preScriptParams", retries: "preScriptNoOfRetries" },
  post: {
    path: "postScriptLocation",
    params: "postScriptParams",
    retries: "postScriptNoOfRetries",
  },
};

/** The keys of each step in an entry of `plugins` (one retry count for both). */
const ENTRY_KEYS: Record<Phase, StepKeys> = {
  pre: { path: "pre", params: "preParams", retries: "retries" },
  post: { path: "post", params: "postParams", retries: "retries" },
};

/** Both steps, from the keys named (null for a step with no script). */
function steps(
  ctx: NormalizeContext,
  values: Record<string, unknown>,
  keys: Record<Phase, StepKeys>,
): Record<Phase, ScriptStep | null> {
  return { pre: step(ctx, values, keys.pre), post: step(ctx, values, keys.post) };
}

/** Builds a step, pointing out Azure's `""` placeholder params. */
function step(
  ctx: NormalizeContext,
  values: Record<string, unknown>,
  keys: StepKeys,
): ScriptStep | null {
  const path = typeof values[keys.path] === "string" ? values[keys.path] as string : "";
  if (path === "") return null;
  const given = values[keys.params];
  const params = Array.isArray(given) ? given as string[] : [];
  const paramsKey = childPath(ctx.path, keys.params);
  // One warning per key, however many placeholders it holds.
  const empty = params.flatMap((param, i) => param === "" ? [i] : []);
  if (empty.length > 0) {
    reportAt(ctx.validation, {
      path: paramsKey,
      code: "EmptyScriptParam",
      message: `${paramsKey} holds ${
        empty.length === 1 ? `""` : `${empty.length} ""`
      } (Azure's sample placeholder${empty.length === 1 ? "" : "s"}, at position${
        empty.length === 1 ? "" : "s"
      } ${
        empty.join(", ")
      }); each is passed to ${path} as an empty argument, as Azure does. Fix: remove them unless the script expects them.`,
      warning: true,
    });
  }
  return {
    path,
    params,
    retries: typeof values[keys.retries] === "number" ? values[keys.retries] as number : 0,
    key: childPath(ctx.path, keys.path),
  };
}

/**
 * The implicit script plugin of Azure's top-level keys, or null when neither
 * script is set.
 *
 * @example
 * ```ts
 * import { azureScriptPlugin } from "./script.ts";
 * // azureScriptPlugin({ pluginName: "ScriptRunner", preScriptLocation: "/etc/azure/pre.sh", … }, ctx)
 * ```
 */
export function azureScriptPlugin(
  values: Record<string, unknown>,
  ctx: NormalizeContext,
): ScriptConfig | null {
  const { pre, post } = steps(ctx, values, AZURE_KEYS);
  if (!pre && !post) return null;
  return {
    type: "script",
    name: String(values.pluginName ?? "ScriptRunner"),
    pre,
    post,
    timeoutInSeconds: Number(values.timeoutInSeconds ?? DEFAULT_TIMEOUT_SECONDS),
  };
}

/**
 * Azure's top-level script keys, with Azure's defaults, read as Azure's
 * framework reads them (what it tolerates is a lenient finding): a timeout up
 * to Azure's cap (1800 s), any retry count, params that
 * are not strings.
 */
export const AZURE_SCRIPT_FIELDS: Record<string, Field> = {
  preScriptLocation: PATH_FIELD,
  postScriptLocation: PATH_FIELD,
  preScriptParams: azureParams(PARAMS_FIELD),
  postScriptParams: azureParams(PARAMS_FIELD),
  preScriptNoOfRetries: azureRetries(RETRIES_FIELD),
  postScriptNoOfRetries: azureRetries(RETRIES_FIELD),
  timeoutInSeconds: azureTimeout(DEFAULT_TIMEOUT_SECONDS),
};

/** Checks that each configured script exists and passes the permission rules. */
export function checkScripts(
  config: ScriptConfig,
  locate: (path: string) => Location | undefined,
): Problem[] {
  const problems: Problem[] = [];
  for (const phase of ["pre", "post"] as const) {
    const s = config[phase];
    if (!s) continue;
    const found = checkScript(s.path, {
      phase,
      what: `${phase}-script of plugin "${config.name}"`,
    });
    problems.push(...locateProblems(found, s.key, locate, config.name));
  }
  return problems;
}

/** The `script` plugin type. */
export const scriptPlugin = definePlugin({
  type: "script",
  summary:
    "runs a pre-script before the freeze and a post-script after the thaw (Azure's framework)",
  fields: FIELDS,
  // The config is the steps built from the keys, not the keys as they are.
  normalize(values, ctx): ScriptConfig {
    const { pre, post } = steps(ctx, values, ENTRY_KEYS);
    if (!pre && !post) {
      reportAt(ctx.validation, {
        path: ctx.path,
        code: "MissingConfigKey",
        message:
          `script plugin "${values.name}" has neither "pre" nor "post". Fix: give at least one script path.`,
      });
    }
    return {
      type: "script",
      name: values.name,
      pre,
      post,
      timeoutInSeconds: values.timeoutInSeconds ?? DEFAULT_TIMEOUT_SECONDS,
    };
  },
  topLevel: { fields: AZURE_SCRIPT_FIELDS, normalize: azureScriptPlugin },
  check: (config, ctx) => checkScripts(config, ctx.locate),
  create: (config) => {
    const side = (phase: Phase) => (env: PluginEnv): Promise<StepResult> => {
      const step = config[phase];
      if (!step) {
        return Promise.resolve({ ok: true, skipped: true, durationMs: 0, errors: [], facts: {} });
      }
      return runScriptSafely({
        plugin: config.name,
        phase,
        step,
        timeoutInSeconds: config.timeoutInSeconds,
        env,
      });
    };
    return { quiesce: side("pre"), resume: side("post") };
  },
});
