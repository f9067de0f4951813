/**
 * How the Google guest agent on a target system runs snapshot scripts, read
 * under a root: its unit, its `/etc/default/instance_configs.cfg`
 * (`[Snapshots] enabled`, `timeout_in_seconds`; the package's %post copies
 * the template from /usr/share/google-guest-agent), and the scripts
 * directory `/etc/google/snapshots` (`pre.sh`, `post.sh`).
 *
 * @module
 */
import { kindUnder, readUnder } from "../../sys/under_root.ts";
import { type AgentService, findAgentService } from "./agent_service.ts";
import { iniBool, parseIni } from "./ini.ts";

/** The guest agent's config file (the admin's). */
export const GCP_CONFIG = "/etc/default/instance_configs.cfg";
/** The package's template of it. */
export const GCP_CONFIG_TEMPLATE = "/usr/share/google-guest-agent/instance_configs.cfg";
/** Where the agent looks for pre.sh and post.sh. */
export const GCP_SCRIPTS_DIR = "/etc/google/snapshots";

/** The Google guest agent's setup on a target system. */
export interface GcpSetup {
  binary?: string;
  service: AgentService;
  config: { path: string; found: boolean; template: boolean; snapshots: Record<string, string> };
  /** `[Snapshots] enabled` (false when absent: the agent's default). */
  enabled: boolean;
  /** `[Snapshots] timeout_in_seconds`, when set. */
  timeoutSeconds?: number;
  scriptsDir: { path: string; exists: boolean };
  looked: string[];
}

/**
 * Reads the Google guest agent's setup under a root (`config`: its
 * instance_configs.cfg, when the admin names it).
 *
 * @example
 * ```ts
 * import { discoverGcp } from "./gcp.ts";
 * const gcp = discoverGcp({ root: "/" });
 * console.log(gcp.service.path ?? "no guest agent", gcp.enabled);
 * ```
 */
export function discoverGcp(options: { root: string; config?: string }): GcpSetup {
  const { root } = options;
  const service = findAgentService({
    root,
    units: ["google-guest-agent.service", "google-guest-agent-manager.service"],
    openrc: ["google-guest-agent"],
  });
  const binaries = [service.argv[0], "/usr/bin/google_guest_agent"].filter((p): p is string => !!p);
  const binary = binaries.find((p) => kindUnder(root, p).kind === "file");
  const configPath = options.config ?? GCP_CONFIG;
  const text = readUnder(root, configPath);
  const snapshots = text === undefined ? {} : parseIni(text).Snapshots ?? {};
  const timeout = Number(snapshots.timeout_in_seconds);
  return {
    binary,
    service,
    config: {
      path: configPath,
      found: text !== undefined,
      template: kindUnder(root, GCP_CONFIG_TEMPLATE).kind === "file",
      snapshots,
    },
    enabled: iniBool(snapshots.enabled) ?? false,
    timeoutSeconds: Number.isInteger(timeout) && timeout > 0 ? timeout : undefined,
    scriptsDir: {
      path: GCP_SCRIPTS_DIR,
      exists: kindUnder(root, GCP_SCRIPTS_DIR).kind === "directory",
    },
    looked: [...binaries, ...service.looked, configPath, GCP_CONFIG_TEMPLATE, GCP_SCRIPTS_DIR],
  };
}
