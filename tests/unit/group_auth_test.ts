/**
 * Least privilege for a group, against a real etcd with mutual TLS and
 * authentication on: the commands `etcdSetupCommands` prints, run as they
 * are, give each member a user whose role reaches its own group's prefix
 * and nothing else; members under both runtimes (one compiled by Bun as the
 * vmsnap binary is, one under Deno) take part in a run with those users;
 * the same credentials cannot read, write, watch or join another group, or
 * revoke a lease holding another group's keys.
 */
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import process from "node:process";
import { EtcdClient, type EtcdError } from "../../src/group/etcd.ts";
import { EtcdWatch } from "../../src/group/etcd_watch.ts";
import { checkGroupAccess } from "../../src/group/check.ts";
import { etcdSetupCommands, memberUser } from "../../src/group/etcd_setup.ts";
import { GroupMember } from "../../src/group/member.ts";
import { groupStatus } from "../../src/group/status.ts";
import { etcdctl, makePki, type Pki, startEtcd } from "../etcd.ts";
import { compileDriver, type MemberProcess, startMember, stopMembers } from "../group_members.ts";
import { secureDir } from "../helpers.ts";

/** Runs the printed setup lines with bash as etcd's root user; the password files land in `dir`. */
function runSetup(lines: string[], endpoints: string[], pki: Pki, dir: string): void {
  const root = pki.client("root");
  execFileSync("bash", ["-c", lines.join("\n")], {
    cwd: dir,
    env: {
      PATH: process.env.PATH ?? "/usr/bin:/bin",
      ETCDCTL_API: "3",
      ETCDCTL_ENDPOINTS: endpoints.join(","),
      ETCDCTL_CACERT: pki.caFile,
      ETCDCTL_CERT: root.certFile,
      ETCDCTL_KEY: root.keyFile,
      ETCDCTL_USER: "root:root-pw-123",
    },
    stdio: "pipe",
  });
}

async function denied(promise: Promise<unknown>): Promise<void> {
  await assert.rejects(promise, (e: EtcdError) => e.code === "GroupEtcdPermissionDenied");
}

