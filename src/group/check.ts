/**
 * What `vmsnap check --connect` learns of a group's etcd: whether each
 * endpoint answers (its version, whether it leads), whether the member's
 * credentials are accepted, whether they may read and write the group's
 * prefix, and whether they are wider than they need be (etcd's
 * authentication off, write access beyond the group's prefix, or an etcd
 * that does not check permissions inside nested transactions: before
 * 3.4.44, 3.5.30 and 3.6.11, GHSA-rfx7-8w68-q57q, and GHSA-x35m-3gp4-4fh5 / CVE-2026-44283).
 *
 * The permission probes are transactions whose comparison can never hold
 * (a key's version below 0), so nothing is written: etcd checks the
 * permissions of both branches of a transaction before it looks at the
 * comparison.
 *
 * @module
 */
import type { Problem } from "../errors.ts";
import { type EtcdClient, EtcdError, type Op } from "./etcd.ts";
import { groupKeys, GROUPS_PREFIX } from "./keys.ts";

/** One endpoint as it answered. */
export interface EndpointCheck {
  endpoint: string;
  ok: boolean;
  version?: string;
  leader?: boolean;
  error?: string;
}

/** What the check found. */
export interface GroupAccessReport {
  endpoints: EndpointCheck[];
  /** The credentials are accepted (true also when etcd's authentication is off). */
  authenticated: boolean;
  canRead: boolean;
  canWrite: boolean;
  /** Problems (errors) and warnings (`GroupEtcdOpen`), with the config path they concern. */
  problems: Problem[];
}

/**
 * Checks the group's etcd as this member sees it (see the module doc).
 *
 * @example
 * ```ts
 * import { EtcdClient } from "./etcd.ts";
 * import { checkGroupAccess } from "./check.ts";
 * const client = new EtcdClient({ endpoints: ["https://10.0.0.5:2379"] });
 * const report = await checkGroupAccess(client, { group: "shop" });
 * for (const p of report.problems) console.error(p.code, p.message);
 * ```
 */
export async function checkGroupAccess(
  client: EtcdClient,
  options: { group: string; timeoutMs?: number },
): Promise<GroupAccessReport> {
  const timeoutMs = options.timeoutMs ?? 3000;
  const endpoints = await Promise.all(
    client.endpoints.map((endpoint) => endpointCheck(client, endpoint, timeoutMs)),
  );
  const report: GroupAccessReport = {
    endpoints,
    authenticated: false,
    canRead: false,
    canWrite: false,
    problems: endpoints.filter((e) => !e.ok).map((e) => ({
      code: "GroupEtcdUnreachable",
      message: `etcd endpoint ${e.endpoint} does not answer: ${e.error}`,
      path: "group.etcd.endpoints",
    })),
  };
  if (!endpoints.some((e) => e.ok)) return report;
  const keys = groupKeys(options.group);
  const probe = `${keys.prefix}check`;
  report.canRead = await allowed(report, () => client.range(keys.current, { timeoutMs }));
  if (!report.authenticated) return report;
  report.canWrite = await allowed(report, () => noopPut(client, probe, probe, timeoutMs));
  if (!client.authenticated) {
    report.problems.push({
      code: "GroupEtcdOpen",
      message:
        "etcd's authentication is off: anyone who reaches etcd can abort or forge this group's runs. Fix: enable it and give each member its own user (vmsnap group etcd-setup).",
      path: "group.etcd",
    });
  } else if (await succeeds(noopPut(client, probe, GROUPS_PREFIX, timeoutMs))) {
    report.problems.push({
      code: "GroupEtcdOpen",
      message:
        `this member's etcd user may write beyond ${keys.prefix} (${GROUPS_PREFIX} at least): a member needs its group's prefix only. Fix: use a user with only the role vmsnap group etcd-setup prints.`,
      path: "group.etcd.username",
    });
  } else if (await succeeds(noopPut(client, probe, GROUPS_PREFIX, timeoutMs, true))) {
    const version = endpoints.find((e) => e.ok)?.version ?? "?";
    report.problems.push({
      code: "GroupEtcdOpen",
      message:
        `etcd ${version} does not check permissions inside nested transactions (GHSA-rfx7-8w68-q57q): this member's user, refused beyond ${keys.prefix}, could still write anywhere through one. Fix: upgrade etcd to 3.4.44, 3.5.30, 3.6.11 or later.`,
      path: "group.etcd.endpoints",
    });
  }
  return report;
}

function succeeds(promise: Promise<unknown>): Promise<boolean> {
  return promise.then(() => true, () => false);
}

async function endpointCheck(
  client: EtcdClient,
  endpoint: string,
  timeoutMs: number,
): Promise<EndpointCheck> {
  try {
    const s = await client.status(endpoint, { timeoutMs });
    return { endpoint, ok: true, version: s.version, leader: s.memberId === s.leader };
  } catch (error) {
    return { endpoint, ok: false, error: error instanceof Error ? error.message : String(error) };
  }
}

/** Runs a probe: true when allowed; a refusal becomes a problem of its own code. */
async function allowed(report: GroupAccessReport, probe: () => Promise<unknown>): Promise<boolean> {
  try {
    await probe();
    report.authenticated = true;
    return true;
  } catch (error) {
    const e = error instanceof EtcdError
      ? error
      : new EtcdError("GroupEtcdError", String(error), { cause: error });
    if (e.code === "GroupEtcdPermissionDenied") report.authenticated = true;
    report.problems.push({
      code: e.code,
      message: e.message,
      path: e.code === "GroupEtcdPermissionDenied" || e.code === "GroupEtcdAuthFailed"
        ? "group.etcd.username"
        : "group.etcd",
    });
    return false;
  }
}

/**
 * A transaction that would put `target` (inside a nested transaction when
 * `nested`) but never does: its comparison cannot hold.
 */
function noopPut(
  client: EtcdClient,
  compared: string,
  target: string,
  timeoutMs: number,
  nested = false,
) {
  const put: Op = { put: { key: target, value: "" } };
  return client.txn({
    compare: [{ key: compared, target: "version", op: "<", value: 0 }],
    success: [nested ? { txn: { compare: [], success: [put] } } : put],
  }, { timeoutMs });
}
