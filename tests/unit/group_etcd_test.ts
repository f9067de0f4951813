/**
 * The etcd client (src/group/etcd.ts, etcd_watch.ts) against a real etcd:
 * the key-value calls and transactions, leases, the watch from a revision,
 * failover past a refused and a silent endpoint, deadlines and
 * cancellation, a watch that outlives the node it was on, mutual TLS,
 * authentication (wrong password, none, an expired token), and secrets kept
 * out of output.
 */
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { createServer, type Server, type Socket } from "node:net";
import { join } from "node:path";
import { EtcdClient, EtcdError } from "../../src/group/etcd.ts";
import { EtcdWatch, type WatchEvent } from "../../src/group/etcd_watch.ts";
import { checkEtcdTls } from "../../src/group/etcd_tls.ts";
import { checkGroupAccess } from "../../src/group/check.ts";
import { redact } from "../../src/secrets.ts";
import { VmsnapError } from "../../src/errors.ts";
import { type EtcdCluster, etcdctl, freePort, makePki, startEtcd } from "../etcd.ts";
import { secureDir } from "../helpers.ts";

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function withEtcd(
  options: Parameters<typeof startEtcd>[0],
  fn: (cluster: EtcdCluster) => Promise<void>,
): Promise<void> {
  const cluster = await startEtcd(options);
  try {
    await fn(cluster);
  } finally {
    await cluster.stop();
  }
}

