/**
 * The backup agents found on a system (`vmsnap init --detect`): each with
 * where it was found and whether vmsnap's hook is installed for it, so init
 * can name the `vmsnap install --for AGENT` to run.
 *
 * @module
 */
import { kindUnder } from "../sys/under_root.ts";
import type { AgentName } from "./agents.ts";
import { findAgentService } from "./discover/agent_service.ts";
import { discoverAws } from "./discover/aws.ts";
import { discoverGcp } from "./discover/gcp.ts";
import { discoverQemuGa } from "./discover/qemu_ga.ts";
import { discoverVmware } from "./discover/vmware.ts";
import { readManifest } from "./install.ts";

/** An agent found. */
export interface FoundAgent {
  agent: AgentName;
  /** Where it was found, in words (its service, or its binary). */
  where: string;
  /** vmsnap's hook is installed for it (a manifest in /var/backups/vmsnap). */
  installed: boolean;
}

/** Azure's Linux agent (waagent), which runs the VMSnapshot extension. */
function findAzure(root: string): string | undefined {
  const service = findAgentService({
    root,
    units: ["waagent.service", "walinuxagent.service"],
    openrc: ["waagent"],
  });
  if (service.path) return `${service.kind} ${service.path}`;
  return kindUnder(root, "/usr/sbin/waagent").kind === "file" ? "/usr/sbin/waagent" : undefined;
}

/** Where one agent is, undefined when it is not there (or its files cannot be read). */
function where(find: () => string | undefined): string | undefined {
  try {
    return find();
  } catch {
    return undefined;
  }
}

/** Where each agent is, undefined when it is not there. */
function whereEach(root: string): [AgentName, string | undefined][] {
  const service = (s: { kind: string; path?: string }) => s.path && `${s.kind} ${s.path}`;
  return [
    [
      "qemu-ga",
      where(() => {
        const qga = discoverQemuGa({ root });
        return service(qga.service) || qga.binary;
      }),
    ],
    [
      "vmware",
      where(() => {
        const vmware = discoverVmware({ root });
        return service(vmware.service) || vmware.binary;
      }),
    ],
    ["azure", where(() => findAzure(root))],
    [
      "gcp",
      where(() => {
        const gcp = discoverGcp({ root });
        return service(gcp.service) || gcp.binary;
      }),
    ],
    [
      "aws",
      where(() => {
        const aws = discoverAws({ root });
        return aws.present ? service(aws.service) || aws.binary : undefined;
      }),
    ],
  ];
}

/**
 * The backup agents on a system, in the order of `--for`'s list.
 *
 * @example
 * ```ts
 * import { detectAgents } from "./detect_agents.ts";
 * for (const a of detectAgents({ root: "/" })) console.log(a.agent, a.where, a.installed);
 * ```
 */
export function detectAgents(options: { root: string }): FoundAgent[] {
  return whereEach(options.root)
    .filter((entry): entry is [AgentName, string] => entry[1] !== undefined)
    .map(([agent, where]) => ({
      agent,
      where,
      installed: readManifest(options.root, agent) !== undefined,
    }));
}
