/**
 * The validator: checks the syntax tree of a JSONC document against field
 * specs ({@link ./spec.ts}). Each value is checked where it stands, so every
 * problem names its JSON path and its line and column, and all problems are
 * collected instead of stopping at the first.
 *
 * @module
 */
import type { Node } from "jsonc-parser";
import type { Code, Problem } from "../errors.ts";
import {
  type ArraySpec,
  childPath,
  type Field,
  type IntegerSpec,
  type ObjectSpec,
  type Spec,
  type StringSpec,
  type ValidationContext,
} from "./spec.ts";
import type { Location } from "./syntax.ts";
import { closest, didYouMean } from "./suggest.ts";

/**
 * Records a problem at a node: the message is prefixed with `file:line:column:`.
 *
 * @example
 * ```ts
 * import { report } from "./validate.ts";
 * // report(ctx, { node, path: "plugins[0].name", code: "DuplicatePluginName", message: "…", warning: false });
 * ```
 */
export function report(ctx: ValidationContext, finding: Finding & { node?: Node }): void {
  const { node, ...rest } = finding;
  record(ctx, node ? ctx.source.at(node.offset) : undefined, rest);
}

/**
 * Records a problem at a config path visited before (its location was kept in
 * `ctx.locations`), for checks that run after the syntax tree is gone. `near`
 * is a path to point at when `path` itself was not in the file (a default).
 */
export function reportAt(ctx: ValidationContext, finding: Finding & { near?: string }): void {
  const { near, ...rest } = finding;
  const at = ctx.locations.get(rest.path) ?? (near ? ctx.locations.get(near) : undefined);
  record(ctx, at, rest);
}

/** How much a finding weighs: a problem unless marked (see {@linkcode ValidationContext}). */
export interface Severity {
  /** Worth knowing; nothing stops. */
  warning?: boolean;
  /** Tolerated by Azure's framework: a problem for `check`, a warning for `run`. */
  lenient?: boolean;
}

/** One finding: the config path, its code, what it says, and how much it weighs. */
export interface Finding extends Severity {
  path: string;
  code: Code;
  message: string;
}

/** Adds a problem (or warning), its message prefixed with `file:line:column:`. */
function record(ctx: ValidationContext, at: Location | undefined, finding: Finding): void {
  const { path, code, message } = finding;
  const where = at ? `${ctx.file}:${at.line}:${at.column}` : ctx.file;
  const problem: Problem = { code, message: `${where}: ${message}`, path: path || undefined };
  if (at) Object.assign(problem, at);
  if (finding.lenient && ctx.lenient) problem.lenient = true;
  const list = finding.warning
    ? ctx.warnings
    : finding.lenient && ctx.lenient
    ? ctx.lenient
    : ctx.problems;
  list.push(problem);
}

/** Describes a node's value for a message: `"30" (a string)`. */
function describe(node: Node): string {
  switch (node.type) {
    case "string": {
      const text = String(node.value);
      const shown = text.length > 60 ? `${text.slice(0, 57)}...` : text;
      return `${JSON.stringify(shown)} (a string)`;
    }
    case "number":
      return `${node.value} (a number)`;
    case "boolean":
      return `${node.value} (a boolean)`;
    case "null":
      return "null";
    case "array":
      return "an array";
    case "object":
      return "an object";
    default:
      return node.type;
  }
}

/** What a spec expects, in words. */
function expected(spec: Spec): string {
  switch (spec.type) {
    case "string":
      if (spec.oneOf) return `one of ${spec.oneOf.map((w) => JSON.stringify(w)).join(", ")}`;
      return spec.absolutePath ? "an absolute path (a string starting with /)" : "a string";
    case "integer": {
      const range = spec.max !== undefined
        ? ` from ${spec.min ?? 0} to ${spec.max}`
        : spec.min !== undefined
        ? ` of at least ${spec.min}`
        : "";
      return `an integer${range}`;
    }
    case "boolean":
      return "true or false";
    case "array":
      return `an array of ${expected(spec.items).replace(/^an? /, "")}s`;
    case "object":
      return "an object";
    case "custom":
      return "a valid value";
  }
}

/** A fix hint for a value of the wrong type that is close to right. */
function typeHint(node: Node, spec: Spec): string {
  if (node.type === "string") {
    const text = String(node.value).trim();
    if (spec.type === "integer" && /^-?\d+$/.test(text)) {
      return ` Fix: write ${text} without quotes.`;
    }
    if (spec.type === "boolean" && /^(true|false)$/i.test(text)) {
      return ` Fix: write ${text.toLowerCase()} without quotes.`;
    }
    if (spec.type === "array") return ` Fix: put it in a list: [${JSON.stringify(node.value)}].`;
  }
  return "";
}

