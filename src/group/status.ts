/**
 * `vmsnap group status NAME`: the group's last runs as etcd has them, from
 * any machine with the group's etcd access. For each run: its state, the
 * group's consistency, the first abort, and each member's state, last
 * phase, timings (on that member's own clock, from its start) and report.
 *
 * A run's state follows from its records alone (`src/group/run_view.ts`),
 * so it is right even when no member was left to write a conclusion: a
 * member whose lease expired before it reported shows as `lost`, and the
 * run as `lost` with consistency `none`.
 *
 * @module
 */
import { escapeForTerminal } from "../sys/terminal.ts";
import type { CallOptions, EtcdClient } from "./etcd.ts";
import { groupKeys } from "./keys.ts";
import { listRuns, readRun } from "./runs.ts";
import type { GroupConsistency, MemberView, RunMeta, RunView } from "./run_view.ts";

/** Where a run stands. */
export type RunState = "joining" | "running" | "complete" | "aborted" | "lost";

/** One run as `group status` shows it. */
export interface RunStatus {
  runId: string;
  state: RunState;
  consistency: GroupConsistency;
  /** This run is the one members join now. */
  current: boolean;
  createdBy: string;
  /** The creator's local time (to read). */
  createdAt: string;
  members: Record<string, MemberView>;
  aborted?: { member: string; by: string; code: string; message: string; phase?: string };
}

/** The group's status. */
export interface GroupStatus {
  group: string;
  /** Runs stored in etcd (at most the group's `keepRuns`). */
  stored: number;
  /** The newest runs first. */
  runs: RunStatus[];
}

/**
 * Reads the group's last `limit` runs (default 5).
 *
 * @example
 * ```ts
 * import { EtcdClient } from "./etcd.ts";
 * import { formatGroupStatus, groupStatus } from "./status.ts";
 * const client = new EtcdClient({ endpoints: ["http://127.0.0.1:2379"] });
 * console.log(formatGroupStatus(await groupStatus(client, "shop")));
 * ```
 */
export async function groupStatus(
  client: EtcdClient,
  group: string,
  options: CallOptions & { limit?: number } = {},
): Promise<GroupStatus> {
  const keys = groupKeys(group);
  const [runs, current] = await Promise.all([
    listRuns(client, keys, options),
    client.range(keys.current, options),
  ]);
  const currentId = parseCurrent(current.kvs[0]?.value);
  const shown = runs.slice(0, options.limit ?? 5);
  const views = await Promise.all(
    shown.map((run) => readRun(client, keys, run.meta.runId, options)),
  );
  return {
    group,
    stored: runs.length,
    runs: views.map(({ view }, i) => runStatus(shown[i].meta, view, currentId)),
  };
}

function runStatus(meta: RunMeta, view: RunView, currentId: string | undefined): RunStatus {
  const status: RunStatus = {
    runId: meta.runId,
    state: runState(view),
    consistency: view.consistency(),
    current: meta.runId === currentId,
    createdBy: meta.createdBy,
    createdAt: meta.createdAt,
    members: Object.fromEntries(meta.members.map((m) => [m, view.member(m)])),
  };
  if (view.abort) {
    const { revision: _, ...abort } = view.abort;
    status.aborted = abort;
  }
  return status;
}

/**
 * A run's state from its records.
 *
 * @example
 * ```ts
 * import { RunView } from "./run_view.ts";
 * import { runState } from "./status.ts";
 * runState(new RunView("/vmsnap/groups/shop/run/r1/")); // "joining"
 * ```
 */
export function runState(view: RunView): RunState {
  if (view.allReported()) {
    return view.consistency() === "none" && view.abort ? "aborted" : "complete";
  }
  if (view.abort) return "aborted";
  if (view.lost().length > 0) return "lost";
  return view.passed("joined") ? "running" : "joining";
}

function parseCurrent(value: string | undefined): string | undefined {
  try {
    return value ? (JSON.parse(value) as { runId?: string }).runId : undefined;
  } catch {
    return undefined;
  }
}

/**
 * The status as text for a terminal: one block per run, one line per member
 * (what members wrote is shown with its control characters escaped).
 *
 * @example
 * ```ts
 * import { formatGroupStatus } from "./status.ts";
 * formatGroupStatus({ group: "shop", stored: 0, runs: [] }); // "group shop: no runs in etcd"
 * ```
 */
export function formatGroupStatus(status: GroupStatus): string {
  if (status.runs.length === 0) return `group ${status.group}: no runs in etcd`;
  const lines = [`group ${status.group}: ${status.stored} run(s) stored, newest first`];
  for (const run of status.runs) {
    lines.push("");
    lines.push(
      `run ${run.runId}${
        run.current ? " (current)" : ""
      }: ${run.state}, consistency ${run.consistency}` +
        ` (created by ${run.createdBy} at ${run.createdAt})`,
    );
    if (run.aborted) {
      lines.push(
        `  aborted: ${run.aborted.code} about ${run.aborted.member}, recorded by ${run.aborted.by}` +
          `${run.aborted.phase ? ` in phase ${run.aborted.phase}` : ""}: ${run.aborted.message}`,
      );
    }
    for (const [name, m] of Object.entries(run.members)) lines.push(`  ${memberLine(name, m)}`);
  }
  return escapeForTerminal(lines.join("\n"));
}

function memberLine(name: string, m: MemberView): string {
  if (m.state === "absent") return `${name}: never joined`;
  const phases = Object.entries(m.phases ?? {}).map(([p, ms]) => `${p} ${ms} ms`).join(", ");
  const passed = Object.entries(m.passed ?? {}).map(([p, ms]) => `${p} ${ms} ms`).join(", ");
  const report = m.report
    ? `, reported ${m.report.consistency}${m.report.message ? ` (${m.report.message})` : ""}`
    : "";
  return `${name} (${m.host ?? "?"}): ${m.state}, last phase ${
    m.phase ?? "?"
  }${report}; phases: ${phases}${passed ? `; passed: ${passed}` : ""}`;
}
