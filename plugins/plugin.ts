/**
 * The one small interface every application plugin implements. A plugin
 * describes its config keys (validated by the config loader, with line and
 * column), turns them into a typed config, and checks what it needs on the
 * machine. The backup sequence calls `quiesce` and `resume` on what
 * `create` returns.
 *
 * @module
 */
import type { Problem } from "../src/errors.ts";
import type { StepResult } from "../src/protocol.ts";
import type { LogLevel } from "../src/config/log_level.ts";
import type { NormalizeContext, PluginConfig, PluginSpec } from "../src/config/plugin_spec.ts";
import type { Field, FieldValues } from "../src/config/spec.ts";
import type { Location } from "../src/config/syntax.ts";

export type { NotHeld, RunError, StepResult } from "../src/protocol.ts";
export type { NormalizeContext, PluginConfig, TopLevelKeys } from "../src/config/plugin_spec.ts";

/** What `check` gets. */
export interface CheckContext {
  /** Where a JSON path of the config stands in the file. */
  locate(path: string): Location | undefined;
}

/** What a running plugin gets from the sequence. */
export interface PluginEnv {
  runId: string;
  stateDir: string;
  /** The config file, for markers that a later run must resolve. */
  configFile: string;
  /** Aborts on SIGINT/SIGTERM/SIGHUP during quiesce; resume gets a signal that never aborts. */
  signal: AbortSignal;
  log(level: LogLevel, event: string, fields: Record<string, unknown>): void;
}

/** Written to stateDir before a lock that outlives its connection is taken. */
export interface LockMarker {
  type: string;
  plugin: string;
  runId: string;
  pid: number;
  /** Process start time, to tell a live owner from a reused pid. */
  started: string;
  configFile: string;
  since: string;
}

/** A plugin at work: quiesce before the freeze, resume after the thaw. */
export interface PluginRuntime {
  quiesce(env: PluginEnv): Promise<StepResult>;
  resume(env: PluginEnv): Promise<StepResult>;
}

/**
 * A plugin type: its keys, how they become a config (the config's view of
 * it, {@linkcode PluginSpec}), its checks, and its runtime.
 *
 * @example
 * ```ts
 * import type { PluginDefinition, PluginConfig } from "./plugin.ts";
 * const done = { ok: true, durationMs: 0, errors: [], facts: {} };
 * const noop: PluginDefinition<PluginConfig> = {
 *   type: "noop",
 *   summary: "does nothing",
 *   fields: {},
 *   normalize: (_values, _ctx) => ({ type: "noop", name: "noop" }),
 *   check: () => [],
 *   create: () => ({ quiesce: async () => done, resume: async () => done }),
 * };
 * ```
 */
export interface PluginDefinition<C extends PluginConfig = PluginConfig> extends PluginSpec<C> {
  /** Checks that look at the machine: files, permissions. */
  check(config: C, ctx: CheckContext): Problem[] | Promise<Problem[]>;
  /** The plugin at work, for one run. */
  create(config: C): PluginRuntime;
  /**
   * `vmsnap check --connect`: connect and verify the privileges quiesce
   * needs; problems name the missing GRANT. Throws a coded failure when it
   * cannot connect.
   */
  connectCheck?(config: C): Promise<Problem[]>;
  /**
   * Releases a lock that a dead run left on the server (MongoDB's fsync lock
   * outlives its connection). Called with the marker the plugin wrote before
   * locking; says what it found and did.
   */
  recover?(config: C, marker: LockMarker): Promise<string>;
}

/** Flattens an intersection, so that a derived config type reads as one object in editors. */
type Flat<T> = { [K in keyof T]: T[K] } & unknown;

/**
 * A plugin's config as its field spec says it: `type`, `name`, `stage`, and
 * each field's value (a field with a default always present).
 *
 * @example
 * ```ts
 * import type { ConfigOf } from "./plugin.ts";
 * const fields = { port: { type: "integer", default: 6379 }, user: { type: "string" } } as const;
 * type DemoConfig = ConfigOf<"demo", typeof fields>; // { type: "demo"; name: string; stage?: number; port: number; user?: string }
 * ```
 */
export type ConfigOf<T extends string, F extends Record<string, Field>> = Flat<
  { type: T; name: string; stage?: number } & FieldValues<F>
>;

/** What a `plugins` entry of a type validates to: its fields' values, `type`, `name`, `stage`. */
export type EntryValues<F extends Record<string, Field>> = Flat<
  { type: string; name: string; stage: number } & FieldValues<F>
>;

/**
 * What {@linkcode definePlugin} takes: a plugin type whose `normalize` gets
 * its fields' values typed, and may be left out when the config is those
 * values as they are ({@linkcode ConfigOf}).
 */
export type PluginDraft<T extends string, F extends Record<string, Field>, C extends PluginConfig> =
  & Omit<PluginDefinition<C>, "type" | "fields" | "normalize">
  & {
    readonly type: T;
    readonly fields: F;
    normalize?(values: EntryValues<F>, ctx: NormalizeContext): C;
  };

/**
 * Defines a plugin type with its config typed from its field spec: the
 * config is {@linkcode ConfigOf} its fields unless `normalize` builds
 * another, and `check`, `create`, `connectCheck` and `recover` get it typed.
 * Declare the fields `as const` (or inline) so that defaults and `oneOf`
 * words reach the type.
 *
 * @example
 * ```ts
 * import { definePlugin } from "./plugin.ts";
 * const done = { ok: true, durationMs: 0, errors: [], facts: {} };
 * const demo = definePlugin({
 *   type: "demo",
 *   summary: "does nothing, verbosely",
 *   fields: { level: { type: "string", oneOf: ["low", "high"], default: "low" } },
 *   check: (config) => config.level === "high" ? [] : [],
 *   create: () => ({ quiesce: () => Promise.resolve(done), resume: () => Promise.resolve(done) }),
 * });
 * ```
 */
export function definePlugin<
  const T extends string,
  const F extends Record<string, Field>,
  C extends PluginConfig = ConfigOf<T, F>,
>(draft: PluginDraft<T, F, C>): PluginDefinition<C> {
  // The one place validated values meet their type: the validator checked each against F.
  const normalize = draft.normalize ??
    ((values: EntryValues<F>) => ({ ...values, type: draft.type }) as PluginConfig as C);
  return { ...draft, normalize: (values, ctx) => normalize(values as EntryValues<F>, ctx) };
}

/**
 * Adds the location of a config path to problems that lack one.
 *
 * @example
 * ```ts
 * import { locateProblems } from "./plugin.ts";
 * locateProblems([{ code: "Pre-ScriptNotFound", message: "…" }], "preScriptLocation", () => ({ line: 3, column: 25 }));
 * ```
 */
export function locateProblems(
  problems: Problem[],
  path: string,
  locate: (path: string) => Location | undefined,
  plugin?: string,
): Problem[] {
  const at = locate(path);
  return problems.map((p) => ({
    ...p,
    path: p.path ?? path,
    ...(at ?? {}),
    ...(plugin ? { plugin } : {}),
  }));
}