/**
 * Validates one value against a spec. Returns the value (with defaults filled
 * in for objects) or undefined when it is invalid; problems go to `ctx`.
 *
 * @example
 * ```ts
 * import { parseTree } from "jsonc-parser";
 * import { SourceMap } from "./syntax.ts";
 * import { validate } from "./validate.ts";
 * const text = '{"n": 5}';
 * const ctx = { file: "x.json", source: new SourceMap(text), problems: [], warnings: [], locations: new Map() };
 * validate(parseTree(text)!, { type: "object", fields: { n: { type: "integer", max: 3 } } }, "", ctx);
 * // ctx.problems[0].code === "InvalidConfigValue"
 * ```
 */
export function validate(node: Node, spec: Spec, path: string, ctx: ValidationContext): unknown {
  if (path) ctx.locations.set(path, ctx.source.at(node.offset));
  if (spec.type === "custom") return spec.validate(node, path, ctx);
  if (node.type !== NODE_TYPES[spec.type]) return wrongType(node, spec, path, ctx);
  switch (spec.type) {
    case "string":
      return validateString(node, spec, path, ctx);
    case "integer":
      return validateInteger(node, spec, path, ctx);
    case "boolean":
      return Boolean(node.value);
    case "array":
      return validateArray(node, spec, path, ctx);
    case "object":
      return validateObject(node, spec, path, ctx);
  }
}

/** The syntax tree's node type of each spec's values. */
const NODE_TYPES = {
  string: "string",
  integer: "number",
  boolean: "boolean",
  array: "array",
  object: "object",
} as const satisfies Record<Exclude<Spec["type"], "custom">, Node["type"]>;

/** A value of the wrong type: reported with what was expected and, when close, the fix. */
function wrongType(node: Node, spec: Spec, path: string, ctx: ValidationContext): undefined {
  report(ctx, {
    node,
    path,
    code: "InvalidConfigType",
    message: `${path || "the config"} must be ${expected(spec)}, found ${describe(node)}.${
      typeHint(node, spec)
    }`,
  });
  return undefined;
}

/** What is wrong with a string value, as a code and a message; undefined when nothing is. */
function stringProblem(
  value: string,
  node: Node,
  spec: StringSpec,
  path: string,
): { code: Code; message: string } | undefined {
  if (value.includes("\0")) {
    return { code: "InvalidConfigValue", message: `${path} contains a NUL byte. Fix: remove it.` };
  }
  if (spec.oneOf && !spec.oneOf.includes(value)) {
    return {
      code: "InvalidConfigValue",
      message: `${path} must be ${expected(spec)}, found ${describe(node)}.${
        didYouMean(value, spec.oneOf)
      }`,
    };
  }
  if (spec.nonEmpty && value === "") {
    return { code: "InvalidConfigValue", message: `${path} must not be empty.` };
  }
  if (spec.absolutePath && value !== "" && !value.startsWith("/")) {
    return {
      code: "RelativePath",
      message: `${path} is the relative path ${
        JSON.stringify(value)
      }; vmsnap runs from / and needs an absolute path. Fix: write the full path, starting with /.`,
    };
  }
  return undefined;
}

/** A string node against its spec: no NUL, one of its words, not empty, an absolute path. */
function validateString(
  node: Node,
  spec: StringSpec,
  path: string,
  ctx: ValidationContext,
): string | undefined {
  const value = String(node.value);
  const problem = stringProblem(value, node, spec, path);
  if (!problem) return value;
  report(ctx, { node, path, ...problem });
  return undefined;
}

/**
 * A number node against its spec: an integer within bounds; out of bounds
 * where Azure's framework clamps (`spec.clamp`), the bound, as a lenient
 * finding.
 */
function validateInteger(
  node: Node,
  spec: IntegerSpec,
  path: string,
  ctx: ValidationContext,
): number | undefined {
  const value = Number(node.value);
  const below = spec.min !== undefined && value < spec.min;
  const above = spec.max !== undefined && value > spec.max;
  const azure = below ? spec.clamp?.below : above ? spec.clamp?.above : undefined;
  if (Number.isInteger(value) && azure !== undefined) {
    const bound = (below ? spec.min : spec.max)!;
    report(ctx, {
      node,
      path,
      code: "ConfigValueClamped",
      message: `${path} is ${
        ctx.source.raw(node)
      }; ${azure}: vmsnap run uses ${bound} (and warns). Fix: write ${bound}${
        below ? " or more" : " or less"
      }.`,
      lenient: true,
    });
    return bound;
  }
  if (!Number.isInteger(value) || below || above || !Number.isSafeInteger(value)) {
    report(ctx, {
      node,
      path,
      code: "InvalidConfigValue",
      message: `${path} must be ${expected(spec)}, found ${describe(node)}.`,
    });
    return undefined;
  }
  return value;
}

/** An array node: enough items, each against the items' spec. */
function validateArray(
  node: Node,
  spec: ArraySpec,
  path: string,
  ctx: ValidationContext,
): unknown[] | undefined {
  const items = node.children ?? [];
  if (spec.minItems !== undefined && items.length < spec.minItems) {
    report(ctx, {
      node,
      path,
      code: "InvalidConfigValue",
      message: `${path} must have at least ${spec.minItems} item(s), found ${items.length}.`,
    });
    return undefined;
  }
  const values = items.map((item, i) => validate(item, spec.items, childPath(path, i), ctx));
  return values.some((v) => v === undefined) ? undefined : values;
}

