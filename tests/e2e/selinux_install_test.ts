/**
 * SELinux on the running system, through the binary: `install` and
 * `uninstall --for qemu-ga` issue exactly the vendor's commands (recorded by
 * the stand-ins of tests/fixtures/selinux/bin, since no SELinux kernel runs
 * here), and `check` reports the hook's label, the boolean and the audit
 * log's denials of vmsnap, each with its fix.
 *
 * The running system is a private view (tests/private_system.ts): /etc a
 * copy-on-write overlay holding the RHEL 9 layout of qemu-ga and an
 * enforcing targeted policy's file contexts, a tmpfs on /sys/fs with
 * `selinux/enforce` = 1 (what selinuxfs shows on an enforcing kernel), and
 * the stand-ins laid over /usr/sbin, where the tools live.
 */
import assert from "node:assert/strict";
import { existsSync, mkdirSync, readFileSync, rmSync } from "node:fs";
import { join } from "node:path";
import { BIN, ROOT, secureDir } from "../helpers.ts";
import { type PrivateSystem, privateSystem } from "../private_system.ts";

const STUBS = join(ROOT, "tests/fixtures/selinux/bin");
const RHEL9 = join(ROOT, "tests/fixtures/distros/rhel9/root");
const CONFIG = "/etc/vmsnap/vmsnap.json";
const CONTEXTS = "/etc/selinux/targeted/contexts/files";

/** Makes the private view an enforcing RHEL 9 as far as qemu-ga and SELinux go. */
async function enforcingRhel9(system: PrivateSystem): Promise<void> {
  const copy = (path: string, to = path, mode = 0o644) =>
    system.put(to, readFileSync(join(RHEL9, path), "utf8"), mode);
  copy(
    "usr/lib/systemd/system/qemu-guest-agent.service",
    "/etc/systemd/system/qemu-guest-agent.service",
  );
  copy("etc/sysconfig/qemu-ga", "/etc/sysconfig/qemu-ga");
  copy("etc/qemu-ga/fsfreeze-hook", "/etc/qemu-ga/fsfreeze-hook", 0o755);
  mkdirSync(system.path("/etc/qemu-ga/fsfreeze-hook.d"), { mode: 0o755 });
  copy("etc/selinux/config", "/etc/selinux/config");
  copy(`etc/selinux/targeted/contexts/files/file_contexts`, `${CONTEXTS}/file_contexts`);
  const mounted = await system.run([
    "/bin/sh",
    "-c",
    [
      "set -e",
      "mount -t tmpfs -o mode=0755 vmsnap-selinuxfs /sys/fs",
      "mkdir /sys/fs/selinux",
      "echo 1 > /sys/fs/selinux/enforce",
      `mount -t overlay vmsnap-sbin -o lowerdir=${STUBS}:/usr/sbin /usr/sbin`,
    ].join("\n"),
  ]);
  assert.equal(mounted.code, 0, mounted.stderr);
}

