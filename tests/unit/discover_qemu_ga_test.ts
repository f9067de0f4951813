/**
 * qemu-ga discovery over every distribution fixture (copies of the packages'
 * real files, tests/fixtures/distros/README.md), and over those roots changed
 * the way admins change them (sysconfig, drop-ins, config file, conf.d).
 */
import assert from "node:assert/strict";
import { mkdirSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { discoverQemuGa, qemuGaProblems } from "../../src/hook/discover/qemu_ga.ts";
import { parseQemuGaArgs } from "../../src/hook/discover/qemu_ga_args.ts";
import { type Distro, distroRoot } from "../distro_roots.ts";

/** What each distribution's packages give, as discovery must find it. */
const EXPECTED: Record<Distro, {
  init: string;
  unit?: string;
  binary?: string;
  hook?: string;
  hookDir?: string;
  enable: string;
  enableFile?: string;
}> = {
  debian12: {
    init: "systemd",
    unit: "/lib/systemd/system/qemu-guest-agent.service",
    binary: "/usr/sbin/qemu-ga",
    hookDir: "/etc/qemu/fsfreeze-hook.d",
    enable: "systemd-dropin",
    enableFile: "/etc/systemd/system/qemu-guest-agent.service.d/vmsnap-fsfreeze-hook.conf",
  },
  rhel8: {
    init: "systemd",
    unit: "/usr/lib/systemd/system/qemu-guest-agent.service",
    binary: "/usr/bin/qemu-ga",
    hook: "/etc/qemu-ga/fsfreeze-hook",
    hookDir: "/etc/qemu-ga/fsfreeze-hook.d",
    enable: "already",
  },
  rhel9: {
    init: "systemd",
    unit: "/usr/lib/systemd/system/qemu-guest-agent.service",
    binary: "/usr/bin/qemu-ga",
    hook: "/etc/qemu-ga/fsfreeze-hook",
    hookDir: "/etc/qemu-ga/fsfreeze-hook.d",
    enable: "already",
  },
  fedora: {
    init: "systemd",
    unit: "/usr/lib/systemd/system/qemu-guest-agent.service",
    binary: "/usr/bin/qemu-ga",
    hook: "/etc/qemu-ga/fsfreeze-hook",
    hookDir: "/etc/qemu-ga/fsfreeze-hook.d",
    enable: "already",
  },
  suse: {
    init: "systemd",
    unit: "/usr/lib/systemd/system/qemu-guest-agent.service",
    binary: "/usr/bin/qemu-ga",
    enable: "systemd-dropin",
    enableFile: "/etc/systemd/system/qemu-guest-agent.service.d/vmsnap-fsfreeze-hook.conf",
  },
  al2023: { init: "systemd", enable: "unknown" },
  alpine: {
    init: "openrc",
    unit: "/etc/init.d/qemu-guest-agent",
    binary: "/usr/bin/qemu-ga",
    enable: "qemu-ga-conf",
    enableFile: "/etc/qemu/qemu-ga.conf",
  },
};

for (const [distro, want] of Object.entries(EXPECTED) as [Distro, typeof EXPECTED[Distro]][]) {
  Deno.test(`discoverQemuGa on ${distro}: init system, service, hook, hook dir, enablement`, () => {
    const { root, cleanup } = distroRoot(distro);
    try {
      const qga = discoverQemuGa({ root });
      assert.equal(qga.init.kind, want.init);
      assert.equal(qga.service.path, want.unit);
      assert.equal(qga.binary, want.binary);
      assert.equal(qga.hook.path, want.hook);
      assert.equal(qga.hookDir.path, want.hookDir);
      if (want.hookDir) assert.ok(qga.hookDir.exists, qga.hookDir.detail);
      assert.equal(qga.enable.method, want.enable, qga.enable.detail);
      assert.equal(qga.enable.file, want.enableFile);
      assert.deepEqual(qga.rpc.blockedFreeze, []);
      assert.ok(qga.looked.length > 0);
    } finally {
      cleanup();
    }
  });
}

/** Writes a file under a root (a path on the target system). */
function write(root: string, path: string, text: string, mode = 0o644): void {
  mkdirSync(dirname(join(root, path)), { recursive: true });
  writeFileSync(join(root, path), text, { mode });
}

Deno.test("RHEL 8 with FSFREEZE_HOOK_PATHNAME empty: qemu-ga's default /etc/qemu-kvm/fsfreeze-hook, whose $0 directory does not exist", () => {
  const { root, cleanup } = distroRoot("rhel8");
  try {
    write(root, "/etc/sysconfig/qemu-ga", "BLACKLIST_RPC=guest-exec\nFSFREEZE_HOOK_PATHNAME=\n");
    const qga = discoverQemuGa({ root });
    assert.equal(qga.confdir.path, "/etc/qemu-kvm");
    assert.equal(qga.hook.path, "/etc/qemu-kvm/fsfreeze-hook");
    assert.ok(
      qga.hook.exists && qga.hook.executable,
      "the package's link to /etc/qemu-ga/fsfreeze-hook",
    );
    // qemu 6.2's script takes dirname "$0" unresolved: it looks beside the link.
    assert.equal(qga.hookDir.path, "/etc/qemu-kvm/fsfreeze-hook.d");
    assert.equal(qga.hookDir.exists, false);
  } finally {
    cleanup();
  }
});

Deno.test("Fedora's realpath hook called through a link runs the real script's directory", () => {
  const { root, cleanup } = distroRoot("fedora");
  try {
    mkdirSync(join(root, "etc/qemu"), { recursive: true });
    symlinkSync("/etc/qemu-ga/fsfreeze-hook", join(root, "etc/qemu/fsfreeze-hook"));
    write(root, "/etc/sysconfig/qemu-ga", "FSFREEZE_HOOK_PATHNAME=/etc/qemu/fsfreeze-hook\n");
    const qga = discoverQemuGa({ root });
    assert.equal(qga.hook.path, "/etc/qemu/fsfreeze-hook");
    assert.equal(qga.hookDir.path, "/etc/qemu-ga/fsfreeze-hook.d");
  } finally {
    cleanup();
  }
});

Deno.test("RHEL 9 with FSFREEZE_HOOK_PATHNAME=/dev/null: switched off, enabled again through /etc/sysconfig/qemu-ga", () => {
  const { root, cleanup } = distroRoot("rhel9");
  try {
    write(
      root,
      "/etc/sysconfig/qemu-ga",
      "BLOCK_RPCS=guest-exec\nFSFREEZE_HOOK_PATHNAME=/dev/null\n",
    );
    const qga = discoverQemuGa({ root });
    assert.equal(qga.hook.path, "/dev/null");
    assert.ok(qga.hook.disabled);
    assert.equal(qga.enable.method, "sysconfig");
    assert.equal(qga.enable.file, "/etc/sysconfig/qemu-ga");
    assert.equal(qga.enable.variable, "FSFREEZE_HOOK_PATHNAME");
    // The default /etc/qemu-kvm/fsfreeze-hook is missing on RHEL 9: the package's script is found.
    assert.equal(qga.hookScript, "/etc/qemu-ga/fsfreeze-hook");
    assert.equal(qga.hookDir.path, "/etc/qemu-ga/fsfreeze-hook.d");
  } finally {
    cleanup();
  }
});

Deno.test("an admin's drop-in replaces ExecStart: its command line counts, and its allow list blocks the freeze", () => {
  const { root, cleanup } = distroRoot("rhel9");
  try {
    write(
      root,
      "/etc/systemd/system/qemu-guest-agent.service.d/override.conf",
      "[Service]\nExecStart=\nExecStart=/usr/bin/qemu-ga --method=virtio-serial --allow-rpcs=guest-ping,guest-info\n",
    );
    const qga = discoverQemuGa({ root });
    assert.deepEqual(qga.service.dropins, [
      "/etc/systemd/system/qemu-guest-agent.service.d/override.conf",
    ]);
    assert.equal(qga.hook.source, "none");
    assert.deepEqual(qga.rpc.blockedFreeze, ["guest-fsfreeze-freeze", "guest-fsfreeze-thaw"]);
    assert.match(qga.rpc.detail, /allow list/);
    assert.equal(qga.enable.method, "systemd-dropin");
  } finally {
    cleanup();
  }
});

Deno.test("a drop-in in /etc hides the same name in /usr/lib; a later name still applies", () => {
  const { root, cleanup } = distroRoot("rhel9");
  try {
    const lib = "/usr/lib/systemd/system/qemu-guest-agent.service.d";
    write(
      root,
      `${lib}/50-a.conf`,
      "[Service]\nExecStart=\nExecStart=/usr/bin/qemu-ga -F/lib-hook\n",
    );
    write(
      root,
      "/etc/systemd/system/qemu-guest-agent.service.d/50-a.conf",
      "[Service]\nUMask=0077\n",
    );
    write(root, `${lib}/60-b.conf`, "[Service]\nEnvironment=X=1\n");
    const qga = discoverQemuGa({ root });
    assert.deepEqual(qga.service.dropins, [
      "/etc/systemd/system/qemu-guest-agent.service.d/50-a.conf",
      `${lib}/60-b.conf`,
    ]);
    assert.equal(
      qga.hook.path,
      "/etc/qemu-ga/fsfreeze-hook",
      "the hidden drop-in's ExecStart is not used",
    );
  } finally {
    cleanup();
  }
});

Deno.test("a FILTER_RPC_ARGS allow list ($VAR, split into words) without guest-fsfreeze-thaw is reported", () => {
  const { root, cleanup } = distroRoot("rhel9");
  try {
    write(
      root,
      "/usr/lib/systemd/system/qemu-guest-agent.service",
      "[Service]\nEnvironmentFile=/etc/sysconfig/qemu-ga\nExecStart=/usr/bin/qemu-ga --method=virtio-serial $FILTER_RPC_ARGS -F${FSFREEZE_HOOK_PATHNAME}\n",
    );
    write(
      root,
      "/etc/sysconfig/qemu-ga",
      'FILTER_RPC_ARGS="--allow-rpcs=guest-ping,guest-fsfreeze-freeze"\nFSFREEZE_HOOK_PATHNAME=/etc/qemu-ga/fsfreeze-hook\n',
    );
    const qga = discoverQemuGa({ root });
    assert.deepEqual(qga.rpc.blockedFreeze, ["guest-fsfreeze-thaw"]);
    assert.equal(qga.hook.path, "/etc/qemu-ga/fsfreeze-hook");
  } finally {
    cleanup();
  }
});

Deno.test("Debian with fsfreeze-hook in /etc/qemu/qemu-ga.conf: the config file's hook, already enabled", () => {
  const { root, cleanup } = distroRoot("debian12");
  try {
    write(root, "/etc/qemu/qemu-ga.conf", "[general]\nfsfreeze-hook=/etc/qemu/fsfreeze-hook\n");
    const qga = discoverQemuGa({ root });
    assert.equal(qga.hook.source, "config-file");
    assert.equal(qga.hook.path, "/etc/qemu/fsfreeze-hook");
    assert.equal(qga.enable.method, "already");
  } finally {
    cleanup();
  }
});

Deno.test("the command line's -F wins over the config file's fsfreeze-hook (qemu-ga reads the file first)", () => {
  const { root, cleanup } = distroRoot("debian12");
  try {
    write(
      root,
      "/etc/qemu/qemu-ga.conf",
      "[general]\nfsfreeze-hook=/nowhere\nblock-rpcs=guest-fsfreeze-freeze\n",
    );
    write(
      root,
      "/etc/systemd/system/qemu-guest-agent.service.d/hook.conf",
      "[Service]\nExecStart=\nExecStart=-/usr/sbin/qemu-ga --fsfreeze-hook=/etc/qemu/fsfreeze-hook\n",
    );
    const qga = discoverQemuGa({ root });
    assert.equal(qga.hook.source, "command-line");
    assert.equal(qga.hook.path, "/etc/qemu/fsfreeze-hook");
    assert.deepEqual(qga.rpc.blockedFreeze, ["guest-fsfreeze-freeze"]);
  } finally {
    cleanup();
  }
});

Deno.test("Alpine: a conf.d variable the init script passes through is the way to enable the hook", () => {
  const { root, cleanup } = distroRoot("alpine");
  try {
    write(
      root,
      "/etc/init.d/qemu-guest-agent",
      '#!/sbin/openrc-run\ncommand=/usr/bin/qemu-ga\ncommand_args="-m ${GA_METHOD:-virtio-serial} -p ${GA_PATH:-/dev/vport0p1} -d ${GA_EXTRA}"\n',
      0o755,
    );
    write(root, "/etc/conf.d/qemu-guest-agent", 'GA_EXTRA="-F/etc/qemu/fsfreeze-hook"\n');
    const qga = discoverQemuGa({ root });
    assert.deepEqual(qga.argv, [
      "/usr/bin/qemu-ga",
      "-m",
      "virtio-serial",
      "-p",
      "/dev/vport0p1",
      "-d",
      "-F/etc/qemu/fsfreeze-hook",
    ]);
    assert.equal(qga.hook.path, "/etc/qemu/fsfreeze-hook");
    assert.equal(qga.hook.exists, false);
    assert.equal(qga.enable.method, "openrc-confd");
    assert.equal(qga.enable.variable, "GA_EXTRA");
  } finally {
    cleanup();
  }
});

Deno.test("no qemu-guest-agent at all: every path looked at is listed", () => {
  const { root, cleanup } = distroRoot("al2023");
  try {
    rmSync(join(root, "usr/lib/systemd/system/amazon-ssm-agent.service"));
    const qga = discoverQemuGa({ root });
    assert.equal(qga.service.kind, "none");
    assert.equal(qga.binary, undefined);
    for (
      const path of [
        "/usr/bin/qemu-ga",
        "/etc/systemd/system/qemu-guest-agent.service",
        "/etc/init.d/qemu-guest-agent",
      ]
    ) {
      assert.ok(qga.looked.includes(path), path);
    }
  } finally {
    cleanup();
  }
});

Deno.test("parseQemuGaArgs: -F takes only an attached path; short and long options with values", () => {
  assert.deepEqual(parseQemuGaArgs(["qemu-ga", "-F", "/x"]), { hook: null, blocked: [] });
  assert.deepEqual(parseQemuGaArgs(["qemu-ga", "--fsfreeze-hook"]), { hook: null, blocked: [] });
  assert.deepEqual(
    parseQemuGaArgs([
      "qemu-ga",
      "-c",
      "/c.conf",
      "-bguest-exec",
      "--blacklist",
      "a,b",
      "-a",
      "guest-ping",
    ]),
    { config: "/c.conf", blocked: ["guest-exec", "a", "b"], allowed: ["guest-ping"] },
  );
});

Deno.test("qemuGaProblems: none on the RPM layouts and Debian; SUSE and Alpine name the hook scripts looked at and --hook-dir", () => {
  for (const distro of ["debian12", "rhel8", "rhel9", "fedora"] as const) {
    const { root, cleanup } = distroRoot(distro);
    try {
      assert.deepEqual(qemuGaProblems(discoverQemuGa({ root })), [], distro);
    } finally {
      cleanup();
    }
  }
  for (const distro of ["suse", "alpine"] as const) {
    const { root, cleanup } = distroRoot(distro);
    try {
      const [problem, ...rest] = qemuGaProblems(discoverQemuGa({ root }));
      assert.deepEqual(rest, []);
      assert.match(problem, /--hook-dir/);
      assert.match(problem, /\/etc\/qemu\/fsfreeze-hook, \/etc\/qemu-ga\/fsfreeze-hook/);
    } finally {
      cleanup();
    }
  }
  const { root, cleanup } = distroRoot("al2023");
  try {
    const problems = qemuGaProblems(discoverQemuGa({ root }));
    assert.match(problems[0], /no qemu-guest-agent service.*--agent-config/);
  } finally {
    cleanup();
  }
});
