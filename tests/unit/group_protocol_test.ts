/**
 * The group protocol (src/group/) with members as separate processes
 * (tests/group_driver.ts) against a real etcd: one run from independent
 * starts, the barrier waits for exactly the configured members, racing
 * starts resolve to one run, a late member takes no part, a member that
 * never starts times the barrier out, an abort by one member reaches the
 * others, configs that disagree and a member name used twice are refused.
 */
import assert from "node:assert/strict";
import { EtcdClient } from "../../src/group/etcd.ts";
import { groupStatus } from "../../src/group/status.ts";
import { type EtcdCluster, startEtcd } from "../etcd.ts";
import {
  type DriverEvent,
  groupEvent,
  type MemberProcess,
  startMember,
  stopMembers,
} from "../group_members.ts";
import type { DriverConfig } from "../group_driver.ts";

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** A config for member `member` of `members`, with short test timings. */
function memberConfig(
  cluster: EtcdCluster,
  group: string,
  member: string,
  members: string[],
  more: Partial<DriverConfig> = {},
): DriverConfig {
  return {
    endpoints: cluster.endpoints,
    group,
    member,
    members,
    leaseTtlSeconds: 3,
    etcdLossMs: 2000,
    joinTimeoutMs: 8000,
    barrierTimeoutMs: 8000,
    outcomeWaitMs: 6000,
    ...more,
  };
}

async function withEtcd(fn: (cluster: EtcdCluster, members: MemberProcess[]) => Promise<void>) {
  const cluster = await startEtcd();
  const members: MemberProcess[] = [];
  try {
    await fn(cluster, members);
  } finally {
    await stopMembers(members);
    await cluster.stop();
  }
}

const ev = (name: string) => (e: DriverEvent) => e.ev === name;

Deno.test("members started independently join one run, pass both barriers only together, and agree on the lowest consistency", async () => {
  await withEtcd(async (cluster, procs) => {
    const names = ["db1", "db2", "app1", "app2"];
    for (const [i, name] of names.entries()) {
      procs.push(startMember(memberConfig(cluster, "shop", name, names, {
        quiesceMs: 200 + 400 * i,
        snapshotMs: 100,
        consistency: name === "db2" ? "filesystem" : "application",
      })));
      await sleep(300);
    }
    const outcomes = await Promise.all(procs.map((p) => p.waitFor(ev("outcome"))));
    assert.deepEqual(await Promise.all(procs.map((p) => p.exited)), [0, 0, 0, 0]);
    const joined = procs.map((p) => p.find(groupEvent("joined"))!.event);
    assert.equal(new Set(joined.map((j) => j.runId)).size, 1, "one run id");
    assert.equal(joined.filter((j) => j.created).length, 1, "one member created it");
    // Nobody passed "held" before the last member began to write it.
    const lastHolding = Math.max(...procs.map((p) => p.find(ev("holding"))!.wall));
    for (const p of procs) assert.ok(p.find(ev("passed"))!.wall >= lastHolding, p.name);
    for (const o of outcomes) {
      assert.equal(o.outcome.consistency, "filesystem");
      assert.equal(o.outcome.runId, joined[0].runId);
      assert.deepEqual(Object.keys(o.outcome.members).sort(), [...names].sort());
    }
    const client = new EtcdClient({ endpoints: cluster.endpoints });
    const status = await groupStatus(client, "shop");
    assert.equal(status.runs.length, 1);
    assert.equal(status.runs[0].state, "complete");
    assert.equal(status.runs[0].consistency, "filesystem");
    for (const name of names) assert.equal(status.runs[0].members[name].state, "reported");
  });
});

Deno.test("members started at the same instant resolve their racing runs to one, round after round", async () => {
  await withEtcd(async (cluster, procs) => {
    const names = ["a", "b", "c"];
    const runIds = new Set<string>();
    for (let round = 0; round < 3; round++) {
      const started = names.map((name) => startMember(memberConfig(cluster, "race", name, names)));
      procs.push(...started);
      await Promise.all(started.map((p) => p.waitFor(ev("closed"))));
      const joined = started.map((p) => p.find(groupEvent("joined"))!.event);
      assert.equal(new Set(joined.map((j) => j.runId)).size, 1, `round ${round}: one run`);
      assert.equal(joined.filter((j) => j.created).length, 1, `round ${round}: one creator`);
      runIds.add(joined[0].runId);
    }
    assert.equal(runIds.size, 3, "each round is a new run");
  });
});

