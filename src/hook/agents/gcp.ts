/**
 * The Google Cloud guest agent. With `[Snapshots] enabled = true` in
 * `/etc/default/instance_configs.cfg`, it runs `/etc/google/snapshots/pre.sh`
 * and `post.sh` (with the disk list) around a guest-flush snapshot, waiting
 * `timeout_in_seconds` for each; it freezes nothing, so vmsnap does.
 *
 * @module
 */
import { DEFAULT_CONFIG_PATH } from "../../config/config.ts";
import {
  type AgentSpec,
  belowAgent,
  type InstallPlan,
  type PlanInput,
  type PlannedFile,
  wrapper,
} from "./agent.ts";

/** The guest agent's settings. */
const CFG = "/etc/default/instance_configs.cfg";

/**
 * Sets `enabled = true` in the `[Snapshots]` section, keeping everything else.
 * Keys match in any case, as INI readers take them (Python's configparser
 * lowercases keys): `Enabled = false` left beside a new `enabled = true` is
 * a duplicate key (an error, or the later one wins).
 */
function enableSnapshots(text: string): string {
  const lines = text.split("\n");
  const start = lines.findIndex((l) => /^\s*\[Snapshots\]\s*$/.test(l));
  if (start < 0) {
    const body = text === "" || text.endsWith("\n") ? text : `${text}\n`;
    return `${body}${body ? "\n" : ""}[Snapshots]\nenabled = true\n`;
  }
  let end = lines.findIndex((l, i) => i > start && /^\s*\[/.test(l));
  if (end < 0) end = lines.length;
  const at = lines.findIndex((l, i) => i > start && i < end && /^\s*enabled\s*[=:]/i.test(l));
  if (at >= 0) lines[at] = "enabled = true";
  else lines.splice(start + 1, 0, "enabled = true");
  return lines.join("\n");
}

/** `timeout_in_seconds` of the `[Snapshots]` section (the agent's default: 60). */
function agentTimeout(cfg: string): number {
  const section = cfg.split(/^\s*\[Snapshots\]\s*$/m)[1]?.split(/^\s*\[/m)[0] ?? "";
  return Number(section.match(/^\s*timeout_in_seconds\s*[=:]\s*(\d+)/im)?.[1] ?? 60);
}

/** pre.sh and post.sh, giving up before the agent does; snapshots enabled in its settings. */
function plan({ system, hook }: PlanInput): InstallPlan {
  const cfg = system.read(CFG) ?? "";
  const waits = agentTimeout(cfg);
  const timeout = String(belowAgent(waits));
  const script = (event: "pre" | "post"): PlannedFile => ({
    path: `/etc/google/snapshots/${event}.sh`,
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
  return {
    files: [script("pre"), script("post"), {
      path: CFG,
      content: enableSnapshots(cfg),
      // The admin's mode is kept (the agent only reads the file).
      mode: system.mode(CFG) ?? 0o644,
      dirMode: 0o755,
    }],
    notes: [
      "The guest agent reads instance_configs.cfg at start: restart it (systemctl restart google-guest-agent).",
    ],
  };
}

/** The Google Cloud guest agent. */
export const gcp: AgentSpec = {
  name: "gcp",
  title: "Google Cloud guest agent",
  freezes: false,
  timeoutSeconds: 55,
  defaultConfig: DEFAULT_CONFIG_PATH,
  plan,
  reload: () => [],
};
