/**
 * VMware Tools, Google guest agent and AWS SSM agent discovery over the
 * distribution fixtures, and over copies changed as admins change them.
 */
import assert from "node:assert/strict";
import { chmodSync, mkdirSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { discoverAws } from "../../src/hook/discover/aws.ts";
import { discoverGcp } from "../../src/hook/discover/gcp.ts";
import { discoverVmware } from "../../src/hook/discover/vmware.ts";
import { distroRoot, DISTROS } from "../distro_roots.ts";

function write(root: string, path: string, text: string, mode = 0o644): void {
  mkdirSync(dirname(join(root, path)), { recursive: true });
  writeFileSync(join(root, path), text);
  chmodSync(join(root, path), mode);
}

/** Where each fixture's packages put each agent's unit (undefined: not packaged there). */
const UNITS: Record<string, { vmware?: string; gcp?: string; aws?: string }> = {
  debian12: { vmware: "/lib/systemd/system/open-vm-tools.service" },
  rhel8: {
    vmware: "/usr/lib/systemd/system/vmtoolsd.service",
    gcp: "/usr/lib/systemd/system/google-guest-agent.service",
  },
  rhel9: {
    vmware: "/usr/lib/systemd/system/vmtoolsd.service",
    gcp: "/usr/lib/systemd/system/google-guest-agent.service",
  },
  fedora: {},
  suse: { aws: "/usr/lib/systemd/system/amazon-ssm-agent.service" },
  al2023: { aws: "/usr/lib/systemd/system/amazon-ssm-agent.service" },
  alpine: {},
};

for (const distro of DISTROS) {
  Deno.test(`agent discovery on ${distro}: VMware, Google and AWS units where the packages put them`, () => {
    const { root, cleanup } = distroRoot(distro);
    try {
      const vm = discoverVmware({ root });
      const gcp = discoverGcp({ root });
      const aws = discoverAws({ root });
      assert.equal(vm.service.path, UNITS[distro].vmware);
      assert.equal(gcp.service.path, UNITS[distro].gcp);
      assert.equal(aws.service.path, UNITS[distro].aws);
      assert.equal(aws.present, UNITS[distro].aws !== undefined);
      if (UNITS[distro].vmware) {
        assert.equal(vm.binary, "/usr/bin/vmtoolsd");
        assert.equal(vm.execScripts, true, "scripts run unless tools.conf says otherwise");
        assert.equal(vm.legacy.freeze.exists, false);
      }
      if (UNITS[distro].gcp) {
        assert.ok(gcp.config.found && gcp.config.template);
        assert.equal(gcp.enabled, false, "the package's instance_configs.cfg has no [Snapshots]");
      }
      assert.ok(vm.looked.includes("/usr/sbin/pre-freeze-script"));
      assert.ok(gcp.looked.includes("/etc/default/instance_configs.cfg"));
    } finally {
      cleanup();
    }
  });
}

Deno.test("VMware: tools.conf [vmbackup] execScripts = false and the admin's legacy scripts are found", () => {
  const { root, cleanup } = distroRoot("rhel9");
  try {
    write(
      root,
      "/etc/vmware-tools/tools.conf",
      "[logging]\nlog = true\n\n[vmbackup]\nexecScripts = False\ntimeout = 300\n",
    );
    write(root, "/usr/sbin/pre-freeze-script", "#!/bin/sh\nexit 0\n", 0o755);
    write(root, "/usr/sbin/post-thaw-script", "#!/bin/sh\nexit 0\n", 0o644);
    const vm = discoverVmware({ root });
    assert.equal(vm.execScripts, false);
    assert.equal(vm.toolsConf.vmbackup.timeout, "300");
    assert.deepEqual(vm.legacy.freeze, {
      path: "/usr/sbin/pre-freeze-script",
      exists: true,
      executable: true,
    });
    assert.deepEqual(vm.legacy.thaw, {
      path: "/usr/sbin/post-thaw-script",
      exists: true,
      executable: false,
    });
    assert.equal(vm.scriptsDir.exists, false);
  } finally {
    cleanup();
  }
});

Deno.test("Google: [Snapshots] enabled and timeout_in_seconds are read, keys in any case", () => {
  const { root, cleanup } = distroRoot("rhel8");
  try {
    write(
      root,
      "/etc/default/instance_configs.cfg",
      "[Snapshots]\nEnabled = true\ntimeout_in_seconds = 30\n",
    );
    mkdirSync(join(root, "etc/google/snapshots"), { recursive: true });
    const gcp = discoverGcp({ root });
    assert.equal(gcp.enabled, true);
    assert.equal(gcp.timeoutSeconds, 30);
    assert.equal(gcp.scriptsDir.exists, true);
  } finally {
    cleanup();
  }
});
