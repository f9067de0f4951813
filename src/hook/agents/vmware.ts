/**
 * VMware Tools (open-vm-tools). vmtoolsd freezes the filesystems itself; for
 * a quiesced snapshot it first runs every file of
 * `/etc/vmware-tools/backupScripts.d/` with `freeze`, then `thaw` or
 * `freezeFail`. Install puts vmsnap's hook there.
 *
 * @module
 */
import { DEFAULT_CONFIG_PATH } from "../../config/config.ts";
import { type AgentSpec, type InstallPlan, type PlanInput, wrapper } from "./agent.ts";

/** The hook file, run with the event word (and an optional argument). */
function plan({ hook }: PlanInput): InstallPlan {
  return {
    files: [{
      path: "/etc/vmware-tools/backupScripts.d/vmsnap",
      content: wrapper({
        agent: "vmware",
        purpose:
          "vmtoolsd runs every file here with freeze, then thaw or freezeFail (and an optional argument).",
        command: hook(),
        tail: ' -- "$@"',
      }),
      mode: 0o700,
      dirMode: 0o755,
    }],
    notes: [],
  };
}

/** VMware Tools. */
export const vmware: AgentSpec = {
  name: "vmware",
  title: "VMware Tools (open-vm-tools)",
  freezes: true,
  timeoutSeconds: 60,
  defaultConfig: DEFAULT_CONFIG_PATH,
  plan,
  // vmtoolsd runs whatever backupScripts.d holds at the next snapshot.
  reload: () => [],
};
