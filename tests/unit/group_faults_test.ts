/**
 * Faults in a group run, with members as separate processes against a real
 * etcd: a member SIGKILLed or SIGSTOPped before, at and after the barrier
 * (its lease expires), a member cut from etcd (its network namespace's link
 * down) at and after the barrier, etcd's leader killed (three nodes), etcd
 * stopped entirely. After each: every member learns of the abort within a
 * second of it becoming visible (plus the lease TTL where the cause is a
 * lease), releases at once, and every result and `group status` tell the
 * truth. Timings here are bounds on behaviour; the figures are measured by
 * scripts/group_bench.ts.
 */
import assert from "node:assert/strict";
import { EtcdClient } from "../../src/group/etcd.ts";
import { groupStatus } from "../../src/group/status.ts";
import { type EtcdCluster, startEtcd } from "../etcd.ts";
import {
  type DriverEvent,
  groupEvent,
  makeMemberNet,
  type MemberProcess,
  startMember,
  stopMembers,
} from "../group_members.ts";
import type { DriverConfig } from "../group_driver.ts";

const TTL_S = 3;
const LOSS_MS = 2000;
const ev = (name: string) => (e: DriverEvent) => e.ev === name;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function config(
  endpoints: string[],
  group: string,
  member: string,
  more: Partial<DriverConfig> = {},
): DriverConfig {
  return {
    endpoints,
    group,
    member,
    members: ["a", "b", "c"],
    leaseTtlSeconds: TTL_S,
    etcdLossMs: LOSS_MS,
    joinTimeoutMs: 10_000,
    barrierTimeoutMs: 15_000,
    outcomeWaitMs: 8000,
    ...more,
  };
}

/** The member's abort event, asserted to come within `boundMs` of `since` (this machine's clock). */
async function abortWithin(
  p: MemberProcess,
  since: number,
  boundMs: number,
  code: string,
): Promise<DriverEvent> {
  const seen = await p.waitFor(groupEvent("abort"), boundMs + 10_000);
  assert.equal(seen.event.reason.code, code, `${p.name}: ${JSON.stringify(seen.event.reason)}`);
  const after = seen.wall - since;
  assert.ok(
    after <= boundMs,
    `${p.name} saw the abort ${after} ms after the fault (bound ${boundMs})`,
  );
  const released = await p.waitFor(ev("released"));
  if (released.aborted) {
    assert.ok(
      released.wall - seen.wall < 1000,
      `${p.name} released ${released.wall - seen.wall} ms after`,
    );
  }
  return seen;
}

/** Where the victim is when the fault strikes, and the timings that put it there. */
const PLACES = {
  // b quiesces long; a and c wait at the barrier, held.
  before: { trigger: "quiescing", victim: { quiesceMs: 6000 }, others: { quiesceMs: 200 } },
  // b is held at the barrier; a and c still quiesce.
  at: { trigger: "held", victim: { quiesceMs: 200 }, others: { quiesceMs: 6000 } },
  // Everyone passed; b's snapshot takes long.
  after: { trigger: "passed", victim: { snapshotMs: 8000 }, others: { snapshotMs: 100 } },
} as const;

async function withEtcd(
  options: Parameters<typeof startEtcd>[0],
  fn: (cluster: EtcdCluster, procs: MemberProcess[]) => Promise<void>,
): Promise<void> {
  const cluster = await startEtcd(options);
  const procs: MemberProcess[] = [];
  try {
    await fn(cluster, procs);
  } finally {
    await stopMembers(procs);
    await cluster.stop();
  }
}

for (const signal of ["SIGKILL", "SIGSTOP"] as const) {
  for (const [place, setup] of Object.entries(PLACES)) {
    Deno.test(`member ${signal} ${place} the barrier: the others abort when its lease expires, and say so`, async () => {
      await withEtcd({}, async (cluster, procs) => {
        const group = `${signal.toLowerCase()}-${place}`;
        const [a, b, c] = ["a", "b", "c"].map((m) =>
          startMember(config(cluster.endpoints, group, m, m === "b" ? setup.victim : setup.others))
        );
        procs.push(a, b, c);
        await b.waitFor(ev(setup.trigger));
        const struck = Date.now();
        b.signal(signal);
        for (const p of [a, c]) {
          const seen = await abortWithin(p, struck, TTL_S * 1000 + 1000, "GroupMemberLost");
          assert.equal(seen.event.reason.member, "b");
          assert.equal((await p.waitFor(ev("outcome"))).outcome.consistency, "none");
          if (place !== "after") {
            assert.equal(p.find(ev("passed")), undefined, `${p.name} never passed`);
          }
        }
        if (signal === "SIGSTOP") {
          // Continued after the others gave up: it learns of the abort, takes no snapshot.
          await Promise.all([a.exited, c.exited]);
          const resumed = Date.now();
          b.signal("SIGCONT");
          const released = await b.waitFor(ev("released"));
          assert.equal(released.aborted, true, JSON.stringify(released));
          assert.ok(
            released.wall - resumed < 1000,
            `released ${released.wall - resumed} ms after SIGCONT`,
          );
          assert.equal(b.find(ev("snapshot")), undefined);
          assert.equal(await b.exited, 2);
        }
        const status = await groupStatus(new EtcdClient({ endpoints: cluster.endpoints }), group);
        const run = status.runs[0];
        assert.equal(run.consistency, "none");
        assert.equal(run.state, "aborted");
        assert.equal(run.aborted?.member, "b");
        assert.equal(run.aborted?.code, "GroupMemberLost");
        if (signal === "SIGKILL") assert.equal(run.members.b.state, "lost");
        else assert.equal(run.members.b.report?.consistency, "none");
      });
    });
  }
}

