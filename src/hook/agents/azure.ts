/**
 * Azure Backup (the VMSnapshot extension). Before its snapshot, the
 * extension runs `sh <preScriptLocation>` of
 * `/etc/azure/VMSnapshotScriptPluginConfig.json` (and the post script after),
 * waiting `timeoutInSeconds`, and freezes the filesystems itself. Install
 * points that file at vmsnap's wrappers, keeps every other Azure key, and
 * gives vmsnap its own config (a copy of Azure's, so the admin's scripts
 * keep running, now inside vmsnap).
 *
 * @module
 */
import { parse as parseJsonc } from "jsonc-parser";
import { AZURE_MAX_TIMEOUT } from "../../config/config.ts";
import { VmsnapError } from "../../errors.ts";
import {
  type AgentSpec,
  belowAgent,
  type InstallPlan,
  type PlanInput,
  type PlannedFile,
  type TargetSystem,
  wrapper,
} from "./agent.ts";

/** Azure's file, which the extension reads. */
export const AZURE_CONFIG = "/etc/azure/VMSnapshotScriptPluginConfig.json";
/** vmsnap's own config when Azure's file points at vmsnap's wrappers. */
export const AZURE_VMSNAP_CONFIG = "/etc/vmsnap/vmsnap.json";
/** The wrappers Azure's file points at. */
export const AZURE_PRE = "/etc/azure/vmsnap-pre.sh";
const PRE = AZURE_PRE;
const POST = "/etc/azure/vmsnap-post.sh";

/** Azure's file as an object ({} when there is none); refused when it is not a JSON object. */
function readAzureConfig(system: TargetSystem): {
  existing?: string;
  azure: Record<string, unknown>;
} {
  const existing = system.read(AZURE_CONFIG);
  if (existing === undefined) return { azure: {} };
  const errors: unknown[] = [];
  const parsed = parseJsonc(existing, errors as never, { allowTrailingComma: true });
  if (errors.length || typeof parsed !== "object" || parsed === null || Array.isArray(parsed)) {
    throw new VmsnapError(
      "IncorrectJSONConfigFile",
      `${AZURE_CONFIG} is not a JSON object; vmsnap install does not rewrite what it cannot read. Fix: correct it or move it away, then run vmsnap install --for azure again.`,
    );
  }
  return { existing, azure: parsed as Record<string, unknown> };
}

/** Azure's timeoutInSeconds (30 when absent); refused when it is not a whole number ≥ 1. */
function azureTimeout(azure: Record<string, unknown>): number {
  const timeout = Number(azure.timeoutInSeconds ?? 30);
  if (!Number.isInteger(timeout) || timeout < 1) {
    throw new VmsnapError(
      "InvalidConfigValue",
      `${AZURE_CONFIG}: timeoutInSeconds is ${
        JSON.stringify(azure.timeoutInSeconds)
      }, not a whole number of seconds of at least 1; the hook could not be given a timeout below Azure's, so nothing was changed. Fix: write a number such as 60 there, then run vmsnap install --for azure again.`,
    );
  }
  return timeout;
}

/**
 * vmsnap's own config, when it does not exist yet: a copy of Azure's (its
 * scripts now run inside vmsnap), else a minimal one. Or a note on the
 * scripts Azure called, when vmsnap's config exists already.
 */
function vmsnapConfig(
  { system, config }: PlanInput,
  found: { existing?: string; azure: Record<string, unknown> },
): { files: PlannedFile[]; notes: string[] } {
  const { existing, azure } = found;
  const ours = azure.preScriptLocation === PRE;
  if (!system.exists(config)) {
    const copied = existing !== undefined && !ours;
    return {
      files: [{
        path: config,
        content: copied ? existing : `${JSON.stringify({ fsFreezeEnabled: true }, null, 2)}\n`,
        mode: 0o600,
        dirMode: 0o700,
      }],
      notes: copied
        ? [
          `vmsnap's config ${config} starts as a copy of ${AZURE_CONFIG}: its pre/post scripts now run inside vmsnap.`,
        ]
        : [],
    };
  }
  if (existing !== undefined && !ours && azure.preScriptLocation) {
    return {
      files: [],
      notes: [
        `${AZURE_CONFIG} called ${azure.preScriptLocation} and ${azure.postScriptLocation}; Azure now calls vmsnap, which runs what ${config} lists. Add them there (preScriptLocation/postScriptLocation) if they must still run.`,
      ],
    };
  }
  return { files: [], notes: [] };
}

/** Azure's file pointing at vmsnap's wrappers; strict JSON (Azure's reader takes no comments). */
function pointedAzureConfig(azure: Record<string, unknown>, timeout: number): PlannedFile {
  const pointed = {
    pluginName: "ScriptRunner",
    timeoutInSeconds: timeout,
    continueBackupOnFailure: true,
    fsFreezeEnabled: true,
    // Every other Azure key is kept.
    ...azure,
    preScriptLocation: PRE,
    postScriptLocation: POST,
    preScriptParams: [],
    postScriptParams: [],
    preScriptNoOfRetries: 0,
    postScriptNoOfRetries: 0,
  };
  return { path: AZURE_CONFIG, content: `${JSON.stringify(pointed, null, 2)}\n`, mode: 0o600 };
}

/** vmsnap's config, the two wrappers (giving up before Azure does), Azure's file pointed at them. */
function plan(input: PlanInput): InstallPlan {
  const found = readAzureConfig(input.system);
  const timeout = azureTimeout(found.azure);
  if (input.config === AZURE_CONFIG) {
    throw new VmsnapError(
      "InvalidConfigValue",
      `--config ${AZURE_CONFIG} is Azure's file, which will point at vmsnap's wrappers; vmsnap's own config must be another file. Fix: --config ${AZURE_VMSNAP_CONFIG} (the default).`,
    );
  }
  const { files, notes } = vmsnapConfig(input, found);
  // The hook must give up before Azure does (Azure caps the timeout at 1800 s).
  const azureWaits = Math.min(timeout, AZURE_MAX_TIMEOUT);
  const hookTimeout = belowAgent(azureWaits);
  const script = (event: "pre" | "post", path: string): PlannedFile => ({
    path,
    content: wrapper({
      agent: "azure",
      purpose: `Azure Backup runs \`sh <${event}ScriptLocation>\` ${
        event === "pre" ? "before" : "after"
      } its snapshot.`,
      command: [...input.hook(event), "--timeout", String(hookTimeout)],
    }),
    mode: 0o700,
    ...(event === "pre" ? { dirMode: 0o700 } : {}),
  });
  files.push(script("pre", PRE), script("post", POST), pointedAzureConfig(found.azure, timeout));
  notes.push(
    `Azure waits timeoutInSeconds (${azureWaits} s) for each script; the hook gives up ${
      azureWaits - hookTimeout
    } s before.`,
  );
  return { files, notes };
}

/** Azure Backup. */
export const azure: AgentSpec = {
  name: "azure",
  title: "Azure Backup (VMSnapshot extension)",
  freezes: true,
  timeoutSeconds: 25,
  defaultConfig: AZURE_VMSNAP_CONFIG,
  // The extension reads its file at each backup: nothing to restart.
  plan,
};
