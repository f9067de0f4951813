/**
 * Issue 20 items 4 and 5, the agents as they are set up on the VM: `vmsnap
 * install --for qemu-ga` run through qemu-ga's own `guest-exec` (as `virsh
 * qemu-agent-command` sends it) survives the agent's restart and reports;
 * docs/hooks.md says which agent timeouts are safe and `check` warns where it
 * can see them. qemu-ga 7.2 runs as a fake `qemu-guest-agent.service`
 * (tests/fake_systemd.ts) in a private view of /etc (tests/private_system.ts);
 * nothing is frozen.
 */
import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import { existsSync, mkdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { BIN, ROOT, waitFor } from "../helpers.ts";
import { qmpClient } from "../qemu_ga.ts";
import { privateSystem } from "../private_system.ts";
import { fakeSystemd } from "../fake_systemd.ts";
import { numberIn, sleep } from "../hook_world.ts";
import { runFixture } from "../run_fixture.ts";

const options = { sanitizeResources: false, sanitizeOps: false };

Deno.test({
  ...options,
  name:
    "issue 20 item 4: vmsnap install --for qemu-ga through qemu-ga's guest-exec survives the agent's restart and reports",
  fn: async () => {
    const f = runFixture();
    const system = await privateSystem({ scratch: f.path("scratch"), fakeSystemd: true });
    const socket = f.path("qga.sock");
    const state = f.path("qga-state");
    mkdirSync(state, { mode: 0o700 });
    const unit = await fakeSystemd({
      dir: f.dir,
      system,
      agentArgs: ["-m", "unix-listen", "-p", socket, "-t", state],
    });
    try {
      system.put(
        "/etc/vmsnap/vmsnap.json",
        JSON.stringify({ fsFreezeEnabled: false, stateDir: f.path("state") }),
        0o600,
      );
      await waitFor("qemu-ga's socket", () => existsSync(socket), 10_000);
      const before = unit.agentPid();
      const ga = await qmpClient(socket);
      // As `virsh qemu-agent-command DOM '{"execute":"guest-exec",...}'` sends it.
      const { pid } = await ga.qmp("guest-exec", {
        path: BIN,
        arg: ["install", "--for", "qemu-ga", "--config", "/etc/vmsnap/vmsnap.json"],
        "capture-output": true,
      }) as { pid: number };
      // deno-lint-ignore no-explicit-any
      let status: any;
      let lost: string | undefined;
      const until = performance.now() + 20_000;
      while (!status?.exited && performance.now() < until) {
        await sleep(200);
        try {
          status = await ga.qmp("guest-exec-status", { pid });
        } catch (error) {
          lost = (error as Error).message;
          break;
        }
      }
      ga.close();
      assert.ok(
        status?.exited,
        `the admin gets the install's answer through guest-exec (got ${
          lost ? `"${lost}": the install restarted qemu-ga from inside its own cgroup` : "no answer"
        }; systemd was asked: ${JSON.stringify(unit.requests())})`,
      );
      const out = Buffer.from(status["out-data"] ?? "", "base64").toString();
      assert.equal(status.exitcode, 0, out);
      assert.match(out, /fsfreeze-hook\.d\/vmsnap/, "the install printed what it changed");
      // And qemu-ga is restarted afterwards, with its fsfreeze hook.
      await waitFor("qemu-ga restarted", () => unit.restarts() > 0, 30_000);
      assert.notEqual(unit.agentPid(), before);
      await waitFor("the new qemu-ga's socket", () => existsSync(socket), 10_000);
      assert.ok(
        unit.agentCmdline().some((a) => a.startsWith("--fsfreeze-hook=")),
        `the restarted agent runs with vmsnap's drop-in: ${unit.agentCmdline().join(" ")}`,
      );
      assert.ok(existsSync(system.path("/etc/qemu/fsfreeze-hook.d/vmsnap")));
    } finally {
      await unit.stop();
      await system.stop();
      f.cleanup();
    }
  },
});

Deno.test({
  ...options,
  name:
    "issue 20 item 5: the agents' timeouts: docs/hooks.md says which are safe; check warns where it can see them",
  fn: async (t) => {
    await t.step("docs/hooks.md: libvirt's guest-agent-timeout against the hook's own time", () => {
      const doc = readFileSync(join(ROOT, "docs/hooks.md"), "utf8");
      assert.match(doc, /guest-agent-timeout/, "docs/hooks.md names virsh guest-agent-timeout");
    });

    const f = runFixture();
    const system = await privateSystem({ scratch: f.path("scratch") });
    try {
      system.put(
        "/etc/vmsnap/vmsnap.json",
        JSON.stringify({ fsFreezeEnabled: false, stateDir: f.path("state") }),
        0o600,
      );
      const check = () => system.vmsnap(["check", "--config", "/etc/vmsnap/vmsnap.json"]);

      await t.step("GCP: timeout_in_seconds lowered below the hook's --timeout", async () => {
        const cfg = "/etc/default/instance_configs.cfg";
        system.put(cfg, "[Snapshots]\nenabled = true\ntimeout_in_seconds = 60\n", 0o644);
        const installed = await system.vmsnap([
          "install",
          "--for",
          "gcp",
          "--config",
          "/etc/vmsnap/vmsnap.json",
        ]);
        assert.equal(installed.code, 0, installed.stdout + installed.stderr);
        const hookTimeout = numberIn(
          readFileSync(system.path("/etc/google/snapshots/pre.sh"), "utf8"),
          /--timeout (\d+)/,
        );
        system.put(cfg, "[Snapshots]\nenabled = true\ntimeout_in_seconds = 10\n", 0o644);
        const said = await check();
        const out = said.stdout + said.stderr;
        assert.match(out, /timeout_in_seconds/, `check compares GCP's timeout:\n${out}`);
        assert.match(out, new RegExp(`\\b${hookTimeout}\\b`), "with the hook's");
      });

      await t.step("VMware: tools.conf [vmbackup] timeout below the hook's time", async () => {
        system.put("/etc/vmware-tools/tools.conf", "[vmbackup]\ntimeout = 20\n", 0o644);
        const installed = await system.vmsnap([
          "install",
          "--for",
          "vmware",
          "--config",
          "/etc/vmsnap/vmsnap.json",
        ]);
        assert.equal(installed.code, 0, installed.stdout + installed.stderr);
        const said = await check();
        const out = said.stdout + said.stderr;
        assert.match(out, /tools\.conf/, `check reads VMware's quiesce timeout:\n${out}`);
        assert.match(out, /\b20\b/);
      });
    } finally {
      await system.stop();
      f.cleanup();
    }
  },
});
