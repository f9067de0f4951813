/**
 * `vmsnap hook EVENT --for AGENT`: what a backup agent runs around its own
 * snapshot (src/hook/hook.ts).
 *
 * @module
 */
import { AGENT_NAMES, type AgentName, EVENT_WORDS, type HookEvent } from "../../hook/agents.ts";
import { didYouMean } from "../../config/suggest.ts";
import { type CommandSpec, type GivenOptions, type Invocation, UsageError } from "../command.ts";
import { FOR_OPTION, readAgent } from "../agent_option.ts";
import type { Io } from "../io.ts";

/** The event words `vmsnap hook` is documented with (the agents' other spellings still parse). */
const HOOK_WORDS = ["freeze", "pre", "thaw", "post", "freezeFail"] as const;

/** `vmsnap hook`'s help. */
export const spec: CommandSpec = {
  summary:
    "be called by a backup agent: freeze|pre before its snapshot, thaw|post|freezeFail after",
  usage: `vmsnap hook ${HOOK_WORDS.join("|")} --for AGENT [--config PATH] [--timeout SECONDS]`,
  description: `What a backup agent runs around its own snapshot (see docs/hooks.md).
freeze (pre): checks, then starts a holder that quiesces every plugin (stage by stage)
and holds the database sessions; for gcp, aws and generic it also freezes the targets.
Exit 0 once everything is quiesced; else the coded error, after resuming what it quiesced.
thaw (post), freezeFail: the holder thaws what it froze, resumes, writes the result
(vmsnap status shows it); exit as vmsnap run would. No holder: said so, exit 2.
AGENT: ${AGENT_NAMES.join(", ")}.`,
  options: {
    for: FOR_OPTION,
    timeout: {
      type: "string",
      arg: "SECONDS",
      help: "the hook returns within this (default: below the agent's own limit)",
    },
  },
  positionals: 4,
  words: HOOK_WORDS,
};

/** hook writes through the process's streams, as run does. */
export const streams = true;

/** `vmsnap hook`'s own options. */
export interface HookArgs {
  agent: AgentName;
  event: HookEvent;
  timeoutSeconds?: number;
  /** The agent's own arguments after the event. */
  agentArgs: string[];
}

/**
 * Reads the event, `--for` and `--timeout` (not needed with --help).
 *
 * @example
 * ```ts
 * import { parse } from "./hook.ts";
 * parse({ command: "hook", values: { for: "vmware" }, positionals: ["freeze"], help: false }).event; // "freeze"
 * ```
 */
export function parse(given: GivenOptions): Partial<HookArgs> {
  if (given.help) return {};
  const agent = readAgent(given);
  const word = given.positionals[0];
  if (word === undefined || !Object.hasOwn(EVENT_WORDS, word)) {
    throw new UsageError(
      `hook needs an event: ${HOOK_WORDS.slice(0, -1).join(", ")} or ${HOOK_WORDS.at(-1)}${
        word === undefined
          ? "."
          : `, not ${JSON.stringify(word)}.${didYouMean(word, Object.keys(EVENT_WORDS))}`
      }`,
    );
  }
  const timeout = given.values.timeout as string | undefined;
  if (timeout !== undefined && !/^[1-9]\d{0,4}$/.test(timeout)) {
    throw new UsageError(`--timeout must be a whole number of seconds (1-99999), not ${timeout}.`);
  }
  return {
    agent,
    event: EVENT_WORDS[word],
    timeoutSeconds: timeout ? Number(timeout) : undefined,
    agentArgs: given.positionals.slice(1),
  };
}

/**
 * Runs the hook and exits with its code.
 *
 * @example
 * ```ts
 * import { handler } from "./hook.ts";
 * import { processIo } from "../io.ts";
 * await handler({ command: "hook", configPath: "/etc/x.json", configGiven: true, json: false, help: false, positionals: ["thaw"], agent: "generic", event: "thaw", agentArgs: [] }, processIo("streams"));
 * ```
 */
export async function handler(args: Invocation & HookArgs, io: Io): Promise<number> {
  const { runHook } = await import("../../hook/hook.ts");
  return await runHook({
    event: args.event,
    agent: args.agent,
    configPath: args.configPath,
    json: args.json,
    logLevel: args.logLevel,
    timeoutSeconds: args.timeoutSeconds,
    agentArgs: args.agentArgs,
    streams: { stdout: io.stdout, stderr: io.stderr },
  });
}
