/**
 * The config: Azure's `VMSnapshotScriptPluginConfig.json`, read as JSONC, with
 * vmsnap's optional extensions. Loading reports every problem at once, each
 * with a stable code, its JSON path, and line:column in the file.
 *
 * The steps, each in its module: read the file ({@link ./read.ts}), parse its
 * syntax ({@link ./syntax.ts}), validate it against the config's keys
 * ({@link ./keys.ts}, {@link ./validate.ts}), then build the typed config
 * here. The plugin types come from the caller ({@linkcode ConfigOptions}).
 *
 * @module
 */
import type { Node } from "jsonc-parser";
import { DEFAULT_MAX_FROZEN_SECONDS, DEFAULT_SNAPSHOT_TIMEOUT_SECONDS } from "../defaults.ts";
import type { Problem } from "../errors.ts";
import { AZURE_MAX_TIMEOUT } from "./azure.ts";
import { configSpec } from "./keys.ts";
import { LOG_LEVELS, type LogLevel } from "./log_level.ts";
import { type ConfigOptions, type PluginConfig, topLevelKeys } from "./plugin_spec.ts";
import { configNotRegular, MAX_CONFIG_BYTES, readConfigText } from "./read.ts";
import { type Location, parseSyntax, SourceMap } from "./syntax.ts";
import { childPath, type ValidationContext } from "./spec.ts";
import { report, reportAt, validateObject } from "./validate.ts";

// What other subsystems read from the config's modules, in one place.
export {
  DEFAULT_CONFIG_PATH,
  DEFAULT_LOG_FILE,
  DEFAULT_METRICS_FILE,
  DEFAULT_STATE_DIR,
} from "../defaults.ts";
export {
  AZURE_MAX_TIMEOUT,
  configNotRegular,
  type ConfigOptions,
  LOG_LEVELS,
  type LogLevel,
  MAX_CONFIG_BYTES,
};

/** Which filesystems to freeze. */
export interface FreezeConfig {
  /** `"auto"`, or mount points frozen in the order given. */
  mounts: "auto" | string[];
  /** Mount points or globs never frozen. */
  exclude: string[];
  /** The guard thaws everything after this long. */
  maxFrozenSeconds: number;
  /** Expedited RCU grace periods around the FIFREEZE calls (src/freeze/rcu_expedite.ts). */
  expediteRcu: boolean;
}

/** How the snapshot is taken. */
export type SnapshotConfig =
  | { kind: "command"; command: string[]; timeoutInSeconds: number }
  | { kind: "external"; timeoutInSeconds: number };

/** The normalized config, with every default filled in. */
export interface Config {
  /** The file it was read from. */
  file: string;
  pluginName: string;
  continueBackupOnFailure: boolean;
  fsFreezeEnabled: boolean;
  freeze: FreezeConfig;
  snapshot: SnapshotConfig | null;
  /** Every plugin, the implicit Azure script plugin first. */
  plugins: PluginConfig[];
  log: { file: string; level: LogLevel };
  stateDir: string;
  /** Hook mode: the holder ends its hold by itself after maxHoldSeconds. */
  hook: { maxHoldSeconds: number };
  /** The Prometheus textfile written after each run (src/state/metrics.ts). */
  metrics: { textfile: string };
}

/** A loaded config and what was found while loading it. */
export interface LoadedConfig {
  config: Config;
  /** Problems: any of them makes the config unusable for `run`. */
  problems: Problem[];
  /**
   * What Azure's framework tolerates and vmsnap reads the same way (an unknown
   * key ignored, a timeout clamped to 1800, a param passed as Python's str()):
   * `run` goes on with each as a warning; `check` lists them as problems.
   */
  lenient: Problem[];
  /** Warnings: worth knowing, nothing stops. */
  warnings: Problem[];
  /** JSON path → where its value stands in the file. */
  locations: Map<string, Location>;
}

/** An object with no keys, validated when the syntax is broken: the config is then the defaults. */
const EMPTY_OBJECT = { type: "object", offset: 0, length: 0, children: [] } as Node;

/**
 * Parses and validates config text. Never throws on bad input: syntax errors
 * come back as `IncorrectJSONConfigFile` problems, and the config is then the
 * defaults (which `run` must not use: check `problems`).
 *
 * @example
 * ```ts
 * import { parseConfig } from "./config.ts";
 * const plugins = new Map(); // plugins/registry.ts PLUGINS in production
 * const { config, problems } = parseConfig('{ "fsFreezeEnabled": false, }', "/etc/azure/x.json", { plugins });
 * // problems.length === 0, config.fsFreezeEnabled === false
 * ```
 */
export function parseConfig(text: string, file: string, options: ConfigOptions): LoadedConfig {
  if (text.charCodeAt(0) === 0xfeff) text = text.slice(1);
  const ctx: ValidationContext = {
    file,
    source: new SourceMap(text),
    problems: [],
    warnings: [],
    lenient: [],
    locations: new Map(),
  };
  const { root, errors } = parseSyntax(text);
  for (const { offset, message } of errors) {
    report(ctx, {
      node: { offset, length: 0, type: "null" } as Node,
      path: "",
      code: "IncorrectJSONConfigFile",
      message,
    });
  }
  const spec = configSpec(options.plugins);
  const values = root
    ? validateObject(root, spec, "", ctx)
    : validateObject(EMPTY_OBJECT, spec, "", { ...ctx, problems: [], warnings: [], lenient: [] });
  return {
    config: buildConfig(values, { file, ctx, options }),
    problems: ctx.problems,
    lenient: ctx.lenient!,
    warnings: ctx.warnings,
    locations: ctx.locations,
  };
}

