/**
 * SELinux: mode, policy and tools read under the distribution fixtures; the
 * vendor's labelling planned from the policy's file contexts; the commands
 * run through stand-ins of semanage/restorecon/getsebool/setsebool that
 * record their calls (no SELinux kernel runs here), and undone exactly; AVC
 * denials read from an audit log.
 */
import assert from "node:assert/strict";
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import {
  detectSelinux,
  fileContextFor,
  parseGetsebool,
  planSelinux,
  QGA_UNCONFINED_TYPE,
  readAvcDenials,
  runSelinuxCommands,
} from "../../src/sys/selinux.ts";
import { ROOT, secureDir } from "../helpers.ts";
import { distroRoot } from "../distro_roots.ts";

const STUBS = join(ROOT, "tests", "fixtures", "selinux", "bin");

function write(root: string, path: string, text: string): void {
  mkdirSync(dirname(join(root, path)), { recursive: true });
  writeFileSync(join(root, path), text);
}

Deno.test("detectSelinux on the fixtures: RHEL enforcing/targeted, AL2023 permissive, Debian and SUSE without SELinux", () => {
  const cases = [
    ["rhel9", "enforcing", ["getsebool", "restorecon", "semanage", "setsebool"]],
    ["rhel8", "enforcing", ["getsebool", "restorecon", "setsebool"]],
    ["fedora", "enforcing", ["getsebool", "restorecon", "semanage", "setsebool"]],
    ["al2023", "permissive", ["getsebool", "restorecon", "setsebool"]],
    ["debian12", "absent", []],
    ["suse", "absent", []],
  ] as const;
  for (const [distro, mode, tools] of cases) {
    const { root, cleanup } = distroRoot(distro);
    try {
      const se = detectSelinux({ root });
      assert.equal(se.mode, mode, distro);
      assert.deepEqual(Object.keys(se.tools).sort(), [...tools], distro);
      if (mode !== "absent") assert.equal(se.policyType, "targeted");
    } finally {
      cleanup();
    }
  }
});

Deno.test("detectSelinux: selinuxfs decides on the running system; without it SELinux is off now", () => {
  const { root, cleanup } = distroRoot("rhel9");
  try {
    assert.equal(detectSelinux({ root, live: true }).mode, "disabled");
    write(root, "/sys/fs/selinux/enforce", "0");
    const se = detectSelinux({ root, live: true });
    assert.equal(se.mode, "permissive");
    assert.equal(se.configMode, "enforcing");
    assert.match(se.modeSource, /enforce is 0/);
  } finally {
    cleanup();
  }
});

Deno.test("planSelinux on RHEL 9: the policy already labels /etc/qemu-ga/fsfreeze-hook.d, so restorecon alone; the boolean only when asked", () => {
  const { root, cleanup } = distroRoot("rhel9");
  try {
    const state = detectSelinux({ root });
    const hook = "/etc/qemu-ga/fsfreeze-hook.d/vmsnap";
    assert.equal(
      fileContextFor({ root, policyType: "targeted", path: hook })?.type,
      QGA_UNCONFINED_TYPE,
    );
    const plan = planSelinux({ state, root, hook, binary: "/usr/bin/vmsnap", setBoolean: false });
    assert.ok(plan.applies);
    assert.deepEqual(plan.commands, [["restorecon", "-v", hook], [
      "restorecon",
      "-v",
      "/usr/bin/vmsnap",
    ]]);
    assert.deepEqual(plan.undo, []);
    assert.deepEqual(plan.missing, []);
    assert.ok(plan.notes.some((n) => n.includes("setsebool -P virt_qemu_ga_run_unconfined on")));
    const withBoolean = planSelinux({
      state,
      root,
      hook,
      binary: "/usr/bin/vmsnap",
      setBoolean: true,
    });
    assert.deepEqual(withBoolean.commands.at(-1), [
      "setsebool",
      "-P",
      "virt_qemu_ga_run_unconfined",
      "on",
    ]);
    assert.deepEqual(withBoolean.undo, [["setsebool", "-P", "virt_qemu_ga_run_unconfined", "off"]]);
  } finally {
    cleanup();
  }
});

Deno.test("planSelinux on RHEL 8 for a hook outside the policy's paths: semanage needed and missing, with its package", () => {
  const { root, cleanup } = distroRoot("rhel8");
  try {
    const plan = planSelinux({
      state: detectSelinux({ root }),
      root,
      hook: "/etc/qemu/fsfreeze-hook.d/vmsnap",
      binary: "/usr/local/bin/vmsnap",
      setBoolean: false,
    });
    assert.deepEqual(plan.commands[0], [
      "semanage",
      "fcontext",
      "-a",
      "-t",
      QGA_UNCONFINED_TYPE,
      "/etc/qemu/fsfreeze-hook\\.d/vmsnap",
    ]);
    assert.deepEqual(plan.missing, [{ tool: "semanage", package: "policycoreutils-python-utils" }]);
  } finally {
    cleanup();
  }
});