Deno.test("concurrent creators in one process: one run wins, the losers' leases are revoked", async () => {
  await withEtcd(async (cluster) => {
    const { GroupMember } = await import("../../src/group/member.ts");
    const names = Array.from({ length: 8 }, (_, i) => `m${i}`);
    const clients = names.map(() => new EtcdClient({ endpoints: cluster.endpoints }));
    const members = await Promise.all(
      names.map((member, i) =>
        GroupMember.join({ client: clients[i], group: "race2", member, members: names })
      ),
    );
    try {
      assert.equal(new Set(members.map((m) => m.runId)).size, 1);
      assert.equal(members.filter((m) => m.created).length, 1);
      // 8 members' own leases, and one retention and one run lease: the losers' were revoked.
      const leases = await clients[0].call<{ leases?: unknown[] }>("/v3/lease/leases", {});
      assert.equal(leases.leases?.length, 10);
    } finally {
      await Promise.all(members.map((m) => m.abort({ code: "GroupAborted", message: "test end" })));
      await Promise.all(members.map((m) => m.close()));
    }
  });
});

Deno.test("a member that never starts times the join barrier out; started late, it takes no part; the next run is whole", async () => {
  await withEtcd(async (cluster, procs) => {
    const names = ["a", "b", "c"];
    const config = (name: string) =>
      memberConfig(cluster, "late", name, names, { joinTimeoutMs: 3000 });
    const [a, b] = ["a", "b"].map((name) => startMember(config(name)));
    procs.push(a, b);
    for (const p of [a, b]) {
      const released = await p.waitFor(ev("released"));
      assert.equal(released.code, "GroupBarrierTimeout", JSON.stringify(released));
      assert.match(released.message, /member c did not reach it/);
    }
    const outcome = (await a.waitFor(ev("outcome"))).outcome;
    assert.equal(outcome.consistency, "none");
    assert.equal(outcome.aborted.member, "c");
    // c starts while the ended run is still current: it is late and freezes nothing.
    const c = startMember(config("c"));
    procs.push(c);
    const failed = await c.waitFor(ev("join-failed"));
    assert.equal(failed.code, "GroupLate");
    assert.match(failed.message, /ended before member "c" joined it/);
    assert.equal(c.find(ev("quiescing")), undefined);
    assert.equal(await c.exited, 3);
    // Once the run lease has expired, a new start makes a new run that all three join.
    const client = new EtcdClient({ endpoints: cluster.endpoints });
    while ((await client.range("/vmsnap/groups/late/current")).kvs.length > 0) await sleep(200);
    const again = names.map((name) => startMember(config(name)));
    procs.push(...again);
    for (const p of again) {
      const o = await p.waitFor(ev("outcome"));
      assert.equal(o.outcome.consistency, "application");
      assert.notEqual(o.outcome.runId, outcome.runId);
    }
    const status = await groupStatus(client, "late");
    assert.deepEqual(status.runs.map((r) => r.state), ["complete", "aborted"]);
    assert.equal(status.runs[1].members.c.state, "absent");
  });
});

Deno.test("a member's abort reaches every other member within a second, with the member and its reason", async () => {
  await withEtcd(async (cluster, procs) => {
    const names = ["a", "b", "c"];
    for (const name of names) {
      procs.push(startMember(memberConfig(cluster, "abort", name, names, {
        quiesceMs: name === "b" ? 300 : 1500,
        failAt: name === "b" ? "quiesce" : undefined,
      })));
    }
    const [a, b, c] = procs;
    const origin = await b.waitFor(groupEvent("abort"));
    assert.equal(origin.event.reason.code, "PluginQuiesceFailed");
    for (const p of [a, c]) {
      const seen = await p.waitFor(groupEvent("abort"));
      assert.equal(seen.event.reason.member, "b");
      assert.equal(seen.event.reason.local, false);
      assert.match(seen.event.reason.message, /aborted by b \(phase joined\): PluginQuiesceFailed/);
      assert.ok(
        seen.wall - origin.wall < 1000,
        `${p.name} saw it after ${seen.wall - origin.wall} ms`,
      );
      const released = await p.waitFor(ev("released"));
      assert.ok(released.wall - seen.wall < 1000);
      assert.equal(p.find(ev("held")), undefined, `${p.name} never held`);
      assert.equal((await p.waitFor(ev("outcome"))).outcome.consistency, "none");
    }
    const status = await groupStatus(new EtcdClient({ endpoints: cluster.endpoints }), "abort");
    assert.equal(status.runs[0].state, "aborted");
    assert.equal(status.runs[0].aborted?.member, "b");
    assert.equal(status.runs[0].aborted?.code, "PluginQuiesceFailed");
  });
});

