/**
 * The config: Azure's `VMSnapshotScriptPluginConfig.json`, read as JSONC, with
 * vmsnap's optional extensions. Loading reports every problem at once, each
 * with a stable code, its JSON path, and line:column in the file.
 *
 * @module
 */
import { closeSync, constants, fstatSync, openSync, readSync, statSync } from "node:fs";
import { fileKind } from "../sys/file_type.ts";
import {
  createScanner,
  type Node,
  type ParseError,
  parseTree,
  printParseErrorCode,
} from "jsonc-parser";
import { type Problem, VmsnapError } from "../errors.ts";
import { pythonStr } from "./python_str.ts";
import {
  childPath,
  type CustomSpec,
  type Field,
  type Location,
  type ObjectSpec,
  properties,
  report,
  reportAt,
  SourceMap,
  type Spec,
  validate,
  validateObject,
  type ValidationContext,
} from "./schema.ts";
import { didYouMean } from "./suggest.ts";
import type { PluginConfig } from "../../plugins/plugin.ts";
import { PLUGINS } from "../../plugins/registry.ts";
import { AZURE_SCRIPT_FIELDS, azureScriptPlugin } from "../../plugins/script.ts";

/** Where Azure's framework and vmsnap look for the config. */
export const DEFAULT_CONFIG_PATH = "/etc/azure/VMSnapshotScriptPluginConfig.json";
/** Where vmsnap keeps its lock and markers unless the config says otherwise. */
export const DEFAULT_STATE_DIR = "/var/lib/vmsnap";
/** Where the Prometheus textfile goes unless `metrics.textfile` says otherwise (node_exporter's directory on Debian). */
export const DEFAULT_METRICS_FILE = "/var/lib/prometheus/node-exporter/vmsnap.prom";
/** The log file unless `log.file` says otherwise. */
export const DEFAULT_LOG_FILE = "/var/log/vmsnap/vmsnap.jsonl";
/** The largest config file read (a config is a few hundred bytes). */
export const MAX_CONFIG_BYTES = 1 << 20;
/** The deepest nesting accepted. */
const MAX_DEPTH = 32;

import { DEFAULT_MAX_FROZEN_SECONDS, DEFAULT_SNAPSHOT_TIMEOUT_SECONDS } from "../defaults.ts";
import { LOG_LEVELS, type LogLevel } from "./log_level.ts";
export { LOG_LEVELS, type LogLevel };

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

const pluginsSpec: Spec = {
  type: "custom",
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
    return (node.children ?? []).map((item, i) => validatePlugin(item, childPath(path, i), ctx));
  },
};

/** Azure's framework caps `timeoutInSeconds` at this (PluginHost's `timeoutInSeconds`). */
export const AZURE_MAX_TIMEOUT = 1800;

/**
 * Azure's script params: strings. A number, true/false or null is passed the
 * way Azure's framework passes it, as Python's `str()` of it (a lenient finding).
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
 * Azure's keys, read as Azure's framework reads them: what it tolerates (a
 * timeout above 1800, a negative retry count, a non-string param) is a
 * lenient finding, not a problem. The defaults are the script plugin's.
 */
const AZURE_FIELDS: Record<string, Field> = {
  pluginName: { type: "string", nonEmpty: true, default: "ScriptRunner" },
  ...AZURE_SCRIPT_FIELDS,
  preScriptParams: { ...azureParamsSpec, default: AZURE_SCRIPT_FIELDS.preScriptParams.default },
  postScriptParams: { ...azureParamsSpec, default: AZURE_SCRIPT_FIELDS.postScriptParams.default },
  preScriptNoOfRetries: azureRetries(AZURE_SCRIPT_FIELDS.preScriptNoOfRetries),
  postScriptNoOfRetries: azureRetries(AZURE_SCRIPT_FIELDS.postScriptNoOfRetries),
  timeoutInSeconds: {
    type: "integer",
    min: 1,
    max: AZURE_MAX_TIMEOUT,
    default: AZURE_SCRIPT_FIELDS.timeoutInSeconds.default,
    clamp: {
      above:
        `Azure's framework caps script timeouts at ${AZURE_MAX_TIMEOUT} seconds, and so does vmsnap`,
    },
  },
  continueBackupOnFailure: { type: "boolean", default: true },
  fsFreezeEnabled: { type: "boolean", default: true },
};

