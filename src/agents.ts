/**
 * The backup agents `vmsnap hook` and `vmsnap install` know: how each calls
 * its hook, whether it freezes the filesystems itself, and how long it
 * waits for the hook.
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
  /** How the agent calls the hook, for help and docs. */
  calls: string;
}

/** Every agent, by name. */
export const AGENTS: Record<AgentName, AgentSpec> = {
  "qemu-ga": {
    name: "qemu-ga",
    title: "QEMU guest agent (Proxmox, libvirt --quiesce, OpenStack)",
    freezes: true,
    timeoutSeconds: 60,
    calls:
      "qemu-ga -F runs /etc/qemu/fsfreeze-hook freeze|thaw, which runs every executable in fsfreeze-hook.d; it waits without a limit",
  },
  vmware: {
    name: "vmware",
    title: "VMware Tools (open-vm-tools)",
    freezes: true,
    timeoutSeconds: 60,
    calls:
      "vmtoolsd runs /etc/vmware-tools/backupScripts.d/* freeze, then thaw or freezeFail, through a shell; 15 minutes for the whole quiesce",
  },
  azure: {
    name: "azure",
    title: "Azure Backup (VMSnapshot extension)",
    freezes: true,
    timeoutSeconds: 25,
    calls:
      "the extension runs `sh preScriptLocation params` and `sh postScriptLocation params` from /etc/azure/VMSnapshotScriptPluginConfig.json, within its timeoutInSeconds",
  },
  gcp: {
    name: "gcp",
    title: "Google Cloud guest agent",
    freezes: false,
    timeoutSeconds: 55,
    calls:
      "google_guest_agent runs /etc/google/snapshots/pre.sh DISKS and post.sh DISKS, reading their output until end of file, killed after timeout_in_seconds (60)",
  },
  aws: {
    name: "aws",
    title: "AWS Data Lifecycle Manager (SSM document)",
    freezes: false,
    timeoutSeconds: 55,
    calls:
      "the SSM agent runs the document's aws:runShellScript with command=pre-script|post-script|dry-run, reading its output until end of file",
  },
  generic: {
    name: "generic",
    title: "any other caller of a pre and a post command",
    freezes: false,
    timeoutSeconds: 60,
    calls: "vmsnap hook pre|post --for generic",
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
