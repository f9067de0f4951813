/**
 * AWS Data Lifecycle Manager. DLM runs the pre and post scripts of an SSM
 * document (`aws:runShellScript`) on the instance around an EBS snapshot;
 * EBS does not freeze, so vmsnap does. The document lives in AWS, not on the
 * VM: install writes nothing and prints it.
 *
 * @module
 */
import { DEFAULT_CONFIG_PATH } from "../../config/config.ts";
import { discoverAws } from "../discover/aws.ts";
import { type AgentSpec, type InstallPlan, type PlanInput, sh } from "./agent.ts";

/** The SSM document's shell script: DLM gives the command as {{ command }}. */
function runCommand({ config, hook }: PlanInput): string[] {
  const [vmsnap] = hook("pre");
  return [
    "#!/bin/sh",
    'case "{{ command }}" in',
    `  pre-script) exec ${hook("pre").map(sh).join(" ")} --timeout 55 ;;`,
    `  post-script) exec ${hook("post").map(sh).join(" ")} --timeout 55 ;;`,
    `  dry-run) exec ${sh(vmsnap)} check --config ${sh(config)} ;;`,
    '  *) echo "unknown command {{ command }}" >&2; exit 64 ;;',
    "esac",
  ];
}

/** The SSM document, printed, and how to create it. */
function plan(input: PlanInput): InstallPlan {
  const document = {
    schemaVersion: "2.2",
    description: "vmsnap: application-consistent snapshots for Amazon Data Lifecycle Manager",
    parameters: {
      executionId: { type: "String", default: "None", allowedPattern: "^.{1,256}$" },
      command: {
        type: "String",
        default: "dry-run",
        allowedValues: ["pre-script", "post-script", "dry-run"],
      },
    },
    mainSteps: [{
      action: "aws:runShellScript",
      name: "vmsnap",
      precondition: { StringEquals: ["platformType", "Linux"] },
      inputs: { timeoutSeconds: "60", runCommand: runCommand(input) },
    }],
  };
  const ssm = discoverAws({ root: input.system.root });
  const found = ssm.present
    ? `found: the SSM agent (${ssm.service.path ?? ssm.binary}), which runs the document's script.`
    : `WARNING: the SSM agent was not found (looked at: ${
      ssm.looked.join(", ")
    }): DLM's scripts run only through it. Install and register amazon-ssm-agent.`;
  return {
    files: [],
    notes: [
      found,
      "AWS keeps the pre and post scripts in an SSM document, not on the VM: create it (aws ssm create-document --document-type Command --content file://vmsnap.json --name vmsnap) and name it in the DLM policy's scripts (ExecutionHandler), with an ExecutionTimeout of 60 s or more.",
    ],
    print: JSON.stringify(document, null, 2),
  };
}

/** AWS Data Lifecycle Manager. */
export const aws: AgentSpec = {
  name: "aws",
  title: "AWS Data Lifecycle Manager (SSM document)",
  freezes: false,
  timeoutSeconds: 55,
  defaultConfig: DEFAULT_CONFIG_PATH,
  plan,
};
