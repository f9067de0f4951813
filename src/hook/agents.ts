/**
 * The backup agents `vmsnap hook` and `vmsnap install` know: whether each
 * freezes the filesystems itself, and how long it waits for its hook
 * (how each calls it: docs/hooks.md).
 *
 * @module
 */

/** An agent's name, as given to `--for`. */
export type AgentName = "qemu-ga" | "vmware" | "azure" | "gcp" | "aws" | "generic";

/** What vmsnap knows about one agent. */
export interface AgentSpec {
  name: AgentName;
  title: string;
  /** The agent freezes the filesystems itself after the freeze hook (the holder must not). */
  freezes: boolean;
  /** How long the hook waits at most, unless --timeout says otherwise (below the agent's own limit). */
  timeoutSeconds: number;
}

/** Every agent, by name. */
export const AGENTS: Record<AgentName, AgentSpec> = {
  "qemu-ga": {
    name: "qemu-ga",
    title: "QEMU guest agent (Proxmox, libvirt --quiesce, OpenStack)",
    freezes: true,
    timeoutSeconds: 60,
  },
  vmware: {
    name: "vmware",
    title: "VMware Tools (open-vm-tools)",
    freezes: true,
    timeoutSeconds: 60,
  },
  azure: {
    name: "azure",
    title: "Azure Backup (VMSnapshot extension)",
    freezes: true,
    timeoutSeconds: 25,
  },
  gcp: {
    name: "gcp",
    title: "Google Cloud guest agent",
    freezes: false,
    timeoutSeconds: 55,
  },
  aws: {
    name: "aws",
    title: "AWS Data Lifecycle Manager (SSM document)",
    freezes: false,
    timeoutSeconds: 55,
  },
  generic: {
    name: "generic",
    title: "any other caller of a pre and a post command",
    freezes: false,
    timeoutSeconds: 60,
  },
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
