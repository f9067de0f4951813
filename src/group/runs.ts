/**
 * A group's runs as stored: the list (newest first, by etcd's revision of
 * each run's meta record), one run read atomically, and the pruning that
 * keeps a group to its last runs. Every record of a run is also attached to
 * the run's retention lease, so etcd removes a run by itself after the
 * retention period even if no later run prunes it.
 *
 * @module
 */
import type { CallOptions, EtcdClient } from "./etcd.ts";
import type { GroupKeys } from "./keys.ts";
import { type RunMeta, RunView } from "./run_view.ts";

/** A stored run: its meta record and when (revision) it was created. */
export interface StoredRun {
  meta: RunMeta;
  createRevision: number;
}

/**
 * The group's runs, newest first.
 *
 * @example
 * ```ts
 * import { EtcdClient } from "./etcd.ts";
 * import { groupKeys } from "./keys.ts";
 * import { listRuns } from "./runs.ts";
 * const client = new EtcdClient({ endpoints: ["http://127.0.0.1:2379"] });
 * const runs = await listRuns(client, groupKeys("shop"));
 * console.log(runs.map((r) => r.meta.runId));
 * ```
 */
export async function listRuns(
  client: EtcdClient,
  keys: GroupKeys,
  call: CallOptions = {},
): Promise<StoredRun[]> {
  const { kvs } = await client.range(keys.metaPrefix, { prefix: true, ...call });
  const runs: StoredRun[] = [];
  for (const kv of kvs) {
    try {
      runs.push({ meta: JSON.parse(kv.value) as RunMeta, createRevision: kv.createRevision });
    } catch {
      // Not a record of ours: ignored.
    }
  }
  return runs.sort((a, b) => b.createRevision - a.createRevision);
}

/**
 * One run's meta and records, read in one transaction (one revision).
 *
 * @example
 * ```ts
 * import { EtcdClient } from "./etcd.ts";
 * import { groupKeys } from "./keys.ts";
 * import { readRun } from "./runs.ts";
 * const client = new EtcdClient({ endpoints: ["http://127.0.0.1:2379"] });
 * const { view } = await readRun(client, groupKeys("shop"), "20260101T020000Z-3f9a1c");
 * console.log(view.consistency());
 * ```
 */
export async function readRun(
  client: EtcdClient,
  keys: GroupKeys,
  runId: string,
  call: CallOptions = {},
): Promise<{ view: RunView; revision: number }> {
  const read = await client.txn({
    compare: [],
    success: [
      { range: { key: keys.meta(runId) } },
      { range: { key: keys.runPrefix(runId), prefix: true } },
    ],
  }, call);
  const view = new RunView(keys.runPrefix(runId));
  const meta = read.responses[0].kvs?.[0];
  if (meta) view.meta = JSON.parse(meta.value) as RunMeta;
  for (const kv of read.responses[1].kvs ?? []) view.apply("put", kv);
  return { view, revision: read.revision };
}

/**
 * Deletes every run but the newest `keep` (its records and its meta).
 * Returns the run IDs deleted.
 *
 * @example
 * ```ts
 * import { EtcdClient } from "./etcd.ts";
 * import { groupKeys } from "./keys.ts";
 * import { pruneRuns } from "./runs.ts";
 * const client = new EtcdClient({ endpoints: ["http://127.0.0.1:2379"] });
 * await pruneRuns(client, { keys: groupKeys("shop"), keep: 50 });
 * ```
 */
export async function pruneRuns(
  client: EtcdClient,
  options: { keys: GroupKeys; keep: number; call?: CallOptions },
): Promise<string[]> {
  const runs = await listRuns(client, options.keys, options.call);
  const old = runs.slice(Math.max(1, options.keep)).map((r) => r.meta.runId);
  for (const runId of old) {
    await client.txn({
      compare: [],
      success: [
        { delete: { key: options.keys.runPrefix(runId), prefix: true } },
        { delete: { key: options.keys.meta(runId) } },
      ],
    }, options.call);
  }
  return old;
}