for (const place of ["at", "after"] as const) {
  Deno.test(`a member cut from etcd ${place} the barrier gives up by itself; the others see its lease expire`, async () => {
    const net = makeMemberNet(3);
    try {
      await withEtcd({ extraHosts: [net.hostIp] }, async (cluster, procs) => {
        const endpoints = cluster.extraEndpoints(0);
        const setup = PLACES[place];
        const group = `cut-${place}`;
        const members = ["a", "b", "c"].map((m, i) =>
          startMember(
            config(endpoints, group, m, m === "b" ? setup.victim : setup.others),
            { netns: net.namespaces[i] },
          )
        );
        procs.push(...members);
        const [a, b, c] = members;
        await b.waitFor(ev(setup.trigger));
        const cut = Date.now();
        net.cut(1);
        const own = await abortWithin(b, cut, LOSS_MS + 1000, "GroupEtcdUnreachable");
        assert.equal(own.event.reason.local, true);
        assert.equal(b.find(ev("snapshot")), undefined, "no snapshot after losing etcd");
        for (const p of [a, c]) {
          const seen = await abortWithin(p, cut, TTL_S * 1000 + 1000, "GroupMemberLost");
          assert.equal(seen.event.reason.member, "b");
          assert.equal((await p.waitFor(ev("outcome"))).outcome.consistency, "none");
        }
        // b's own result: aborted, and it never waited on etcd past its bound.
        const outcome = (await b.waitFor(ev("outcome"))).outcome;
        assert.equal(outcome.consistency, "none");
        assert.equal(outcome.aborted.code, "GroupEtcdUnreachable");
        await b.exited;
        net.restore(1);
        const status = await groupStatus(new EtcdClient({ endpoints: cluster.endpoints }), group);
        assert.equal(status.runs[0].consistency, "none");
        assert.equal(status.runs[0].members.b.state, "lost");
      });
    } finally {
      net.cleanup();
    }
  });
}

Deno.test("etcd's leader killed during the barrier: the run ends the same way for every member, as status says", async () => {
  await withEtcd({ nodes: 3 }, async (cluster, procs) => {
    const names = ["a", "b", "c"];
    for (const m of names) {
      procs.push(startMember(config(cluster.endpoints, "leader", m, {
        leaseTtlSeconds: 5,
        etcdLossMs: 4000,
        quiesceMs: m === "c" ? 1500 : 300,
      })));
    }
    await procs[0].waitFor(ev("held"));
    const leader = await cluster.leader();
    const killed = Date.now();
    leader.signal("SIGKILL");
    const outcomes = await Promise.all(procs.map((p) => p.waitFor(ev("outcome"), 30_000)));
    const finished = Math.max(...outcomes.map((o) => o.wall));
    assert.ok(finished - killed < 20_000);
    const survivors = cluster.endpoints.filter((e) => e !== leader.endpoint);
    let status = await groupStatus(new EtcdClient({ endpoints: survivors }), "leader");
    while (status.runs[0].consistency === "pending") {
      await sleep(500);
      status = await groupStatus(new EtcdClient({ endpoints: survivors }), "leader");
    }
    const final = status.runs[0].consistency;
    assert.ok(final === "application" || final === "none", final);
    for (const [i, o] of outcomes.entries()) {
      assert.ok(
        o.outcome.consistency === final || o.outcome.consistency === "pending",
        `${names[i]}: ${o.outcome.consistency} vs ${final}`,
      );
      if (final === "application") assert.ok(procs[i].find(ev("snapshot")));
    }
    console.log(`leader killed: the run ended ${final} (${finished - killed} ms after the kill)`);
  });
});

Deno.test("etcd stopped entirely at the barrier: every member gives up within its bound and releases", async () => {
  await withEtcd({}, async (cluster, procs) => {
    for (const m of ["a", "b", "c"]) {
      procs.push(startMember(config(cluster.endpoints, "stopped", m, {
        quiesceMs: m === "c" ? 5000 : 200,
      })));
    }
    await procs[0].waitFor(ev("held"));
    await procs[1].waitFor(ev("held"));
    const stopped = Date.now();
    cluster.nodes[0].signal("SIGSTOP"); // hung, not refused: every request waits for its deadline
    for (const p of procs) {
      const seen = await abortWithin(p, stopped, LOSS_MS + 1000, "GroupEtcdUnreachable");
      assert.equal(seen.event.reason.local, true);
      assert.equal(p.find(ev("passed")), undefined);
    }
    // Each member ends on its own deadlines, etcd or not.
    await Promise.all(procs.map((p) => p.exited));
    const ended = Math.max(...procs.map((p) => p.find(ev("closed"))!.wall));
    assert.ok(ended - stopped < 20_000, `members ended ${ended - stopped} ms after etcd stopped`);
    cluster.nodes[0].signal("SIGCONT");
    const client = new EtcdClient({ endpoints: cluster.endpoints });
    let status = await groupStatus(client, "stopped");
    while (status.runs[0].state === "running") {
      await sleep(500);
      status = await groupStatus(client, "stopped");
    }
    assert.equal(status.runs[0].consistency, "none");
  });
});
