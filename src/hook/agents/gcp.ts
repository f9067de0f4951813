/**
 * The Google Cloud guest agent. With `[Snapshots] enabled = true` in
 * `/etc/default/instance_configs.cfg`, it runs `/etc/google/snapshots/pre.sh`
 * and `post.sh` (with the disk list) around a guest-flush snapshot, waiting
 * `timeout_in_seconds` for each; it freezes nothing, so vmsnap does. The
 * agent reads its settings when it starts: install restarts it.
 *
 * @module
 */
import { DEFAULT_CONFIG_PATH } from "../../config/config.ts";
import { discoverGcp, GCP_SCRIPTS_DIR } from "../discover/gcp.ts";
import {
  type AgentSpec,
  belowAgent,
  type InstallPlan,
  type PlanInput,
  type PlannedFile,
  wrapper,
} from "./agent.ts";
import { setIniKey } from "./config_edit.ts";

/** The agent's own default for `timeout_in_seconds`. */
export const GCP_DEFAULT_TIMEOUT = 60;

/** pre.sh and post.sh, giving up before the agent does; snapshots enabled in its settings. */
function plan({ system, hook, agentConfig }: PlanInput): InstallPlan {
  const setup = discoverGcp({ root: system.root, config: agentConfig });
  const cfg = setup.config.path;
  const waits = setup.timeoutSeconds ?? GCP_DEFAULT_TIMEOUT;
  const timeout = String(belowAgent(waits));
  const script = (event: "pre" | "post"): PlannedFile => ({
    path: `${GCP_SCRIPTS_DIR}/${event}.sh`,
    content: wrapper({
      agent: "gcp",
      purpose:
        `The Google guest agent runs ${event}.sh with the disk list (timeout_in_seconds ${waits}).`,
      command: [...hook(event), "--timeout", timeout],
      tail: ' -- "$@"',
    }),
    mode: 0o700,
    dirMode: 0o700,
  });
  const enabled: PlannedFile = {
    path: cfg,
    // Keys in any case: the agent's reader lowercases them (`Enabled = false` is the same key).
    content: setIniKey(system.read(cfg) ?? "", {
      section: "Snapshots",
      key: "enabled",
      value: "true",
      ignoreCase: true,
    }),
    // The admin's mode is kept (the agent only reads the file).
    mode: system.mode(cfg) ?? 0o644,
    dirMode: 0o755,
    restart: true,
  };
  const found = setup.service.path
    ? `found: ${setup.service.kind} ${setup.service.path}; it runs ${GCP_SCRIPTS_DIR}/pre.sh and post.sh when ${cfg} says [Snapshots] enabled = true.`
    : `the Google guest agent was not found (looked at: ${
      setup.looked.join(", ")
    }); it runs these files once it is installed and started.`;
  return { files: [script("pre"), script("post"), enabled], notes: [found] };
}

/** The Google Cloud guest agent. */
export const gcp: AgentSpec = {
  name: "gcp",
  title: "Google Cloud guest agent",
  freezes: false,
  timeoutSeconds: 55,
  defaultConfig: DEFAULT_CONFIG_PATH,
  plan,
  service: {
    units: ["google-guest-agent.service", "google-guest-agent-manager.service"],
    openrc: ["google-guest-agent"],
    executables: ["google_guest_agent", "google_guest_agent_manager"],
  },
};
