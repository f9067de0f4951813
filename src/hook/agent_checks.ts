/**
 * What `vmsnap check` says about the backup agents on this system: for each
 * agent vmsnap's hook is installed for (its manifest in
 * /var/backups/vmsnap), whether the agent, as it is set up now, will run
 * that hook (qemu-ga's `-F` and hook directory, VMware's `execScripts`,
 * Google's `[Snapshots] enabled`, Azure's file still pointing at vmsnap),
 * and whether the agent waits long enough: its timeout as configured now
 * (Google's `timeout_in_seconds`, Azure's `timeoutInSeconds`, VMware's
 * `[vmbackup] timeout`) against the hook's own `--timeout` written by
 * install and the config's `hook.maxHoldSeconds`, with what to run. An
 * agent found but not installed for is named with its install command.
 * SELinux (./selinux_checks.ts) comes with it.
 *
 * @module
 */
import { posix } from "node:path";
import { parse as parseJsonc } from "jsonc-parser";
import type { Problem } from "../errors.ts";
import { AZURE_MAX_TIMEOUT } from "../config/config.ts";
import { readUnder } from "../sys/under_root.ts";
import { discoverQemuGa, type QemuGaSetup } from "./discover/qemu_ga.ts";
import { discoverVmware } from "./discover/vmware.ts";
import { discoverGcp } from "./discover/gcp.ts";
import { discoverAws } from "./discover/aws.ts";
import { GCP_DEFAULT_TIMEOUT } from "./agents/gcp.ts";
import { vmwareQuiesceLimit } from "./agents/vmware.ts";
import { AZURE_CONFIG, AZURE_PRE } from "./agents/azure.ts";
import { belowAgent } from "./agents/agent.ts";
import { AGENTS } from "./agents.ts";
import { type Manifest, readManifest } from "./install.ts";
import { selinuxChecks } from "./selinux_checks.ts";

/** One line of check's report, as check prints it. */
export interface AgentStep {
  name: string;
  ok: boolean;
  warning?: boolean;
  detail: string;
}

/** What the agents' checks found. */
export interface AgentFindings {
  steps: AgentStep[];
  problems: Problem[];
  warnings: Problem[];
}

/** What the checks read. */
export interface AgentCheckOptions {
  /** The system's root ("/" when check runs on it). */
  root: string;
  /** `hook.maxHoldSeconds` of the config checked, when it could be read. */
  maxHoldSeconds?: number;
}

/** The `--timeout N` an installed wrapper gives the hook, or the agent's default. */
function hookTimeout(root: string, file: string, fallback: number): number {
  const found = readUnder(root, file)?.match(/--timeout (\d+)/)?.[1];
  return found === undefined ? fallback : Number(found);
}

/** A timeout warning: who waits how long, the hook's time, and what to run. */
function timeoutWarning(
  text: { agent: string; waits: string; hook: string; fix: string },
): Problem {
  return {
    code: "AgentTimeout",
    message:
      `${text.waits}, but ${text.hook}: the agent gives up while vmsnap still quiesces or holds. Fix: ${text.fix}`,
  };
}

/** A hold limit above what the agent allows, as a warning. */
function holdWarning(
  limit: { agent: string; seconds: number; what: string },
  maxHold?: number,
): Problem[] {
  if (maxHold === undefined || maxHold <= limit.seconds) return [];
  return [{
    code: "AgentTimeout",
    message:
      `hook.maxHoldSeconds is ${maxHold} s, longer than ${limit.what}: if ${limit.agent}'s thaw never comes, the databases stay held ${
        maxHold - limit.seconds
      } s longer than any snapshot can take. Fix: set "hook": { "maxHoldSeconds": ${limit.seconds} } in the config.`,
  }];
}