Deno.test("members whose configs list different members are refused, and the run is aborted for all", async () => {
  await withEtcd(async (cluster, procs) => {
    const a = startMember(memberConfig(cluster, "mis", "a", ["a", "b"], { quiesceMs: 5000 }));
    procs.push(a);
    await a.waitFor(groupEvent("joined"));
    const b = startMember(memberConfig(cluster, "mis", "b", ["a", "b", "c"]));
    procs.push(b);
    const failed = await b.waitFor(ev("join-failed"));
    assert.equal(failed.code, "GroupMembersMismatch");
    assert.match(
      failed.message,
      /has members \[a, b\], but member "b" is configured with \[a, b, c\]/,
    );
    const seen = await a.waitFor(groupEvent("abort"));
    assert.equal(seen.event.reason.code, "GroupMembersMismatch");
    assert.equal(await a.exited, 2);
  });
});

Deno.test("a second process with the same member name is refused while the first takes part", async () => {
  await withEtcd(async (cluster, procs) => {
    const names = ["a", "b"];
    const first = startMember(memberConfig(cluster, "busy", "a", names));
    procs.push(first);
    await first.waitFor(groupEvent("joined"));
    const second = startMember(memberConfig(cluster, "busy", "a", names));
    procs.push(second);
    const failed = await second.waitFor(ev("join-failed"));
    assert.equal(failed.code, "GroupMemberBusy");
    const b = startMember(memberConfig(cluster, "busy", "b", names));
    procs.push(b);
    assert.equal((await first.waitFor(ev("outcome"))).outcome.consistency, "application");
    assert.equal(await b.exited, 0);
  });
});

Deno.test("old runs are pruned to keepRuns by each new run, and expire with their retention lease", async () => {
  await withEtcd(async (cluster) => {
    const { GroupMember } = await import("../../src/group/member.ts");
    const { groupKeys } = await import("../../src/group/keys.ts");
    const { listRuns } = await import("../../src/group/runs.ts");
    const client = new EtcdClient({ endpoints: cluster.endpoints });
    const names = ["a", "b"];
    const runOnce = async () => {
      const members = [];
      for (const member of names) {
        members.push(
          await GroupMember.join({
            client,
            group: "keep",
            member,
            members: names,
            keepRuns: 2,
            retentionSeconds: 4,
          }),
        );
      }
      await Promise.all(members.map(async (m) => {
        await m.waitBarrier("joined");
        await m.reached("held");
        await m.waitBarrier("held", { timeoutMs: 5000 });
        await m.report({ consistency: "application", snapshotTaken: true });
      }));
      await Promise.all(members.map((m) => m.close()));
      return members[0].runId;
    };
    const ids = [];
    for (let i = 0; i < 4; i++) ids.push(await runOnce());
    const keys = groupKeys("keep");
    let stored = await listRuns(client, keys);
    for (let i = 0; stored.length > 2 && i < 50; i++) {
      await sleep(100);
      stored = await listRuns(client, keys);
    }
    assert.deepEqual(stored.map((r) => r.meta.runId), [ids[3], ids[2]]);
    assert.equal((await client.range(keys.runPrefix(ids[0]), { prefix: true })).count, 0);
    // Every record of a run is on its retention lease: etcd removes the run by itself.
    const lease = await client.leaseTimeToLive(stored[0].meta.retentionLease, { keys: true });
    assert.equal(lease.grantedTtl, 4);
    assert.ok(lease.keys.includes(keys.meta(ids[3])));
    assert.ok(lease.keys.includes(keys.report(ids[3], "b")));
    while ((await listRuns(client, keys)).length > 0) await sleep(250);
    // Left: at most `current`, on the run lease (it goes a join window after the last member).
    const left = await client.range(keys.prefix, { prefix: true, keysOnly: true });
    assert.deepEqual(left.kvs.map((kv) => kv.key).filter((k) => k !== keys.current), []);
  });
});