Deno.test({
  name:
    "SELinux enforcing: install labels the qemu-ga hook the vendor's way, the boolean only when asked; uninstall undoes exactly that; check reports",
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async (t) => {
    const { dir, cleanup } = secureDir("selinux-");
    const system = await privateSystem({ scratch: `${dir}/scratch` });
    const stub = join(dir, "stub");
    mkdirSync(stub, { mode: 0o700 });
    const env = { SELINUX_STUB: stub, SELINUX_STUB_ROOT: "/" };
    const vmsnap = (...args: string[]) => system.run([BIN, ...args], { env });
    const calls = () => {
      const file = join(stub, "calls");
      const text = existsSync(file) ? readFileSync(file, "utf8") : "";
      rmSync(file, { force: true });
      return text.trim().split("\n").filter((l) => l);
    };
    try {
      await enforcingRhel9(system);
      system.put(
        CONFIG,
        JSON.stringify({ fsFreezeEnabled: false, stateDir: `${dir}/state` }),
        0o600,
      );
      const hook = "/etc/qemu-ga/fsfreeze-hook.d/vmsnap";

      await t.step(
        "the policy labels the hook directory: restorecon, the boolean said",
        async () => {
          const ran = await vmsnap("install", "--for", "qemu-ga", "--config", CONFIG);
          assert.equal(ran.code, 0, ran.stdout + ran.stderr);
          assert.deepEqual(calls(), [
            "getsebool virt_qemu_ga_run_unconfined",
            `restorecon -v ${hook} ${BIN}`,
          ]);
          assert.match(ran.stdout, new RegExp(`run +restorecon -v ${hook} `));
          assert.match(
            ran.stdout,
            /SELinux: qemu-ga enters virt_qemu_ga_unconfined_exec_t files unconfined only with the boolean virt_qemu_ga_run_unconfined on.*Run: setsebool -P virt_qemu_ga_run_unconfined on/,
          );
          const checked = await vmsnap("check", "--json", "--config", CONFIG);
          assert.equal(checked.code, 1, checked.stdout);
          const report = JSON.parse(checked.stdout);
          const confined = report.problems.filter((p: { code: string }) =>
            p.code === "SelinuxConfined"
          );
          assert.equal(confined.length, 1, JSON.stringify(report.problems));
          assert.match(confined[0].message, /the boolean virt_qemu_ga_run_unconfined is off/);
          assert.match(confined[0].message, /setsebool -P virt_qemu_ga_run_unconfined on/);
          calls();
        },
      );

      await t.step(
        "--selinux-boolean turns it on once; a second install runs nothing",
        async () => {
          const ran = await vmsnap(
            "install",
            "--for",
            "qemu-ga",
            "--config",
            CONFIG,
            "--selinux-boolean",
          );
          assert.equal(ran.code, 0, ran.stdout + ran.stderr);
          assert.deepEqual(calls(), [
            "getsebool virt_qemu_ga_run_unconfined",
            "setsebool -P virt_qemu_ga_run_unconfined on",
          ]);
          const again = await vmsnap(
            "install",
            "--for",
            "qemu-ga",
            "--config",
            CONFIG,
            "--selinux-boolean",
          );
          assert.equal(again.code, 0, again.stderr);
          assert.deepEqual(calls(), ["getsebool virt_qemu_ga_run_unconfined"], "only looked");
          assert.doesNotMatch(again.stdout, /^ +run /m);
          const checked = await vmsnap("check", "--config", CONFIG);
          assert.equal(checked.code, 0, checked.stdout);
          assert.match(checked.stdout, /ok +SELinux: enforcing, policy targeted/);
          calls();
        },
      );

      await t.step(
        "check: vmsnap's denials in the audit log, with the fix for qemu-ga's domain",
        async () => {
          const now = Math.floor(Date.now() / 1000);
          system.put(
            "/var/log/audit/audit.log",
            [
              `type=AVC msg=audit(${
                now - 60
              }.100:71): avc:  denied  { connectto } for  pid=4242 comm="vmsnap" path="/var/lib/mysql/mysql.sock" scontext=system_u:system_r:virt_qemu_ga_t:s0 tcontext=system_u:system_r:mysqld_t:s0 tclass=unix_stream_socket permissive=0`,
              `type=AVC msg=audit(${
                now - 30
              }.200:72): avc:  denied  { connectto } for  pid=4250 comm="vmsnap" path="/var/lib/mysql/mysql.sock" scontext=system_u:system_r:virt_qemu_ga_t:s0 tcontext=system_u:system_r:mysqld_t:s0 tclass=unix_stream_socket permissive=0`,
              `type=AVC msg=audit(${
                now - 20
              }.300:73): avc:  denied  { read } for  pid=99 comm="httpd" name="x" scontext=system_u:system_r:httpd_t:s0 tcontext=system_u:object_r:etc_t:s0 tclass=file permissive=0`,
              `type=AVC msg=audit(${
                now - 30 * 86400
              }.1:5): avc:  denied  { write } for  pid=1 comm="vmsnap" name="old" scontext=system_u:system_r:virt_qemu_ga_t:s0 tcontext=system_u:object_r:etc_t:s0 tclass=file permissive=0`,
              "",
            ].join("\n"),
            0o600,
          );
          const checked = await vmsnap("check", "--json", "--config", CONFIG);
          assert.equal(checked.code, 1, checked.stdout);
          const denied = JSON.parse(checked.stdout).problems.filter((p: { code: string }) =>
            p.code === "SelinuxDenied"
          );
          assert.equal(
            denied.length,
            1,
            "two alike denials, one problem; httpd's and a month-old one not",
          );
          assert.match(
            denied[0].message,
            /denied vmsnap \{ connectto \} on \/var\/lib\/mysql\/mysql\.sock \(unix_stream_socket, mysqld_t\) running as virt_qemu_ga_t, 2 times/,
          );
          assert.match(
            denied[0].message,
            /Fix: vmsnap ran confined as virt_qemu_ga_t: .*setsebool -P virt_qemu_ga_run_unconfined on/,
          );
          await system.run(["rm", "/var/log/audit/audit.log"]);
          calls();
        },
      );

      await t.step("uninstall turns off only what install turned on", async () => {
        const ran = await vmsnap("uninstall", "--for", "qemu-ga");
        assert.equal(ran.code, 0, ran.stdout + ran.stderr);
        assert.deepEqual(calls(), ["setsebool -P virt_qemu_ga_run_unconfined off"]);
        assert.ok(!existsSync(system.path(hook)));
      });

      await t.step(
        "a hook outside the policy's paths gets a local rule, removed by uninstall",
        async () => {
          // The admin names another directory the hook script runs.
          const ran = await vmsnap(
            "install",
            "--for",
            "qemu-ga",
            "--config",
            CONFIG,
            "--hook-dir",
            "/etc/site-hooks.d",
          );
          assert.equal(ran.code, 0, ran.stdout + ran.stderr);
          const local = system.path(`${CONTEXTS}/file_contexts.local`);
          assert.deepEqual(calls(), [
            "getsebool virt_qemu_ga_run_unconfined",
            "semanage fcontext -a -t virt_qemu_ga_unconfined_exec_t /etc/site-hooks\\.d/vmsnap",
            `restorecon -v /etc/site-hooks.d/vmsnap ${BIN}`,
          ]);
          assert.match(
            readFileSync(local, "utf8"),
            /^\/etc\/site-hooks\\\.d\/vmsnap\tsystem_u:object_r:virt_qemu_ga_unconfined_exec_t:s0$/m,
          );
          assert.match(
            ran.stdout,
            /run +semanage fcontext -a -t virt_qemu_ga_unconfined_exec_t '\/etc\/site-hooks\\\.d\/vmsnap'/,
          );
          const again = await vmsnap(
            "install",
            "--for",
            "qemu-ga",
            "--config",
            CONFIG,
            "--hook-dir",
            "/etc/site-hooks.d",
          );
          assert.equal(again.code, 0, again.stderr);
          assert.deepEqual(
            calls(),
            ["getsebool virt_qemu_ga_run_unconfined"],
            "the rule is there: nothing to run",
          );
          const removed = await vmsnap("uninstall", "--for", "qemu-ga");
          assert.equal(removed.code, 0, removed.stderr);
          assert.deepEqual(calls(), ["semanage fcontext -d /etc/site-hooks\\.d/vmsnap"]);
          assert.equal(readFileSync(local, "utf8"), "", "the rule is gone");
        },
      );
    } finally {
      await system.stop();
      cleanup();
    }
  },
});