/** Where the hook qemu-ga runs leads: vmsnap's file, or why not. */
function qemuGaRuns(setup: QemuGaSetup, hookFile: string): string | undefined {
  if (setup.rpc.blockedFreeze.length > 0) return `${setup.rpc.detail}, so no freeze reaches a hook`;
  if (!setup.hook.path || setup.hook.disabled || !setup.hook.exists || !setup.hook.executable) {
    return setup.hook.path
      ? `its hook ${setup.hook.path} (${setup.hook.detail}) is ${
        setup.hook.disabled ? "switched off" : setup.hook.exists ? "not executable" : "missing"
      }`
      : setup.hook.detail;
  }
  if (setup.hook.path === hookFile) return undefined;
  if (setup.hookDir.path === posix.dirname(hookFile)) return undefined;
  return `it runs ${setup.hook.path} (${setup.hook.detail}), which runs ${
    setup.hookDir.path ?? "no hook directory"
  }, not ${posix.dirname(hookFile)}`;
}

/** The installed file whose name is `name` (the hook), or the first. */
function installedFile(manifest: Manifest, name: string): string {
  return manifest.files.find((f) => posix.basename(f.path) === name)?.path ??
    manifest.files[0]?.path ?? "";
}

/** qemu-ga: does it run vmsnap's hook as it is set up now? */
function checkQemuGa(options: AgentCheckOptions, manifest?: Manifest): AgentFindings {
  const setup = discoverQemuGa({ root: options.root });
  const name = "agent qemu-ga";
  if (!manifest) return notInstalled(name, setup.service.path, "qemu-ga");
  const hookFile = installedFile(manifest, "vmsnap");
  const problem = readUnder(options.root, hookFile) === undefined
    ? `vmsnap's hook ${hookFile} is gone`
    : qemuGaRuns(setup, hookFile);
  if (problem) {
    return failed(name, {
      code: "HookNotRun",
      message:
        `qemu-ga will not run vmsnap's hook ${hookFile}: ${problem}. Fix: vmsnap install --for qemu-ga (it says what it finds), or undo that change.`,
    });
  }
  return passed(name, `qemu-ga runs ${setup.hook.path}: ${hookFile} is run at each freeze`);
}

/** VMware: scripts on, the hook there, its time within the quiesce limit. */
function checkVmware(options: AgentCheckOptions, manifest?: Manifest): AgentFindings {
  const setup = discoverVmware({ root: options.root });
  const name = "agent vmware";
  if (!manifest) return notInstalled(name, setup.service.path, "vmware");
  const hookFile = installedFile(manifest, "vmsnap");
  if (!setup.execScripts || readUnder(options.root, hookFile) === undefined) {
    return failed(name, {
      code: "HookNotRun",
      message: `vmtoolsd will not run vmsnap's hook ${hookFile}: ${
        setup.execScripts
          ? "it is gone"
          : `[vmbackup] execScripts is off in ${setup.toolsConf.path}`
      }. Fix: vmsnap install --for vmware.`,
    });
  }
  const limit = vmwareQuiesceLimit(setup.toolsConf.vmbackup);
  const hook = hookTimeout(options.root, hookFile, AGENTS.vmware.timeoutSeconds);
  const source = setup.toolsConf.vmbackup.timeout
    ? `[vmbackup] timeout in ${setup.toolsConf.path}`
    : "vmtoolsd's default";
  const warnings = hook >= limit
    ? [timeoutWarning({
      agent: "vmware",
      waits: `VMware's quiesce limit is ${limit} s (${source})`,
      hook: `vmsnap's hook may take up to ${hook} s (--timeout in ${hookFile})`,
      fix: `vmsnap install --for vmware (the hook's --timeout becomes ${
        belowAgent(limit)
      } s), or raise [vmbackup] timeout in ${setup.toolsConf.path}.`,
    })]
    : [];
  warnings.push(
    ...holdWarning(
      { agent: "VMware", seconds: limit, what: `VMware's quiesce limit (${limit} s, ${source})` },
      options.maxHoldSeconds,
    ),
  );
  for (const legacy of [setup.legacy.freeze, setup.legacy.thaw]) {
    if (legacy.exists && !legacy.executable) {
      warnings.push({
        code: "HookNotRun",
        message:
          `${legacy.path} exists but is not executable: vmtoolsd fails the quiesce when it cannot run it. Fix: chmod 700 ${legacy.path}, or remove it.`,
      });
    }
  }
  return withWarnings(
    name,
    `vmtoolsd runs ${hookFile}; quiesce limit ${limit} s (${source}), hook ${hook} s`,
    warnings,
  );
}

