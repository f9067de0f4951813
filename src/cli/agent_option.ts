/**
 * `--for AGENT`, the option of `hook`, `install` and `uninstall`.
 *
 * @module
 */
import { AGENT_NAMES, type AgentName } from "../hook/agents.ts";
import { didYouMean } from "../config/suggest.ts";
import { type GivenOptions, type OptionSpec, UsageError } from "./command.ts";

/** `--for AGENT`. */
export const FOR_OPTION: OptionSpec = {
  type: "string",
  arg: "AGENT",
  help: `the backup agent: ${AGENT_NAMES.join("|")}`,
  choices: AGENT_NAMES,
};

/**
 * The agent `--for` names; a usage error when it is missing or unknown.
 *
 * @example
 * ```ts
 * import { readAgent } from "./agent_option.ts";
 * readAgent({ command: "install", values: { for: "vmware" }, positionals: [], help: false }); // "vmware"
 * ```
 */
export function readAgent(given: GivenOptions): AgentName {
  const agent = given.values.for as string | undefined;
  if (agent === undefined) {
    throw new UsageError(`${given.command} needs --for AGENT: one of ${AGENT_NAMES.join(", ")}.`);
  }
  if (!(AGENT_NAMES as string[]).includes(agent)) {
    throw new UsageError(
      `--for must be one of ${AGENT_NAMES.join(", ")}, not ${JSON.stringify(agent)}.${
        didYouMean(agent, AGENT_NAMES)
      }`,
    );
  }
  return agent as AgentName;
}
