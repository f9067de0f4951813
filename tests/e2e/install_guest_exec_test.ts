/**
 * `vmsnap install --for qemu-ga` sent through the guest agent itself, as
 * `virsh qemu-agent-command DOM '{"execute":"guest-exec",...}'` does (a
 * common way to roll vmsnap out to guests; issue 20 item 4): the real
 * qemu-ga 7.2 runs it as its child, in its unit's cgroup. The restart that
 * makes qemu-ga take `--fsfreeze-hook` must not kill the install before its
 * answer is read with `guest-exec-status`, and must still happen.
 *
 * No systemd runs here: qemu-ga runs as a `qemu-guest-agent.service` of
 * tests/fake_systemd.ts (its own cgroup; `systemctl` and `systemd-run`
 * served by the test, a restart killing the whole cgroup as systemd's
 * KillMode=control-group does), in a private view of /etc
 * (tests/private_system.ts) where /run/systemd/system exists, so vmsnap
 * finds systemd and Debian's qemu-ga unit exactly as on a Debian guest.
 * Nothing is frozen.
 */
import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import { existsSync, mkdirSync } from "node:fs";
import { BIN, secureDir, waitFor } from "../helpers.ts";
import { qmpClient } from "../qemu_ga.ts";
import { privateSystem } from "../private_system.ts";
import { fakeSystemd } from "../fake_systemd.ts";

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

Deno.test({
  name:
    "install --for qemu-ga through qemu-ga's guest-exec: the answer comes back, then qemu-ga restarts with its hook",
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    const { dir, cleanup } = secureDir("guest-exec-");
    const system = await privateSystem({ scratch: `${dir}/scratch`, fakeSystemd: true });
    const socket = `${dir}/qga.sock`;
    const state = `${dir}/qga-state`;
    mkdirSync(state, { mode: 0o700 });
    const unit = await fakeSystemd({
      dir,
      system,
      agentArgs: ["-m", "unix-listen", "-p", socket, "-t", state],
    });
    try {
      system.put(
        "/etc/vmsnap/vmsnap.json",
        JSON.stringify({ fsFreezeEnabled: false, stateDir: `${dir}/vmsnap-state` }),
        0o600,
      );
      await waitFor("qemu-ga's socket", () => existsSync(socket), 10_000);
      const before = unit.agentPid();
      const ga = await qmpClient(socket);
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
        `the install's answer through guest-exec (got ${lost ?? "no answer"}; systemd was asked: ${
          JSON.stringify(unit.requests())
        })`,
      );
      const out = Buffer.from(status["out-data"] ?? "", "base64").toString();
      assert.equal(status.exitcode, 0, out);
      assert.match(out, /create +\/etc\/qemu\/fsfreeze-hook\.d\/vmsnap/);
      assert.match(
        out,
        /qemu-guest-agent\.service restarts in 10 s, from a transient systemd service/,
      );
      assert.match(
        out,
        /run +systemd-run .* \/bin\/sh -c 'sleep 10; exec systemctl try-restart qemu-guest-agent\.service'/,
      );
      assert.equal(unit.restarts(), 0, "not restarted while the answer was still to be read");
      assert.equal(unit.agentPid(), before);

      // Then qemu-ga is restarted, from outside its cgroup, with vmsnap's drop-in.
      await waitFor("qemu-ga restarted", () => unit.restarts() > 0, 30_000);
      assert.notEqual(unit.agentPid(), before);
      const running = () => {
        try {
          return unit.agentCmdline()[0] === "qemu-ga";
        } catch {
          return false;
        }
      };
      await waitFor("the new qemu-ga", running, 10_000);
      assert.ok(
        unit.agentCmdline().includes("--fsfreeze-hook=/etc/qemu/fsfreeze-hook"),
        `the restarted agent runs its hook script: ${unit.agentCmdline().join(" ")}`,
      );
      assert.ok(existsSync(system.path("/etc/qemu/fsfreeze-hook.d/vmsnap")));
      assert.deepEqual(unit.requests()[0], ["systemctl", "daemon-reload"]);
      // The new qemu-ga answers (once it listens on its socket again).
      let answered = false;
      for (const until = performance.now() + 10_000; !answered && performance.now() < until;) {
        try {
          const again = await qmpClient(socket);
          answered = typeof await again.qmp("guest-info") === "object";
          again.close();
        } catch {
          await sleep(100); // not listening yet
        }
      }
      assert.ok(answered, "the restarted qemu-ga answers");
      // An install from the admin's shell (not inside qemu-ga) restarts at once, and waits for it.
      const removed = await system.run([BIN, "uninstall", "--for", "qemu-ga"], {
        env: { PATH: unit.path },
      });
      assert.equal(removed.code, 0, removed.stderr);
      assert.match(removed.stdout, /run +systemctl try-restart qemu-guest-agent\.service/);
      assert.match(removed.stdout, /restarted qemu-guest-agent\.service/);
      assert.equal(unit.restarts(), 2);
      assert.ok(!unit.agentCmdline().some((a) => a.startsWith("--fsfreeze-hook")));
      assert.ok(!existsSync(system.path("/etc/qemu/fsfreeze-hook.d/vmsnap")));
      assert.ok(!existsSync("/etc/qemu/fsfreeze-hook.d/vmsnap"), "this machine's /etc untouched");
    } finally {
      await unit.stop();
      await system.stop();
      cleanup();
    }
  },
});