/** Google: snapshots on, the scripts there, the hook's time within timeout_in_seconds. */
function checkGcp(options: AgentCheckOptions, manifest?: Manifest): AgentFindings {
  const setup = discoverGcp({ root: options.root });
  const name = "agent gcp";
  if (!manifest) return notInstalled(name, setup.service.path, "gcp");
  const pre = `${setup.scriptsDir.path}/pre.sh`;
  if (!setup.enabled || readUnder(options.root, pre) === undefined) {
    return failed(name, {
      code: "HookNotRun",
      message: `the Google guest agent will not run vmsnap's hook: ${
        setup.enabled ? `${pre} is gone` : `[Snapshots] enabled is not true in ${setup.config.path}`
      }. Fix: vmsnap install --for gcp.`,
    });
  }
  const waits = setup.timeoutSeconds ?? GCP_DEFAULT_TIMEOUT;
  const hook = hookTimeout(options.root, pre, AGENTS.gcp.timeoutSeconds);
  const warnings = hook >= waits
    ? [timeoutWarning({
      agent: "gcp",
      waits:
        `the Google guest agent kills pre.sh after timeout_in_seconds = ${waits} s (${setup.config.path})`,
      hook: `${pre} gives vmsnap's hook --timeout ${hook}`,
      fix: `vmsnap install --for gcp (the hook's --timeout becomes ${
        belowAgent(waits)
      } s), or raise timeout_in_seconds.`,
    })]
    : [];
  return withWarnings(
    name,
    `pre.sh and post.sh run; timeout_in_seconds ${waits} s, hook ${hook} s`,
    warnings,
  );
}

/** Azure's timeoutInSeconds as the extension takes it (a number, at most 1800), if readable. */
function azureWaits(root: string): { calls?: string; timeout?: number } {
  const text = readUnder(root, AZURE_CONFIG);
  const parsed = text === undefined ? undefined : parseJsonc(text);
  if (typeof parsed !== "object" || parsed === null) return {};
  const timeout = Number(parsed.timeoutInSeconds ?? 10);
  return {
    calls: typeof parsed.preScriptLocation === "string" ? parsed.preScriptLocation : undefined,
    timeout: Number.isFinite(timeout) ? Math.min(timeout, AZURE_MAX_TIMEOUT) : undefined,
  };
}

/** Azure: its file still calls vmsnap, and the hook gives up before Azure's CURRENT timeout. */
function checkAzure(options: AgentCheckOptions, manifest?: Manifest): AgentFindings {
  const name = "agent azure";
  if (!manifest) return { steps: [], problems: [], warnings: [] };
  const azure = azureWaits(options.root);
  if (azure.calls !== AZURE_PRE) {
    return failed(name, {
      code: "HookNotRun",
      message: `Azure Backup will not run vmsnap's hook: ${AZURE_CONFIG} ${
        azure.calls ? `calls ${azure.calls}` : "cannot be read"
      }, not ${AZURE_PRE}. Fix: vmsnap install --for azure.`,
    });
  }
  const hook = hookTimeout(options.root, AZURE_PRE, AGENTS.azure.timeoutSeconds);
  const warnings = azure.timeout !== undefined && hook >= azure.timeout
    ? [timeoutWarning({
      agent: "azure",
      waits:
        `Azure now waits timeoutInSeconds = ${azure.timeout} s (${AZURE_CONFIG}) for ${AZURE_PRE}`,
      hook:
        `the hook there was installed with --timeout ${hook}: Azure snapshots mid-quiesce and the lock stays until Azure's post`,
      fix: `vmsnap install --for azure (the hook's --timeout becomes ${
        belowAgent(azure.timeout)
      } s), or raise timeoutInSeconds again.`,
    })]
    : [];
  return withWarnings(
    name,
    `${AZURE_CONFIG} calls vmsnap; timeoutInSeconds ${azure.timeout ?? "?"} s, hook ${hook} s`,
    warnings,
  );
}