Deno.test("a member's etcd user, made by the printed commands, reaches its own group's prefix only", async () => {
  const dir = secureDir("group-auth-");
  const pki = makePki(join(dir.dir, "pki"));
  const cluster = await startEtcd({ tls: pki });
  const procs: MemberProcess[] = [];
  try {
    etcdctl(cluster, ["user", "add", "root", "--interactive=false"], { input: "root-pw-123\n" });
    etcdctl(cluster, ["user", "grant-role", "root", "root"]);
    etcdctl(cluster, ["auth", "enable"]);
    runSetup(
      etcdSetupCommands({ group: "shop", members: ["a", "b"] }),
      cluster.endpoints,
      pki,
      dir.dir,
    );
    runSetup(
      etcdSetupCommands({ group: "shop2", members: ["x"] }),
      cluster.endpoints,
      pki,
      dir.dir,
    );
    const passwordFile = (group: string, m: string) =>
      join(dir.dir, `${memberUser(group, m)}.password`);

    // A run with those users, one member compiled by Bun and one under Deno.
    const bun = compileDriver(dir.dir);
    for (const m of ["a", "b"]) {
      const cert = pki.client(m, { cn: false });
      procs.push(startMember({
        endpoints: cluster.endpoints,
        tls: { caFile: pki.caFile, certFile: cert.certFile, keyFile: cert.keyFile },
        username: memberUser("shop", m),
        passwordFile: passwordFile("shop", m),
        group: "shop",
        member: m,
        members: ["a", "b"],
        outcomeWaitMs: 6000,
      }, m === "a" ? { driver: bun } : {}));
    }
    const outcomes = await Promise.all(
      procs.map((p) => p.waitFor((e) => e.ev === "outcome", 30_000)),
    );
    for (const o of outcomes) assert.equal(o.outcome.consistency, "application", JSON.stringify(o));
    assert.deepEqual(await Promise.all(procs.map((p) => p.exited)), [0, 0]);

    const read = (f: string) => readFileSync(f, "utf8");
    const client = (group: string, m: string) => {
      const cert = pki.client(m, { cn: false });
      return new EtcdClient({
        endpoints: cluster.endpoints,
        tls: { ca: read(pki.caFile), cert: read(cert.certFile), key: read(cert.keyFile) },
        username: memberUser(group, m),
        password: read(passwordFile(group, m)).trim(),
      });
    };
    const a = client("shop", "a");
    const x = client("shop2", "x");
    try {
      // A certificate with a CommonName is refused by the gateway while authentication is on: named.
      const withCn = pki.client("a");
      const refused = new EtcdClient({
        endpoints: cluster.endpoints,
        tls: { ca: read(pki.caFile), cert: read(withCn.certFile), key: read(withCn.keyFile) },
        username: memberUser("shop", "a"),
        password: read(passwordFile("shop", "a")).trim(),
      });
      await assert.rejects(
        refused.range("/vmsnap/groups/shop/current"),
        (e: EtcdError) => e.code === "GroupEtcdAuthFailed" && /without a CN/.test(e.message),
      );
      refused.close();
      assert.equal((await groupStatus(a, "shop")).runs[0].consistency, "application");
      // check --connect: a member's own user is enough and no more; another group's is refused.
      // An etcd that does not check permissions inside nested transactions (GHSA-rfx7-8w68-q57q:
      // Debian's 3.4.23 here) lets it write anywhere that way: the check must say so exactly then.
      const nestedOutside = await a.txn({
        compare: [],
        success: [{
          txn: { compare: [], success: [{ put: { key: "/nested-outside", value: "" } }] },
        }],
      }).then(() => true, () => false);
      const own = await checkGroupAccess(a, { group: "shop" });
      assert.deepEqual([own.authenticated, own.canRead, own.canWrite], [true, true, true]);
      assert.deepEqual(
        own.problems.map((p) => p.code),
        nestedOutside ? ["GroupEtcdOpen"] : [],
        JSON.stringify(own.problems),
      );
      if (nestedOutside) {
        assert.match(own.problems[0].message, /nested transactions \(GHSA-rfx7-8w68-q57q\)/);
      }
      assert.ok(own.endpoints[0].ok && own.endpoints[0].leader && own.endpoints[0].version);
      const foreign = await checkGroupAccess(x, { group: "shop" });
      assert.deepEqual([foreign.authenticated, foreign.canRead, foreign.canWrite], [
        true,
        false,
        false,
      ]);
      assert.deepEqual(foreign.problems.map((p) => p.code), [
        "GroupEtcdPermissionDenied",
        "GroupEtcdPermissionDenied",
      ]);
      const root = pki.client("root2", { cn: false });
      const wide = new EtcdClient({
        endpoints: cluster.endpoints,
        tls: { ca: read(pki.caFile), cert: read(root.certFile), key: read(root.keyFile) },
        username: "root",
        password: "root-pw-123",
      });
      const broad = await checkGroupAccess(wide, { group: "shop" });
      assert.deepEqual(broad.problems.map((p) => [p.code, p.path]), [[
        "GroupEtcdOpen",
        "group.etcd.username",
      ]]);
      wide.close();
      assert.equal(
        (await a.range("/vmsnap/groups/shop/check")).count,
        0,
        "the probes wrote nothing",
      );
      await a.put("/vmsnap/groups/shop/scratch", "mine");
      for (
        const key of [
          "/vmsnap/groups/shop2/k",
          "/vmsnap/groups/shopx/k",
          "/vmsnap/groups/shop",
          "/other",
        ]
      ) {
        await denied(a.put(key, "theirs"));
        await denied(a.range(key));
      }
      await denied(a.range("/vmsnap/groups/", { prefix: true }));
      await denied(groupStatus(a, "shop2"));
      await denied(GroupMember.join({ client: a, group: "shop2", member: "a", members: ["a"] }));
      const watch = new EtcdWatch(a, {
        key: "/vmsnap/groups/shop2/",
        prefix: true,
        startRevision: 1,
        onEvents: () => assert.fail("no event of another group"),
      });
      await assert.rejects(watch.done, (e: EtcdError) => e.code === "GroupEtcdPermissionDenied");
      // A lease that holds another group's key cannot be revoked with these credentials.
      const lease = await x.leaseGrant(60);
      await x.put("/vmsnap/groups/shop2/held", "x", { lease: lease.id });
      await denied(a.leaseRevoke(lease.id));
      assert.equal((await x.range("/vmsnap/groups/shop2/held")).kvs.length, 1);
    } finally {
      a.close();
      x.close();
    }
  } finally {
    await stopMembers(procs);
    await cluster.stop();
    dir.cleanup();
  }
});