/** Every plugin, the implicit one of the top-level keys first; a name given twice is a problem. */
function buildPlugins(
  values: Record<string, unknown>,
  ctx: ValidationContext,
  options: ConfigOptions,
): PluginConfig[] {
  const plugins: PluginConfig[] = [];
  const implicit = topLevelKeys(options.plugins)?.normalize(values, { path: "", validation: ctx });
  if (implicit) plugins.push(implicit);
  const listed = (values.plugins as (PluginConfig | undefined)[] | undefined) ?? [];
  const names = new Map<string, string>();
  if (implicit) names.set(implicit.name, "pluginName");
  listed.forEach((plugin, i) => {
    if (!plugin) return;
    const path = childPath(childPath("plugins", i), "name");
    const previous = names.get(plugin.name);
    if (previous !== undefined) {
      reportAt(ctx, {
        path,
        code: "DuplicatePluginName",
        message: `plugin name ${
          JSON.stringify(plugin.name)
        } is already used by ${previous}. Fix: give every plugin a unique "name".`,
        near: childPath("plugins", i),
      });
    }
    names.set(plugin.name, path);
    plugins.push(plugin);
  });
  return plugins;
}

/** Turns validated top-level values into the typed config; checks cross-key rules. */
function buildConfig(
  values: Record<string, unknown>,
  { file, ctx, options }: { file: string; ctx: ValidationContext; options: ConfigOptions },
): Config {
  const freeze = values.freeze as FreezeConfig;
  return {
    file,
    pluginName: values.pluginName as string,
    continueBackupOnFailure: values.continueBackupOnFailure as boolean,
    fsFreezeEnabled: values.fsFreezeEnabled as boolean,
    freeze: {
      mounts: freeze.mounts ?? "auto",
      exclude: freeze.exclude ?? [],
      maxFrozenSeconds: freeze.maxFrozenSeconds ?? DEFAULT_MAX_FROZEN_SECONDS,
      expediteRcu: freeze.expediteRcu ?? false,
    },
    snapshot: buildSnapshot(values.snapshot as Record<string, unknown> | undefined, ctx),
    plugins: buildPlugins(values, ctx, options),
    log: values.log as Config["log"],
    stateDir: values.stateDir as string,
    hook: values.hook as Config["hook"],
    metrics: values.metrics as Config["metrics"],
  };
}

/** The snapshot method: a command, or the external handshake, not both. */
function buildSnapshot(
  values: Record<string, unknown> | undefined,
  ctx: ValidationContext,
): SnapshotConfig | null {
  if (!values) return null;
  const command = values.command as string[] | undefined;
  const external = values.external as { timeoutInSeconds: number } | undefined;
  if (command && external) {
    reportAt(ctx, {
      path: "snapshot",
      code: "InvalidConfigValue",
      message:
        `snapshot has both "command" and "external"; vmsnap takes one snapshot. Fix: keep one of them.`,
    });
  }
  if (command) {
    if (!command[0].startsWith("/")) {
      const path = "snapshot.command[0]";
      reportAt(ctx, {
        path,
        code: "RelativePath",
        message: `${path} is ${
          JSON.stringify(command[0])
        }; the snapshot command runs without a shell or PATH search. Fix: write the executable's absolute path (see \`command -v ${
          command[0]
        }\`).`,
      });
    }
    return {
      kind: "command",
      command,
      timeoutInSeconds: (values.timeoutInSeconds as number) ?? DEFAULT_SNAPSHOT_TIMEOUT_SECONDS,
    };
  }
  if (external) return { kind: "external", timeoutInSeconds: external.timeoutInSeconds };
  const given = (key: string) => ctx.locations.has(`snapshot.${key}`);
  if (!given("command") && !given("external") && ctx.locations.has("snapshot")) {
    reportAt(ctx, {
      path: "snapshot",
      code: "MissingConfigKey",
      message:
        `snapshot needs "command" (an argv array) or "external": {}. Fix: add one of command, external.`,
    });
  }
  return null;
}

/**
 * Reads and parses a config file. Throws a `VmsnapError` when the file
 * cannot be read at all (`ConfigFileNotFound`, `ConfigFileNotReadable`,
 * `ConfigFileNotRegular`) or is not text or too big (`IncorrectJSONConfigFile`);
 * everything else comes back as problems.
 *
 * @example
 * ```ts
 * import { loadConfig } from "./config.ts";
 * const plugins = new Map(); // plugins/registry.ts PLUGINS in production
 * const { config, problems } = loadConfig("/etc/azure/VMSnapshotScriptPluginConfig.json", { plugins });
 * ```
 */
export function loadConfig(file: string, options: ConfigOptions): LoadedConfig {
  return parseConfig(readConfigText(file), file, options);
}