/** One agent's findings; what could not be read is a warning, never the end of check. */
function guarded(name: string, read: () => AgentFindings): AgentFindings {
  try {
    return read();
  } catch (error) {
    return {
      steps: [{ name, ok: true, warning: true, detail: "could not be read" }],
      problems: [],
      warnings: [{
        code: "InternalError",
        message: `${name}: its setup could not be read (${(error as Error).message}).`,
      }],
    };
  }
}

function passed(name: string, detail: string): AgentFindings {
  return { steps: [{ name, ok: true, detail }], problems: [], warnings: [] };
}

function failed(name: string, problem: Problem): AgentFindings {
  return { steps: [{ name, ok: false, detail: "1 problem" }], problems: [problem], warnings: [] };
}

function withWarnings(name: string, detail: string, warnings: Problem[]): AgentFindings {
  return {
    steps: [{ name, ok: true, ...(warnings.length ? { warning: true } : {}), detail }],
    problems: [],
    warnings,
  };
}

/** An agent found but not installed for: named, with the command (not a problem). */
function notInstalled(name: string, found: string | undefined, agent: string): AgentFindings {
  if (!found) return { steps: [], problems: [], warnings: [] };
  return passed(
    name,
    `found (${found}); vmsnap's hook is not installed: vmsnap install --for ${agent}`,
  );
}

/**
 * Every agent's findings, then SELinux's.
 *
 * @example
 * ```ts
 * import { agentChecks } from "./agent_checks.ts";
 * const found = agentChecks({ root: "/", maxHoldSeconds: 600 });
 * for (const step of found.steps) console.log(step.name, step.detail);
 * ```
 */
export function agentChecks(options: AgentCheckOptions): AgentFindings {
  const { root } = options;
  const findings = [
    guarded("agent qemu-ga", () => checkQemuGa(options, readManifest(root, "qemu-ga"))),
    guarded("agent vmware", () => checkVmware(options, readManifest(root, "vmware"))),
    guarded("agent azure", () => checkAzure(options, readManifest(root, "azure"))),
    guarded("agent gcp", () => checkGcp(options, readManifest(root, "gcp"))),
    guarded("agent aws", () => {
      const aws = discoverAws({ root });
      return aws.present
        ? passed("agent aws", `SSM agent found (${aws.service.path ?? aws.binary})`)
        : { steps: [], problems: [], warnings: [] };
    }),
    guarded("SELinux", () => selinuxChecks({ root, qemuGa: readManifest(root, "qemu-ga") })),
  ];
  return {
    steps: findings.flatMap((f) => f.steps),
    problems: findings.flatMap((f) => f.problems),
    warnings: findings.flatMap((f) => f.warnings),
  };
}

/** The parts of check's report the agents' findings go into. */
export interface ReportLike {
  ok: boolean;
  checks: AgentStep[];
  problems: Problem[];
  warnings: Problem[];
  config: { hook?: { maxHoldSeconds: number } } | null;
}

/**
 * Adds the agents' findings to `vmsnap check`'s report (the one line
 * check's handler calls).
 *
 * @example
 * ```ts
 * import { addAgentChecks } from "./agent_checks.ts";
 * const report = { ok: true, checks: [], problems: [], warnings: [], config: null };
 * addAgentChecks(report);
 * ```
 */
export function addAgentChecks(report: ReportLike, options: { root?: string } = {}): void {
  const found = agentChecks({
    root: options.root ?? "/",
    maxHoldSeconds: report.config?.hook?.maxHoldSeconds,
  });
  report.checks.push(...found.steps);
  report.problems.push(...found.problems);
  report.warnings.push(...found.warnings);
  report.ok = report.problems.length === 0;
}
