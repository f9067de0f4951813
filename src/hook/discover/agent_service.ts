/**
 * The service that starts an agent, found under a root: the first of its
 * systemd unit names that exists (with drop-ins and the effective
 * `ExecStart=`), else its OpenRC script.
 *
 * @module
 */
import { readOpenrcService } from "../../sys/init_system.ts";
import { effectiveExecStart, loadUnit } from "../../sys/unit_file.ts";

/** An agent's service as found. */
export interface AgentService {
  kind: "systemd" | "openrc" | "none";
  /** The unit or service name found. */
  name?: string;
  /** The unit file or init script (a path on the target system). */
  path?: string;
  /** The effective command line, when one could be read. */
  argv: string[];
  looked: string[];
}

/**
 * Finds an agent's service.
 *
 * @example
 * ```ts
 * import { findAgentService } from "./agent_service.ts";
 * const svc = findAgentService({ root: "/", units: ["vmtoolsd.service"], openrc: ["open-vm-tools"] });
 * console.log(svc.kind, svc.path);
 * ```
 */
export function findAgentService(
  options: { root: string; units: string[]; openrc: string[] },
): AgentService {
  const { root } = options;
  const looked: string[] = [];
  for (const name of options.units) {
    const unit = loadUnit({ root, name });
    looked.push(...unit.looked);
    if (unit.path) {
      const argv = effectiveExecStart({ root, unit })?.argv ?? [];
      return { kind: "systemd", name, path: unit.path, argv, looked };
    }
  }
  for (const name of options.openrc) {
    const svc = readOpenrcService({ root, name });
    looked.push(...svc.looked);
    if (svc.script) {
      const argv = svc.command ? [svc.command, ...svc.args] : [];
      return { kind: "openrc", name, path: svc.script, argv, looked };
    }
  }
  return { kind: "none", argv: [], looked };
}