/** A TCP listener that accepts connections and never answers (a hung etcd). */
async function silentListener(): Promise<{ url: string; close(): Promise<void> }> {
  const sockets = new Set<Socket>();
  const server: Server = createServer((socket) => {
    sockets.add(socket);
    socket.on("error", () => {});
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const port = (server.address() as { port: number }).port;
  return {
    url: `http://127.0.0.1:${port}`,
    close: () =>
      new Promise((resolve) => {
        for (const socket of sockets) socket.destroy();
        server.close(() => resolve());
      }),
  };
}

async function rejects(promise: Promise<unknown>): Promise<EtcdError> {
  try {
    await promise;
  } catch (error) {
    if (error instanceof VmsnapError) return error as EtcdError;
    throw error;
  }
  throw new Error("expected a rejection");
}

Deno.test("ranges, puts, deletes and transactions as etcd applies them", async () => {
  await withEtcd({}, async (cluster) => {
    const etcd = new EtcdClient({ endpoints: cluster.endpoints });
    const { revision } = await etcd.put("/t/a", "é\u0000\n1");
    await etcd.put("/t/b", "2");
    await etcd.put("/u", "outside");
    const all = await etcd.range("/t/", { prefix: true });
    assert.deepEqual(all.kvs.map((kv) => [kv.key, kv.value]), [["/t/a", "é\u0000\n1"], [
      "/t/b",
      "2",
    ]]);
    assert.equal(all.kvs[0].createRevision, revision);
    assert.equal(all.count, 2);
    // A transaction's comparison fails: the failure branch runs, nothing is written.
    const taken = await etcd.txn({
      compare: [{ key: "/t/a", target: "create", op: "=", value: 0 }],
      success: [{ put: { key: "/t/a", value: "overwritten" } }],
      failure: [{ range: { key: "/t/a" } }],
    });
    assert.equal(taken.succeeded, false);
    assert.equal(taken.responses[0].kvs?.[0].value, "é\u0000\n1");
    const free = await etcd.txn({
      compare: [
        { key: "/t/c", target: "create", op: "=", value: 0 },
        { key: "/t/b", target: "value", op: "=", value: "2" },
        { key: "/t/b", target: "mod", op: ">", value: 0 },
      ],
      success: [{ put: { key: "/t/c", value: "3" } }, { range: { key: "/t/", prefix: true } }],
    });
    assert.equal(free.succeeded, true);
    assert.deepEqual(free.responses[1].kvs?.map((kv) => kv.key), ["/t/a", "/t/b", "/t/c"]);
    assert.equal((await etcd.deleteRange("/t/", { prefix: true })).deleted, 3);
    assert.deepEqual((await etcd.range("/u")).kvs.map((kv) => kv.value), ["outside"]);
    // An older revision is still readable until compaction.
    assert.equal((await etcd.range("/t/a", { revision })).kvs[0].value, "é\u0000\n1");
  });
});

Deno.test("leases: granted, kept alive together, revoked with their keys, expired by etcd", async () => {
  await withEtcd({}, async (cluster) => {
    const etcd = new EtcdClient({ endpoints: cluster.endpoints });
    const short = await etcd.leaseGrant(2);
    const long = await etcd.leaseGrant(30);
    assert.equal(short.ttl, 2);
    await etcd.put("/l/short", "x", { lease: short.id });
    await etcd.put("/l/long", "y", { lease: long.id });
    const ttls = await etcd.leaseKeepAlive([short.id, long.id, "4242"]);
    assert.deepEqual([...ttls.values()], [2, 30, 0]);
    const ttl = await etcd.leaseTimeToLive(long.id, { keys: true });
    assert.deepEqual(ttl.keys, ["/l/long"]);
    assert.equal(ttl.grantedTtl, 30);
    await etcd.leaseRevoke(long.id);
    await etcd.leaseRevoke(long.id); // gone already: not an error
    assert.equal((await etcd.range("/l/long")).kvs.length, 0);
    // Not kept alive: etcd deletes its key after the TTL.
    while ((await etcd.range("/l/short")).kvs.length > 0) await sleep(200);
    assert.equal((await etcd.leaseKeepAlive([short.id])).get(short.id), 0);
    assert.equal((await etcd.leaseTimeToLive(short.id)).ttl, -1);
  });
});

Deno.test("a watch delivers every change from its start revision, in order, once", async () => {
  await withEtcd({}, async (cluster) => {
    const etcd = new EtcdClient({ endpoints: cluster.endpoints });
    const first = await etcd.put("/w/1", "a");
    await etcd.put("/w/2", "b");
    await etcd.put("/x", "not watched");
    const seen: WatchEvent[] = [];
    const watch = new EtcdWatch(etcd, {
      key: "/w/",
      prefix: true,
      startRevision: first.revision,
      onEvents: (events) => seen.push(...events),
    });
    try {
      await etcd.deleteRange("/w/1");
      await etcd.put("/w/2", "c");
      while (seen.length < 4) await sleep(20);
      assert.deepEqual(
        seen.map((e) => `${e.type} ${e.kv.key} ${e.kv.value}`),
        ["put /w/1 a", "put /w/2 b", "delete /w/1 ", "put /w/2 c"],
      );
      assert.ok(watch.connected);
    } finally {
      watch.stop();
      await watch.done;
    }
  });
});

Deno.test("a call moves past a refused and a silent endpoint; the deadline and the signal bound it", async () => {
  await withEtcd({}, async (cluster) => {
    const silent = await silentListener();
    try {
      const refused = `http://127.0.0.1:${await freePort()}`; // nothing listens there
      const etcd = new EtcdClient({
        endpoints: [refused, silent.url, ...cluster.endpoints],
        attemptTimeoutMs: 300,
      });
      await etcd.put("/f", "1", { timeoutMs: 3000 });
      assert.equal(etcd.endpoint, cluster.endpoints[0], "the live endpoint is preferred now");
      assert.equal((await etcd.range("/f")).kvs[0].value, "1");

      const dead = new EtcdClient({ endpoints: [silent.url], attemptTimeoutMs: 200 });
      const started = performance.now();
      const error = await rejects(dead.range("/f", { timeoutMs: 600 }));
      assert.equal(error.code, "GroupEtcdUnreachable");
      assert.match(error.message, /no etcd endpoint answered \/v3\/kv\/range within 600 ms/);
      assert.ok(performance.now() - started < 3000, "bounded by its deadline");

      const controller = new AbortController();
      const pending = dead.range("/f", { signal: controller.signal, timeoutMs: 60_000 });
      setTimeout(() => controller.abort(new Error("caller gave up")), 100);
      await assert.rejects(pending, /caller gave up/);
    } finally {
      await silent.close();
    }
  });
});

Deno.test("a watch on a node that dies goes on from another node without losing or repeating a change", async () => {
  await withEtcd({ nodes: 3 }, async (cluster) => {
    const writer = new EtcdClient({ endpoints: cluster.endpoints });
    const start = await writer.put("/k/0", "0");
    const seen: string[] = [];
    const states: string[] = [];
    const watcher = new EtcdClient({ endpoints: cluster.endpoints });
    const watch = new EtcdWatch(watcher, {
      key: "/k/",
      prefix: true,
      startRevision: start.revision,
      onEvents: (events) => seen.push(...events.map((e) => e.kv.value)),
      onState: (state) => states.push(state),
    });
    try {
      while (!watch.connected) await sleep(20);
      const first = cluster.nodes.find((n) => n.endpoint === watcher.endpoint)!;
      for (let i = 1; i <= 5; i++) await writer.put(`/k/${i}`, String(i));
      first.signal("SIGKILL");
      for (let i = 6; i <= 10; i++) await writer.put(`/k/${i}`, String(i), { timeoutMs: 10_000 });
      while (seen.length < 11) await sleep(50);
      await sleep(300);
      assert.deepEqual(seen, Array.from({ length: 11 }, (_, i) => String(i)));
      assert.deepEqual(states.slice(0, 3), ["connected", "broken", "connected"]);
      assert.notEqual(watcher.endpoint, first.endpoint);
    } finally {
      watch.stop();
      await watch.done;
    }
  });
});

Deno.test("mutual TLS: the client certificate gets in; a wrong CA, no certificate or a foreign key do not", async () => {
  const dir = secureDir("etcd-tls-");
  try {
    const pki = makePki(join(dir.dir, "pki"));
    await withEtcd({ tls: pki }, async (cluster) => {
      const read = (f: string) => readFileSync(f, "utf8");
      const member = pki.client("member1");
      const tls = { ca: read(pki.caFile), cert: read(member.certFile), key: read(member.keyFile) };
      const etcd = new EtcdClient({ endpoints: cluster.endpoints, tls });
      await etcd.put("/tls", "ok");
      assert.equal((await etcd.range("/tls")).kvs[0].value, "ok");
      etcd.close();

      const otherCa = makePki(join(dir.dir, "other"));
      const wrongCa = new EtcdClient({
        endpoints: cluster.endpoints,
        tls: { ...tls, ca: read(otherCa.caFile) },
        attemptTimeoutMs: 500,
      });
      const refused = await rejects(wrongCa.range("/tls", { timeoutMs: 1000 }));
      assert.equal(refused.code, "GroupEtcdAuthFailed", refused.message);
      wrongCa.close();

      const noCert = new EtcdClient({
        endpoints: cluster.endpoints,
        tls: { ca: tls.ca },
        attemptTimeoutMs: 500,
      });
      const error = await rejects(noCert.range("/tls", { timeoutMs: 1000 }));
      assert.ok(["GroupEtcdAuthFailed", "GroupEtcdUnreachable"].includes(error.code));
      noCert.close();

      assert.throws(
        () =>
          checkEtcdTls({ ...tls, key: read(pki.serverKey) }, {
            keyFile: pki.serverKey,
            certFile: member.certFile,
          }),
        (e: VmsnapError) => e.code === "GroupTlsInvalid" && e.message.includes(pki.serverKey),
      );
      assert.throws(
        () => new EtcdClient({ endpoints: cluster.endpoints, tls: { ca: "not a certificate" } }),
        (e: VmsnapError) => e.code === "GroupTlsInvalid",
      );
      assert.ok(redact(`key: ${tls.key}`).includes("***"), "the key is a secret");
    });
  } finally {
    dir.cleanup();
  }
});

Deno.test("authentication: the right password works, a wrong one or none is refused by name, an expired token is renewed", async () => {
  await withEtcd({ extraArgs: ["--auth-token-ttl", "1"] }, async (cluster) => {
    etcdctl(cluster, ["user", "add", "root", "--interactive=false"], { input: "rootpw\n" });
    etcdctl(cluster, ["user", "grant-role", "root", "root"]);
    etcdctl(cluster, ["user", "add", "m1", "--interactive=false"], { input: "m1-secret-pw\n" });
    etcdctl(cluster, ["role", "add", "r1"]);
    etcdctl(cluster, ["role", "grant-permission", "r1", "readwrite", "/a/", "--prefix=true"]);
    etcdctl(cluster, ["user", "grant-role", "m1", "r1"]);
    etcdctl(cluster, ["auth", "enable"]);

    const etcd = new EtcdClient({
      endpoints: cluster.endpoints,
      username: "m1",
      password: "m1-secret-pw",
    });
    await etcd.put("/a/x", "1");
    assert.ok(etcd.authenticated);
    const denied = await rejects(etcd.put("/b/x", "1"));
    assert.equal(denied.code, "GroupEtcdPermissionDenied");
    await sleep(2500); // the simple token's TTL (1 s) passes: the next call authenticates again
    const before = etcd.requests;
    assert.equal((await etcd.range("/a/x")).kvs[0].value, "1");
    assert.equal(etcd.requests - before, 3, "refused, authenticate, again");

    const wrong = new EtcdClient({
      endpoints: cluster.endpoints,
      username: "m1",
      password: "nope-nope",
    });
    const refused = await rejects(wrong.range("/a/x"));
    assert.equal(refused.code, "GroupEtcdAuthFailed");
    assert.match(refused.message, /authentication failed/);
    const anonymous = await rejects(new EtcdClient({ endpoints: cluster.endpoints }).range("/a/x"));
    assert.equal(anonymous.code, "GroupEtcdAuthFailed");
    assert.equal(redact("pw m1-secret-pw"), "pw ***");
  });
});

Deno.test("check --connect's probe: an endpoint that does not answer, and etcd without authentication, are named", async () => {
  await withEtcd({}, async (cluster) => {
    const dead = `http://127.0.0.1:${await freePort()}`;
    const etcd = new EtcdClient({ endpoints: [...cluster.endpoints, dead], attemptTimeoutMs: 300 });
    const report = await checkGroupAccess(etcd, { group: "shop", timeoutMs: 1000 });
    assert.deepEqual(report.endpoints.map((e) => e.ok), [true, false]);
    assert.deepEqual([report.canRead, report.canWrite], [true, true]);
    assert.deepEqual(report.problems.map((p) => p.code), ["GroupEtcdUnreachable", "GroupEtcdOpen"]);
    assert.match(report.problems[1].message, /authentication is off/);
    assert.equal((await etcd.range("/vmsnap/", { prefix: true })).count, 0, "nothing written");
  });
});

Deno.test("joining a group through an etcd that never answers fails by its deadline, with the code", async () => {
  const { GroupMember } = await import("../../src/group/member.ts");
  const silent = await silentListener();
  try {
    const client = new EtcdClient({ endpoints: [silent.url] });
    const started = performance.now();
    const error = await rejects(
      GroupMember.join({ client, group: "g", member: "a", members: ["a", "b"] }, {
        timeoutMs: 800,
      }),
    );
    assert.equal(error.code, "GroupEtcdUnreachable");
    assert.match(error.message, /could not join a run within 800 ms/);
    assert.ok(performance.now() - started < 5000);
  } finally {
    await silent.close();
  }
});