/** The properties of an object node as [key, key node, value node], in order. */
export function properties(node: Node): [string, Node, Node][] {
  const out: [string, Node, Node][] = [];
  for (const property of node.children ?? []) {
    const [keyNode, valueNode] = property.children ?? [];
    if (keyNode && valueNode) out.push([String(keyNode.value), keyNode, valueNode]);
  }
  return out;
}

/**
 * Validates an object node: known keys against their specs (defaults for the
 * missing ones and the invalid ones), unknown keys with a suggestion, duplicate
 * keys, missing required keys. Always returns an object so that later checks
 * can go on; whether it was valid is in `ctx.problems`.
 */
export function validateObject(
  node: Node,
  spec: ObjectSpec,
  path: string,
  ctx: ValidationContext,
): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  const entries = properties(node);
  // Every JSON reader Azure's framework and vmsnap know keeps the last of a key given twice.
  const last = new Map(entries.map(([key, keyNode]) => [key, keyNode]));
  for (const [key, keyNode, valueNode] of entries) {
    const keyPath = childPath(path, key);
    const winner = last.get(key)!;
    if (winner !== keyNode) {
      reportDuplicate(ctx, { spec, key, keyNode, keyPath, winner });
    } else if (Object.hasOwn(spec.fields, key)) {
      out[key] = validate(valueNode, spec.fields[key], keyPath, ctx);
    } else {
      reportUnknown(ctx, { spec, key, keyNode, keyPath, path });
    }
  }
  for (const [key, field] of Object.entries(spec.fields)) {
    if (out[key] !== undefined) continue;
    if (!last.has(key) && field.required) {
      report(ctx, {
        node,
        path: childPath(path, key),
        code: "MissingConfigKey",
        message: `${path || "the config"} needs the key ${JSON.stringify(key)} (${
          expected(field)
        }).`,
      });
    }
    if (field.default !== undefined) out[key] = defaultOf(field);
  }
  return out;
}

/** A key of an object spec that Azure's framework would not ignore (vmsnap's own, or any off the top level). */
function isStrict(spec: ObjectSpec, key: string): boolean {
  return !spec.azure || spec.azure.strict.includes(key);
}

/** A key given twice: the later one wins, as in every JSON reader Azure's framework and vmsnap know. */
function reportDuplicate(
  ctx: ValidationContext,
  { spec, key, keyNode, keyPath, winner }: {
    spec: ObjectSpec;
    key: string;
    keyNode: Node;
    keyPath: string;
    winner: Node;
  },
): void {
  const at = ctx.source.at(winner.offset);
  const strict = isStrict(spec, key);
  report(ctx, {
    node: keyNode,
    path: keyPath,
    code: "DuplicateConfigKey",
    message:
      `${keyPath} is given twice; the later one (line ${at.line}) wins, as in Azure's JSON reader${
        strict ? "" : ", and vmsnap run uses it (and warns)"
      }. Fix: delete the one you do not mean.`,
    lenient: !strict,
  });
}

/** A key the spec does not know: ignored for compatibility, or unknown (with the nearest known one). */
function reportUnknown(
  ctx: ValidationContext,
  { spec, key, keyNode, keyPath, path }: {
    spec: ObjectSpec;
    key: string;
    keyNode: Node;
    keyPath: string;
    path: string;
  },
): void {
  if (spec.ignored && Object.hasOwn(spec.ignored, key)) {
    report(ctx, {
      node: keyNode,
      path: keyPath,
      code: "IgnoredConfigKey",
      message: `${keyPath} is accepted for compatibility with Azure's sample and ignored: ${
        spec.ignored[key]
      }`,
      warning: true,
    });
    return;
  }
  const known = Object.keys(spec.fields);
  const near = closest(key, known);
  const lenient = near === undefined ? spec.azure !== undefined : !isStrict(spec, near);
  report(ctx, {
    node: keyNode,
    path: keyPath,
    code: "UnknownConfigKey",
    message: `unknown key ${JSON.stringify(key)}${path ? ` in ${path}` : ""}${
      lenient ? "; Azure's framework ignores it, and vmsnap run does the same (and warns)" : ""
    }.${didYouMean(key, known)} Fix: correct the spelling or remove the key.`,
    lenient,
  });
}

/** A field's default; for an object, its fields' defaults filled in. */
function defaultOf(field: Field): unknown {
  if (field.type !== "object") return structuredClone(field.default);
  const out: Record<string, unknown> = { ...(field.default as Record<string, unknown>) };
  for (const [key, inner] of Object.entries(field.fields)) {
    if (out[key] === undefined && inner.default !== undefined) out[key] = defaultOf(inner);
  }
  return out;
}