Deno.test("the labelling commands run through the stand-ins: the rule lands in file_contexts.local, and the undo removes exactly it", () => {
  const { root, cleanup } = distroRoot("fedora");
  const stub = secureDir("selinux-stub-");
  try {
    const env = { SELINUX_STUB: stub.dir, SELINUX_STUB_ROOT: root };
    const hook = "/etc/qemu/fsfreeze-hook.d/vmsnap";
    const state = detectSelinux({ root });
    const plan = planSelinux({ state, root, hook, binary: "/usr/bin/vmsnap", setBoolean: true });
    const ran = runSelinuxCommands(plan.commands, { toolDir: STUBS, env });
    assert.deepEqual(ran.map((r) => r.status), [0, 0, 0, 0]);
    assert.equal(
      fileContextFor({ root, policyType: "targeted", path: hook })?.type,
      QGA_UNCONFINED_TYPE,
    );
    const got = runSelinuxCommands([["getsebool", "virt_qemu_ga_run_unconfined"]], {
      toolDir: STUBS,
      env,
    });
    assert.equal(parseGetsebool(got[0].stdout), true);
    // A second install plans restorecon alone: the local rule is found.
    const again = planSelinux({ state, root, hook, binary: "/usr/bin/vmsnap", setBoolean: false });
    assert.deepEqual(again.commands[0], ["restorecon", "-v", hook]);
    const undone = runSelinuxCommands(plan.undo, { toolDir: STUBS, env });
    assert.deepEqual(undone.map((r) => r.status), [0, 0, 0]);
    assert.equal(fileContextFor({ root, policyType: "targeted", path: hook }), undefined);
    assert.deepEqual(readFileSync(join(stub.dir, "calls"), "utf8").trim().split("\n"), [
      `semanage fcontext -a -t ${QGA_UNCONFINED_TYPE} /etc/qemu/fsfreeze-hook\\.d/vmsnap`,
      `restorecon -v ${hook}`,
      "restorecon -v /usr/bin/vmsnap",
      "setsebool -P virt_qemu_ga_run_unconfined on",
      "getsebool virt_qemu_ga_run_unconfined",
      "semanage fcontext -d /etc/qemu/fsfreeze-hook\\.d/vmsnap",
      `restorecon -v ${hook}`,
      "setsebool -P virt_qemu_ga_run_unconfined off",
    ]);
  } finally {
    stub.cleanup();
    cleanup();
  }
});

Deno.test("runSelinuxCommands stops at the first failure and keeps its message", () => {
  const { root, cleanup } = distroRoot("fedora");
  const stub = secureDir("selinux-stub-");
  try {
    const env = { SELINUX_STUB: stub.dir, SELINUX_STUB_ROOT: root };
    const ran = runSelinuxCommands(
      [["semanage", "fcontext", "-d", "/nowhere"], ["restorecon", "-v", "/nowhere"]],
      { toolDir: STUBS, env },
    );
    assert.equal(ran.length, 1);
    assert.equal(ran[0].status, 1);
    assert.match(ran[0].stderr, /not defined/);
  } finally {
    stub.cleanup();
    cleanup();
  }
});

Deno.test("planSelinux where SELinux is absent: nothing to run", () => {
  const { root, cleanup } = distroRoot("debian12");
  try {
    const plan = planSelinux({
      state: detectSelinux({ root }),
      root,
      hook: "/etc/qemu/fsfreeze-hook.d/vmsnap",
      binary: "/usr/bin/vmsnap",
      setBoolean: true,
    });
    assert.equal(plan.applies, false);
    assert.deepEqual(plan.commands, []);
  } finally {
    cleanup();
  }
});

Deno.test("readAvcDenials: vmsnap's denials from the audit log, with the fix for the confined qemu-ga domain", () => {
  const { root, cleanup } = distroRoot("rhel9");
  try {
    // Records in the kernel's AVC format (as auditd writes them).
    write(
      root,
      "/var/log/audit/audit.log",
      [
        'type=AVC msg=audit(1733630000.120:812): avc:  denied  { connectto } for  pid=4242 comm="vmsnap" path="/var/lib/mysql/mysql.sock" scontext=system_u:system_r:virt_qemu_ga_t:s0 tcontext=system_u:system_r:mysqld_t:s0 tclass=unix_stream_socket permissive=0',
        'type=SYSCALL msg=audit(1733630000.120:812): arch=c000003e syscall=42 success=no exit=-13 comm="vmsnap" exe="/usr/bin/vmsnap"',
        'type=AVC msg=audit(1733630001.000:813): avc:  denied  { read } for  pid=77 comm="sshd" name="x" scontext=system_u:system_r:sshd_t:s0 tcontext=system_u:object_r:etc_t:s0 tclass=file permissive=0',
        'type=AVC msg=audit(1733630002.500:814): avc:  denied  { write } for  pid=4243 comm="vmsnap" name="vmsnap" scontext=system_u:system_r:unconfined_service_t:s0 tcontext=system_u:object_r:var_lib_t:s0 tclass=dir permissive=1',
      ].join("\n") + "\n",
    );
    const { found, denials } = readAvcDenials({ root, comm: "vmsnap" });
    assert.ok(found);
    assert.equal(denials.length, 2);
    assert.deepEqual(denials[0].permissions, ["connectto"]);
    assert.equal(denials[0].target, "/var/lib/mysql/mysql.sock");
    assert.equal(denials[0].tclass, "unix_stream_socket");
    assert.match(denials[0].fix, /setsebool -P virt_qemu_ga_run_unconfined on/);
    assert.equal(denials[1].permissive, true);
    assert.match(denials[1].fix, /unconfined_service_t/);
    assert.equal(readAvcDenials({ root, comm: "vmsnap", log: "/nowhere" }).found, false);
  } finally {
    cleanup();
  }
});
