/**
 * `vmsnap check` on the backup agents vmsnap's hook is installed for, run
 * at the system's real paths in a private view of /etc (tests/private_system.ts):
 * an agent's timeout lowered after install (Google's `timeout_in_seconds`,
 * VMware's `[vmbackup] timeout`, Azure's `timeoutInSeconds`: issue 20 items
 * 5 and 6) is a warning naming both times and the command to run; an agent
 * that no longer runs the hook (qemu-ga's drop-in gone, VMware's scripts
 * off, Azure's file pointing elsewhere) is a problem.
 */
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { secureDir } from "../helpers.ts";
import { privateSystem } from "../private_system.ts";

const CONFIG = "/etc/vmsnap/vmsnap.json";

Deno.test({
  name:
    "check: agents' timeouts lowered after install are warned about, a hook no longer run is a problem",
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async (t) => {
    const { dir, cleanup } = secureDir("agent-check-");
    const system = await privateSystem({ scratch: `${dir}/scratch` });
    const config = (extra: Record<string, unknown> = {}) =>
      system.put(
        CONFIG,
        JSON.stringify({ fsFreezeEnabled: false, stateDir: `${dir}/state`, ...extra }),
        0o600,
      );
    const check = async () => {
      const ran = await system.vmsnap(["check", "--json", "--config", CONFIG]);
      return { code: ran.code, report: JSON.parse(ran.stdout) };
    };
    const messages = (list: { code: string; message: string }[], code: string) =>
      list.filter((p) => p.code === code).map((p) => p.message).join("\n");
    try {
      config();
      await t.step("gcp: timeout_in_seconds lowered below the hook's --timeout", async () => {
        const cfg = "/etc/default/instance_configs.cfg";
        system.put(cfg, "[Snapshots]\nenabled = true\ntimeout_in_seconds = 60\n", 0o644);
        const installed = await system.vmsnap(["install", "--for", "gcp", "--config", CONFIG]);
        assert.equal(installed.code, 0, installed.stdout + installed.stderr);
        let { report } = await check();
        assert.equal(messages(report.warnings, "AgentTimeout"), "");
        assert.match(
          JSON.stringify(report.checks),
          /agent gcp.*timeout_in_seconds 60 s, hook 55 s/,
        );
        system.put(cfg, "[Snapshots]\nenabled = true\ntimeout_in_seconds = 10\n", 0o644);
        ({ report } = await check());
        const warned = messages(report.warnings, "AgentTimeout");
        assert.match(warned, /timeout_in_seconds = 10 s \(\/etc\/default\/instance_configs\.cfg\)/);
        assert.match(warned, /--timeout 55/);
        assert.match(warned, /Fix: vmsnap install --for gcp \(the hook's --timeout becomes 5 s\)/);
        // Doing what it says clears it.
        await system.vmsnap(["install", "--for", "gcp", "--config", CONFIG]);
        ({ report } = await check());
        assert.equal(messages(report.warnings, "AgentTimeout"), "");
        assert.match(
          readFileSync(system.path("/etc/google/snapshots/pre.sh"), "utf8"),
          /--timeout 5 /,
        );
      });

      await t.step(
        "vmware: the quiesce limit of tools.conf, against the hook and the hold",
        async () => {
          system.put("/etc/vmware-tools/tools.conf", "[vmbackup]\ntimeout = 20\n", 0o644);
          const installed = await system.vmsnap(["install", "--for", "vmware", "--config", CONFIG]);
          assert.equal(installed.code, 0, installed.stdout + installed.stderr);
          assert.match(
            readFileSync(system.path("/etc/vmware-tools/backupScripts.d/vmsnap"), "utf8"),
            /--timeout 15 /,
            "the hook gives up before VMware's quiesce limit",
          );
          let { report } = await check();
          const warned = messages(report.warnings, "AgentTimeout");
          assert.match(
            warned,
            /hook\.maxHoldSeconds is 600 s, longer than VMware's quiesce limit \(20 s, \[vmbackup\] timeout in \/etc\/vmware-tools\/tools\.conf\)/,
          );
          assert.match(warned, /"maxHoldSeconds": 20/);
          config({ hook: { maxHoldSeconds: 20 } });
          ({ report } = await check());
          assert.doesNotMatch(messages(report.warnings, "AgentTimeout"), /VMware/);
          // The limit lowered below the hook's own time.
          system.put("/etc/vmware-tools/tools.conf", "[vmbackup]\ntimeout = 10\n", 0o644);
          ({ report } = await check());
          assert.match(
            messages(report.warnings, "AgentTimeout"),
            /VMware's quiesce limit is 10 s .*hook may take up to 15 s.*vmsnap install --for vmware \(the hook's --timeout becomes 5 s\)/,
          );
          // The scripts switched off: the hook is not run at all, a problem (exit 1).
          system.put("/etc/vmware-tools/tools.conf", "[vmbackup]\nexecScripts = false\n", 0o644);
          const off = await check();
          assert.equal(off.code, 1);
          assert.match(
            messages(off.report.problems, "HookNotRun"),
            /execScripts is off in \/etc\/vmware-tools\/tools\.conf/,
          );
          await system.vmsnap(["uninstall", "--for", "vmware"]);
          config();
        },
      );

      await t.step("azure: timeoutInSeconds lowered after install (issue 20 item 6)", async () => {
        const azureFile = "/etc/azure/VMSnapshotScriptPluginConfig.json";
        system.put("/etc/azure/admin-pre.sh", "#!/bin/sh\nexit 0\n", 0o700);
        system.put(
          azureFile,
          JSON.stringify({ preScriptLocation: "/etc/azure/admin-pre.sh", timeoutInSeconds: 60 }),
          0o600,
        );
        const installed = await system.vmsnap(["install", "--for", "azure", "--config", CONFIG]);
        assert.equal(installed.code, 0, installed.stdout + installed.stderr);
        let { report } = await check();
        assert.equal(messages(report.warnings, "AgentTimeout"), "");
        const azure = JSON.parse(readFileSync(system.path(azureFile), "utf8"));
        system.put(azureFile, JSON.stringify({ ...azure, timeoutInSeconds: 10 }), 0o600);
        ({ report } = await check());
        const warned = messages(report.warnings, "AgentTimeout");
        assert.match(warned, /Azure now waits timeoutInSeconds = 10 s/);
        assert.match(warned, /installed with --timeout 55/);
        assert.match(
          warned,
          /Fix: vmsnap install --for azure \(the hook's --timeout becomes 5 s\)/,
        );
        // Azure's file rewritten to call something else: the hook is no longer run.
        system.put(
          azureFile,
          JSON.stringify({ ...azure, preScriptLocation: "/etc/azure/admin-pre.sh" }),
          0o600,
        );
        const gone = await check();
        assert.equal(gone.code, 1);
        assert.match(
          messages(gone.report.problems, "HookNotRun"),
          /calls \/etc\/azure\/admin-pre\.sh, not \/etc\/azure\/vmsnap-pre\.sh\. Fix: vmsnap install --for azure/,
        );
        system.put(azureFile, JSON.stringify(azure), 0o600);
        await system.vmsnap(["uninstall", "--for", "azure"]);
      });

      await t.step(
        "qemu-ga: found and not installed, then installed, then its drop-in removed",
        async () => {
          let { report } = await check();
          assert.match(
            JSON.stringify(report.checks),
            /agent qemu-ga.*found \(\/(usr\/)?lib\/systemd\/system\/qemu-guest-agent\.service\); vmsnap's hook is not installed: vmsnap install --for qemu-ga/,
          );
          const installed = await system.vmsnap([
            "install",
            "--for",
            "qemu-ga",
            "--config",
            CONFIG,
          ]);
          assert.equal(installed.code, 0, installed.stdout + installed.stderr);
          assert.match(
            installed.stdout,
            /no running systemd or OpenRC was found: restart the agent yourself/,
          );
          ({ report } = await check());
          assert.match(
            JSON.stringify(report.checks),
            /qemu-ga runs \/etc\/qemu\/fsfreeze-hook: \/etc\/qemu\/fsfreeze-hook\.d\/vmsnap is run at each freeze/,
          );
          await system.run([
            "rm",
            "/etc/systemd/system/qemu-guest-agent.service.d/vmsnap-fsfreeze-hook.conf",
          ]);
          const off = await check();
          assert.equal(off.code, 1);
          assert.match(
            messages(off.report.problems, "HookNotRun"),
            /qemu-ga will not run vmsnap's hook \/etc\/qemu\/fsfreeze-hook\.d\/vmsnap: qemu-ga runs no fsfreeze hook/,
          );
        },
      );
    } finally {
      await system.stop();
      cleanup();
    }
  },
});
