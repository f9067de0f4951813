/**
 * What a config key may hold, said as data: a spec per key (its type, its
 * bounds, its default). The validator ({@link ./validate.ts}) checks values
 * against specs, the JSON Schema ({@link ./json_schema.ts}) is generated from
 * them, and a plugin's config type is derived from them
 * (plugins/plugin.ts `definePlugin`), so a key is described once.
 *
 * @module
 */
import type { Node } from "jsonc-parser";
import type { Problem } from "../errors.ts";
import type { Location, SourceMap } from "./syntax.ts";

/** Where validation writes what it finds. */
export interface ValidationContext {
  /** The config file, named in every message. */
  file: string;
  source: SourceMap;
  problems: Problem[];
  warnings: Problem[];
  /**
   * What Azure's framework tolerates (an unknown key it ignores, a value it
   * clamps or converts): a problem for `check`, a warning for `run`, which
   * reads the config the way Azure does. Without this list they are problems.
   */
  lenient?: Problem[];
  /** JSON path → location of the value, for later checks (permissions) to point at. */
  locations: Map<string, Location>;
}

/** A string; optionally an absolute path, or one of a list of words. */
export interface StringSpec {
  type: "string";
  absolutePath?: boolean;
  oneOf?: readonly string[];
  /** Refuse "" (by default "" is allowed). */
  nonEmpty?: boolean;
}
/** An integer within bounds. */
export interface IntegerSpec {
  type: "integer";
  min?: number;
  max?: number;
  /**
   * Out-of-range integers that Azure's framework accepts are brought to the
   * bound as a lenient finding (`ConfigValueClamped`) instead of a problem.
   * Each side says, for the message, what Azure does with such a value.
   */
  clamp?: { below?: string; above?: string };
}
/** true or false. */
export interface BooleanSpec {
  type: "boolean";
}
/** An array whose items all follow one spec. */
export interface ArraySpec {
  type: "array";
  items: Spec;
  minItems?: number;
}
/** An object with known keys; unknown keys are problems, `ignored` keys warnings. */
export interface ObjectSpec {
  type: "object";
  fields: Record<string, Field>;
  /** Keys accepted for compatibility that have no effect: key → why. */
  ignored?: Record<string, string>;
  /**
   * Set on an object Azure's framework reads too (the top level). What its
   * JSON reader tolerates becomes a lenient finding: an unknown key (ignored)
   * and a key given twice (the last wins). Not for `strict` keys (vmsnap's
   * own, which Azure never reads): a near-miss of one, or one given twice,
   * stays a problem, because ignoring it would silently change what is
   * frozen, snapshotted or quiesced.
   */
  azure?: { strict: readonly string[] };
}
/** Anything else: the function validates and reports itself. */
export interface CustomSpec {
  type: "custom";
  validate(node: Node, path: string, ctx: ValidationContext): unknown;
}
/** Any spec. */
export type Spec = StringSpec | IntegerSpec | BooleanSpec | ArraySpec | ObjectSpec | CustomSpec;
/** A key of an object: its spec, its default, whether it must be present. */
export type Field = Spec & { default?: unknown; required?: boolean };

/**
 * `parent.key`, or `parent["odd key"]` for keys that are not identifiers.
 *
 * @example
 * ```ts
 * import { childPath } from "./spec.ts";
 * childPath("plugins", 2); // "plugins[2]"
 * childPath("plugins[2]", "passwordFile"); // "plugins[2].passwordFile"
 * ```
 */
export function childPath(parent: string, key: string | number): string {
  if (typeof key === "number") return `${parent}[${key}]`;
  if (!/^[A-Za-z_$][\w$-]*$/.test(key)) return `${parent}[${JSON.stringify(key)}]`;
  return parent === "" ? key : `${parent}.${key}`;
}

/**
 * The value a spec validates to, as a type: a string (or the union of its
 * `oneOf` words), a number, a boolean, an array of its items' values, an
 * object of its fields' values, or what a custom validator returns.
 */
export type SpecValue<S> = S extends { type: "string"; oneOf: readonly (infer W)[] } ? W
  : S extends { type: "string" } ? string
  : S extends { type: "integer" } ? number
  : S extends { type: "boolean" } ? boolean
  : S extends { type: "array"; items: infer I } ? SpecValue<I>[]
  : S extends { type: "object"; fields: infer F extends Record<string, Field> } ? FieldValues<F>
  : S extends { type: "custom"; validate(...args: never[]): infer R } ? R
  : unknown;

/** The keys always present after validation: those with a default, and the required ones. */
type PresentKeys<F> = {
  [K in keyof F]: F[K] extends { default: unknown } | { required: true } ? K : never;
}[keyof F];

/**
 * The values an object's fields validate to, as a type: a key with a
 * default (or required) is always there, any other may be absent.
 *
 * @example
 * ```ts
 * import type { FieldValues } from "./spec.ts";
 * const fields = {
 *   port: { type: "integer", default: 3306 },
 *   socket: { type: "string", absolutePath: true },
 *   mode: { type: "string", oneOf: ["auto", "ftwrl"], default: "auto" },
 * } as const;
 * const values: FieldValues<typeof fields> = { port: 3306, mode: "auto" }; // socket?: string
 * ```
 */
export type FieldValues<F extends Record<string, Field>> =
  & { -readonly [K in PresentKeys<F>]: SpecValue<F[K]> }
  & { -readonly [K in Exclude<keyof F, PresentKeys<F>>]?: SpecValue<F[K]> };
