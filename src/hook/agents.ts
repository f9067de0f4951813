/**
 * The backup agents `vmsnap hook` and `vmsnap install` know, one file each
 * in agents/: whether it freezes the filesystems itself, how long it waits
 * for its hook, and what install puts in place for it (how each calls the
 * hook: docs/hooks.md). Adding an agent: a file in agents/, its name in
 * {@linkcode AgentName}, its entry here.
 *
 * @module
 */
import type { AgentName, AgentSpec } from "./agents/agent.ts";
import { qemuGa } from "./agents/qemu_ga.ts";
import { vmware } from "./agents/vmware.ts";
import { azure } from "./agents/azure.ts";
import { gcp } from "./agents/gcp.ts";
import { aws } from "./agents/aws.ts";
import { generic } from "./agents/generic.ts";

export type { AgentName, AgentSpec } from "./agents/agent.ts";

/** Every agent, by name, in the order of the help. */
export const AGENTS: Record<AgentName, AgentSpec> = {
  "qemu-ga": qemuGa,
  vmware,
  azure,
  gcp,
  aws,
  generic,
};

/** The agent names, in the order of the help. */
export const AGENT_NAMES = Object.keys(AGENTS) as AgentName[];

/** What a hook event means to vmsnap. */
export type HookEvent = "freeze" | "thaw" | "freezeFail";

/** The words agents use for the events. */
export const EVENT_WORDS: Record<string, HookEvent> = {
  freeze: "freeze",
  pre: "freeze",
  "pre-script": "freeze",
  thaw: "thaw",
  post: "thaw",
  "post-script": "thaw",
  freezeFail: "freezeFail",
};
