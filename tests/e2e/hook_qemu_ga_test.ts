/**
 * Hook mode with a real qemu-guest-agent: `vmsnap install --for qemu-ga`
 * into a prefix holding Debian's own fsfreeze-hook, qemu-ga started with it,
 * and QMP over its socket: freeze-list on the test's loop mount, then thaw.
 * MariaDB is held from the freeze to the thaw.
 */
import assert from "node:assert/strict";
import { copyFileSync, mkdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { runBin } from "../helpers.ts";
import { dbDir, mariadbWrite, startMariaDb } from "../db_servers.ts";
import { runFixture } from "../run_fixture.ts";
import { layDistro } from "../distro_roots.ts";
import { DEBIAN_FSFREEZE_HOOK, startQemuGa } from "../qemu_ga.ts";
import type { HookResult } from "../../src/hook/holder.ts";

Deno.test({
  name:
    "qemu-ga: freeze-list runs vmsnap's hook, MariaDB writes wait until the thaw, the result says application",
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    const f = runFixture();
    const db = dbDir();
    const server = await startMariaDb(db.dir);
    let ga: Awaited<ReturnType<typeof startQemuGa>> | undefined;
    try {
      server.sql("CREATE DATABASE app; CREATE TABLE app.t (id INT PRIMARY KEY) ENGINE=InnoDB");
      const config = f.config({
        plugins: [{ type: "mysql", name: "shop", socket: server.socket }],
      });
      // Debian 12's layout, with this machine's own fsfreeze-hook (the one qemu-ga runs below).
      const prefix = join(f.dir, "root");
      mkdirSync(prefix, { mode: 0o755 });
      layDistro("debian12", prefix);
      copyFileSync(DEBIAN_FSFREEZE_HOOK, join(prefix, "etc", "qemu", "fsfreeze-hook"));
      const installed = await runBin([
        "install",
        "--for",
        "qemu-ga",
        "--root",
        prefix,
        "--config",
        config,
      ]);
      assert.equal(installed.code, 0, installed.stdout + installed.stderr);
      assert.match(
        installed.stdout,
        /create +\S+\/etc\/qemu\/fsfreeze-hook\.d\/vmsnap \(mode 0700\)/,
      );
      assert.match(
        installed.stdout,
        /create +\S+\/etc\/systemd\/system\/qemu-guest-agent\.service\.d\/vmsnap-fsfreeze-hook\.conf/,
      );
      const dropIn = readFileSync(
        join(prefix, "etc/systemd/system/qemu-guest-agent.service.d/vmsnap-fsfreeze-hook.conf"),
        "utf8",
      );
      assert.match(dropIn, /^ExecStart=$/m);
      assert.match(
        dropIn,
        /^ExecStart=-\/usr\/sbin\/qemu-ga --fsfreeze-hook=\/etc\/qemu\/fsfreeze-hook$/m,
      );

      ga = await startQemuGa({
        dir: f.dir,
        hook: join(prefix, "etc", "qemu", "fsfreeze-hook"),
        keep: [f.dir, db.dir],
      });
      assert.equal(await ga.qmp("guest-fsfreeze-status"), "thawed");
      assert.equal(await ga.qmp("guest-fsfreeze-freeze-list", { mountpoints: [f.mp] }), 1);
      assert.equal(await ga.qmp("guest-fsfreeze-status"), "frozen");
      // Held: a write from another session waits for the thaw.
      const write = mariadbWrite(server.socket, "INSERT INTO app.t VALUES (1)", 15_000);
      await new Promise((resolve) => setTimeout(resolve, 1000));
      assert.equal(server.sql("SELECT COUNT(*) FROM app.t"), "0", "the write waits while frozen");
      assert.equal(await ga.qmp("guest-fsfreeze-thaw"), 1);
      const waited = await write;
      assert.ok(waited !== Infinity, "the write completed after the thaw");
      assert.ok(waited > 900, `the write waited for the thaw (${Math.round(waited)} ms)`);
      assert.equal(await ga.qmp("guest-fsfreeze-status"), "thawed");

      const result = JSON.parse(f.read("state/last-result.json")) as HookResult;
      assert.equal(result.mode, "hook");
      assert.equal(result.hook.agent, "qemu-ga");
      assert.equal(result.hook.freezeBy, "agent");
      assert.equal(result.hook.endedBy, "thaw");
      assert.equal(result.hook.peerCheck, "SO_PEERCRED", "the holder checked the thaw hook's uid");
      assert.equal(result.consistency, "application", JSON.stringify(result.errors));
      assert.equal(result.exitCode, 0);
      assert.deepEqual(result.freeze.mounts, [], "the holder froze nothing: qemu-ga did");
      assert.equal(result.plugins[0].quiesce?.ok, true);
      assert.equal(result.plugins[0].resume?.ok, true);
      // vmsnap status shows the hold's result like a run's.
      const status = await runBin(["status", "--json", "--config", config]);
      assert.equal(status.code, 0, status.stdout + status.stderr);
      const shown = JSON.parse(status.stdout);
      assert.equal(shown.lastResult.runId, result.runId);
      assert.equal(shown.lastResult.mode, "hook");
      assert.equal(shown.lastResult.consistency, "application");
      // One run id across the freeze and the thaw invocations, in the log too.
      const records = f.read("log/vmsnap.jsonl").trim().split("\n").map((l) => JSON.parse(l));
      const ours = records.filter((r) => r.runId === result.runId).map((r) => r.event);
      for (const event of ["hold-start", "quiesce", "quiesced", "resume", "result"]) {
        assert.ok(ours.includes(event), `the log has ${event} for run ${result.runId}: ${ours}`);
      }
    } finally {
      await ga?.stop();
      await server.stop();
      db.cleanup();
      f.cleanup();
    }
  },
});