/** A retry count as Azure reads it: negative means none; any count is accepted. */
function azureRetries(field: Field): Field {
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

/** vmsnap's own top-level keys, which Azure's framework never reads. */
const VMSNAP_FIELDS: Record<string, Field> = {
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
  plugins: { ...pluginsSpec, default: [] },
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

/**
 * The whole config, top-level keys first (Azure's), then vmsnap's. The top
 * level is read as Azure reads it (unknown keys ignored, the last of a key
 * given twice wins) except for vmsnap's own keys; vmsnap's objects are strict.
 */
export const CONFIG_SPEC: ObjectSpec = {
  type: "object",
  fields: { ...AZURE_FIELDS, ...VMSNAP_FIELDS },
  ignored: {
    appName: "vmsnap does not use it.",
    ScriptsExecutionPollTimeSeconds: "vmsnap waits for a script's exit instead of polling.",
  },
  azure: { strict: Object.keys(VMSNAP_FIELDS) },
};

/** Every plugin's `stage`: quiesce ascending, resume descending (src/run/stages.ts). */
export const STAGE_FIELD: Field = { type: "integer", min: -100, max: 100, default: 0 };

/** Validates one entry of `plugins` through its type's definition. */
function validatePlugin(
  node: Node,
  path: string,
  ctx: ValidationContext,
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
  const typeEntry = properties(node).findLast(([key]) => key === "type");
  const known = [...PLUGINS.keys()];
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
  const definition = PLUGINS.get(type);
  if (!definition) {
    report(ctx, {
      node: typeEntry[2],
      path: childPath(path, "type"),
      code: "UnknownPluginType",
      message: `${path} has the unknown plugin type ${JSON.stringify(type)}.${
        didYouMean(type, known)
      } This vmsnap knows: ${known.join(", ")}.`,
    });
    return undefined;
  }
  const values = validateObject(
    node,
    {
      type: "object",
      fields: {
        type: { type: "string", required: true },
        name: { type: "string", nonEmpty: true, default: type },
        stage: STAGE_FIELD,
        ...definition.fields,
      },
    },
    path,
    ctx,
  );
  return {
    ...definition.normalize(values, { path, validation: ctx }),
    stage: values.stage as number,
  };
}

/** jsonc-parser's SyntaxKind values (a const enum, which isolated modules cannot import). */
const TOKEN = { openBrace: 1, closeBrace: 2, openBracket: 3, closeBracket: 4, eof: 17 } as const;

/** Refuses nesting deeper than MAX_DEPTH before the recursive parser sees it. */
function tooDeep(text: string): number | undefined {
  const scanner = createScanner(text, false);
  let depth = 0;
  for (let token = scanner.scan(); token !== TOKEN.eof; token = scanner.scan()) {
    if (token === TOKEN.openBrace || token === TOKEN.openBracket) {
      if (++depth > MAX_DEPTH) return scanner.getTokenOffset();
    } else if (token === TOKEN.closeBrace || token === TOKEN.closeBracket) {
      depth--;
    }
  }
  return undefined;
}

/** True when the text holds nothing but whitespace and comments. */
function isBlank(text: string): boolean {
  return createScanner(text, true).scan() === TOKEN.eof;
}

/** jsonc-parser's error names, said in words. */
const SYNTAX_WORDS: Record<string, string> = {
  InvalidSymbol:
    "this is not a JSON value (strings need double quotes; true, false, null are lower case)",
  InvalidNumberFormat: "a malformed number",
  PropertyNameExpected: "a key in double quotes is expected here",
  ValueExpected: "a value is expected here",
  ColonExpected: "a colon (:) is missing after the key",
  CommaExpected: "a comma is missing between two entries (at the end of the entry before)",
  CloseBraceExpected: "a } is missing to close the object",
  CloseBracketExpected: "a ] is missing to close the list",
  EndOfFileExpected: "there is more after the end of the config object",
  InvalidCommentToken: "a malformed comment",
  UnexpectedEndOfComment: "a /* comment is not closed with */",
  UnexpectedEndOfString: "a string is not closed with a double quote",
  UnexpectedEndOfNumber: "a number ends too early",
  InvalidUnicode: "a malformed \\u escape (four hex digits expected)",
  InvalidEscapeCharacter: "an invalid escape after a backslash (write \\\\ for a backslash)",
  InvalidCharacter: "a control character inside a string (write \\t or \\n)",
};

/** One syntax error in words, with the text found where it is short. */
function syntaxInWords(error: ParseError, text: string): string {
  const name = printParseErrorCode(error.error);
  const found = text.slice(error.offset, error.offset + error.length);
  if (name === "InvalidSymbol" && found.trim() !== "" && found.length <= 40) {
    return `${found} is not a JSON value (strings need double quotes; true, false, null are lower case)`;
  }
  const words = SYNTAX_WORDS[name] ?? name;
  return error.offset >= text.length ? `${words} (at the end of the file)` : words;
}

/**
 * Parses and validates config text. Never throws on bad input: syntax errors
 * come back as `IncorrectJSONConfigFile` problems, and the config is then the
 * defaults (which `run` must not use: check `problems`).
 *
 * @example
 * ```ts
 * import { parseConfig } from "./config.ts";
 * const { config, problems } = parseConfig('{ "fsFreezeEnabled": false, }', "/etc/azure/x.json");
 * // problems.length === 0, config.fsFreezeEnabled === false
 * ```
 */
export function parseConfig(text: string, file: string): LoadedConfig {
  if (text.charCodeAt(0) === 0xfeff) text = text.slice(1);
  const ctx: ValidationContext = {
    file,
    source: new SourceMap(text),
    problems: [],
    warnings: [],
    lenient: [],
    locations: new Map(),
  };
  const syntax = (offset: number, message: string) =>
    report(ctx, {
      node: { offset, length: 0, type: "null" } as Node,
      path: "",
      code: "IncorrectJSONConfigFile",
      message: message,
    });
  const deep = tooDeep(text);
  let root: Node | undefined;
  if (isBlank(text)) {
    syntax(
      0,
      `the file is empty; a config is a JSON object. Fix: start from Azure's sample ({ "pluginName": "ScriptRunner", "preScriptLocation": "", ... }).`,
    );
  } else if (deep !== undefined) {
    syntax(
      deep,
      `nesting deeper than ${MAX_DEPTH} levels; a vmsnap config is at most 4 levels deep.`,
    );
  } else {
    const errors: ParseError[] = [];
    root = parseTree(text, errors, { allowTrailingComma: true, disallowComments: false });
    for (const error of errors) {
      syntax(
        error.offset,
        `invalid JSON: ${
          syntaxInWords(error, text)
        }. Fix: correct the syntax here (comments and trailing commas are allowed).`,
      );
    }
    if (errors.length === 0 && root?.type !== "object") {
      syntax(
        root?.offset ?? 0,
        `the config must be a JSON object ({ ... }), found ${root ? `a ${root.type}` : "nothing"}.`,
      );
    }
  }
  const syntaxOk = ctx.problems.length === 0 && root !== undefined;
  const values = syntaxOk ? validateObject(root!, CONFIG_SPEC, "", ctx) : validateObject(
    { type: "object", offset: 0, length: 0, children: [] } as unknown as Node,
    CONFIG_SPEC,
    "",
    { ...ctx, problems: [], warnings: [], lenient: [] },
  );
  const config = buildConfig(values, file, ctx);
  return {
    config,
    problems: ctx.problems,
    lenient: ctx.lenient!,
    warnings: ctx.warnings,
    locations: ctx.locations,
  };
}

/** Turns validated top-level values into the typed config; checks cross-key rules. */
function buildConfig(
  values: Record<string, unknown>,
  file: string,
  ctx: ValidationContext,
): Config {
  const plugins: PluginConfig[] = [];
  const implicit = azureScriptPlugin(values, { path: "", validation: ctx });
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
    plugins,
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
 * The problem when the config path is not a regular file (a directory, a
 * device, a FIFO), found without opening it; undefined otherwise (a missing
 * file is left to the caller).
 *
 * @example
 * ```ts
 * import { configNotRegular } from "./config.ts";
 * configNotRegular("/dev/zero")?.code; // "ConfigFileNotRegular"
 * ```
 */
export function configNotRegular(file: string): Problem | undefined {
  let stats;
  try {
    stats = statSync(file);
  } catch {
    return undefined;
  }
  const kind = fileKind(stats);
  return kind === undefined ? undefined : notRegularProblem(file, kind);
}

function notRegularProblem(file: string, kind: string): Problem {
  return {
    code: "ConfigFileNotRegular",
    message:
      `${file} is ${kind}, not a config file; vmsnap reads only a regular file. Fix: name the JSON file itself (Azure's is ${DEFAULT_CONFIG_PATH}).`,
  };
}

/**
 * The config's bytes: only from a regular file of at most MAX_CONFIG_BYTES,
 * checked on the open descriptor before reading (a device or a FIFO is never
 * read, and never blocks the open).
 */
function readConfigBytes(file: string): Uint8Array {
  let fd: number;
  try {
    fd = openSync(file, constants.O_RDONLY | constants.O_NONBLOCK | constants.O_NOCTTY);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === "ENOENT" || code === "ENOTDIR") {
      throw new VmsnapError(
        "ConfigFileNotFound",
        `${file} does not exist. Fix: create it (Azure's sample config works as is), or point --config or VMSNAP_CONFIG at your config.`,
      );
    }
    const found = code === "ENXIO" ? configNotRegular(file) : undefined; // a socket
    if (found) throw new VmsnapError(found.code, found.message);
    throw new VmsnapError(
      "ConfigFileNotReadable",
      `${file} cannot be read (${code ?? (error as Error).message}). Fix: run vmsnap as root.`,
    );
  }
  try {
    const stats = fstatSync(fd);
    const kind = fileKind(stats);
    if (kind !== undefined) {
      const found = notRegularProblem(file, kind);
      throw new VmsnapError(found.code, found.message);
    }
    const tooBig = (size: number) =>
      new VmsnapError(
        "IncorrectJSONConfigFile",
        `${file} is ${size} bytes; a config is at most ${MAX_CONFIG_BYTES} bytes. Fix: is this the right file?`,
      );
    if (stats.size > MAX_CONFIG_BYTES) throw tooBig(stats.size);
    // Read up to one byte more than allowed: a file that grew since fstat is caught too. The
    // buffer starts at the file's size and grows: a 1 MiB one cost each start 1-2 ms (issue 12).
    let buffer = new Uint8Array(stats.size + 1);
    let length = 0;
    for (;;) {
      if (length === buffer.length) {
        const bigger = new Uint8Array(Math.min(buffer.length * 2, MAX_CONFIG_BYTES + 1));
        bigger.set(buffer);
        buffer = bigger;
      }
      const n = readSync(fd, buffer, length, buffer.length - length, null);
      if (n === 0) break;
      length += n;
      if (length > MAX_CONFIG_BYTES) throw tooBig(length);
    }
    return buffer.subarray(0, length);
  } catch (error) {
    if (error instanceof VmsnapError) throw error;
    throw new VmsnapError(
      "ConfigFileNotReadable",
      `${file} cannot be read (${
        (error as NodeJS.ErrnoException).code ?? (error as Error).message
      }). Fix: run vmsnap as root.`,
    );
  } finally {
    closeSync(fd);
  }
}

/**
 * Reads and parses a config file. Throws {@linkcode VmsnapError} when the file
 * cannot be read at all (`ConfigFileNotFound`, `ConfigFileNotReadable`,
 * `ConfigFileNotRegular`) or is not text or too big (`IncorrectJSONConfigFile`);
 * everything else comes back as problems.
 *
 * @example
 * ```ts
 * import { loadConfig } from "./config.ts";
 * const { config, problems } = loadConfig("/etc/azure/VMSnapshotScriptPluginConfig.json");
 * ```
 */
export function loadConfig(file: string): LoadedConfig {
  const bytes = readConfigBytes(file);
  let text: string;
  try {
    text = new TextDecoder("utf-8", { fatal: true }).decode(bytes);
  } catch {
    const bad = firstInvalidUtf8(bytes);
    const loc = new SourceMap(new TextDecoder().decode(bytes.subarray(0, bad))).at(bad);
    throw new VmsnapError(
      "IncorrectJSONConfigFile",
      `${file}:${loc.line}: the file is not valid UTF-8 (byte ${bad}). Fix: save it as UTF-8.`,
      [{
        code: "IncorrectJSONConfigFile",
        message: `not valid UTF-8 at byte ${bad}`,
        line: loc.line,
      }],
    );
  }
  return parseConfig(text, file);
}

/** The offset of the first byte that does not decode as UTF-8. */
function firstInvalidUtf8(bytes: Uint8Array): number {
  let low = 0;
  let high = bytes.length;
  // The longest valid prefix, by bisection (a prefix may end inside a character).
  while (low < high) {
    const mid = (low + high + 1) >> 1;
    try {
      new TextDecoder("utf-8", { fatal: true }).decode(bytes.subarray(0, mid), { stream: true });
      low = mid;
    } catch {
      high = mid - 1;
    }
  }
  return low;
}
