/**
 * Whether the AWS SSM agent is on a target system, read under a root. AWS
 * keeps the pre and post scripts in an SSM document run by the agent, not in
 * a file on the VM: vmsnap only needs to know the agent is there (its unit
 * and binary: /usr/bin on Amazon Linux and RHEL, /usr/sbin in SUSE's
 * package, a snap on Ubuntu).
 *
 * @module
 */
import { kindUnder } from "../../sys/under_root.ts";
import { type AgentService, findAgentService } from "./agent_service.ts";

/** Where the agent's packages put its binary. */
const SSM_BINARIES = [
  "/usr/bin/amazon-ssm-agent",
  "/usr/sbin/amazon-ssm-agent",
  "/snap/amazon-ssm-agent/current/amazon-ssm-agent",
];

/** The AWS SSM agent's presence on a target system. */
export interface AwsSetup {
  present: boolean;
  binary?: string;
  service: AgentService;
  looked: string[];
}

/**
 * Looks for the AWS SSM agent under a root.
 *
 * @example
 * ```ts
 * import { discoverAws } from "./aws.ts";
 * console.log(discoverAws({ root: "/" }).present);
 * ```
 */
export function discoverAws(options: { root: string }): AwsSetup {
  const { root } = options;
  const service = findAgentService({
    root,
    units: ["amazon-ssm-agent.service", "snap.amazon-ssm-agent.amazon-ssm-agent.service"],
    openrc: ["amazon-ssm-agent"],
  });
  const binaries = [service.argv[0], ...SSM_BINARIES].filter((p): p is string => !!p);
  const binary = binaries.find((p) => kindUnder(root, p).kind === "file");
  return {
    present: service.kind !== "none" || binary !== undefined,
    binary,
    service,
    looked: [...new Set([...binaries, ...service.looked])],
  };
}
