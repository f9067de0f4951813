/**
 * Issue 20, hook mode as the agents really drive it (items 1-5), through the
 * compiled binary with the real qemu-ga 7.2 over its socket and QMP commands
 * as libvirt sends them. Pending: each asserts what the issue asks for and
 * fails until the fix lands (run with
 * `deno test -A tests/pending/hook_fidelity_test.ts` after a build).
 *
 * qemu-ga runs in its private mount namespace (tests/qemu_ga.ts) and freezes
 * only the test's loop mount (`guest-fsfreeze-freeze-list` with it), or
 * nothing (a mountpoint that is not mounted). The install-through-guest-exec
 * test runs qemu-ga as a fake `qemu-guest-agent.service` (tests/fake_systemd.ts)
 * in a private view of /etc (tests/private_system.ts); it freezes nothing.
 */
import assert from "node:assert/strict";
import { existsSync, mkdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import process from "node:process";
import { runBin, startBin, waitFor } from "../helpers.ts";
import { mariadbWrite } from "../db_servers.ts";
import { lastResult } from "../hook_agent.ts";
import {
  agentHooks,
  dbWorld,
  endHolds,
  heldWrite,
  holderInfo,
  holderPid,
  hook,
  numberIn,
  qemuGaWithHook,
  sleep,
  statusOf,
} from "../hook_world.ts";

const options = { sanitizeResources: false, sanitizeOps: false };

/** "holds until thaw/post or N s" in the freeze hook's line. */
const HOLD_LIMIT = /holds until thaw\/post or (\d+) s/;

Deno.test({
  ...options,
  name:
    "issue 20 item 1: qemu-ga froze nothing: the hold ends at once, as no snapshot; libvirt's other sequences",
  fn: async (t) => {
    const w = await dbWorld();
    const config = w.f.config({ plugins: [w.mysql], hook: { maxHoldSeconds: 120 } });
    const ga = await qemuGaWithHook(w.f, config, w.keep);
    try {
      await t.step(
        "guest-fsfreeze-freeze-list naming no mounted filesystem (virsh domfsfreeze --mountpoint /not-a-mount)",
        async () => {
          // qemu-ga runs the freeze hook, freezes nothing, returns 0, and never runs the thaw
          // hook; libvirt sends no thaw either (qemuSnapshotCreateActiveExternal: thaw only
          // when frozen > 0).
          assert.equal(
            await ga.qmp("guest-fsfreeze-freeze-list", { mountpoints: ["/not-a-mount"] }),
            0,
          );
          assert.equal(await ga.qmp("guest-fsfreeze-status"), "thawed");
          const ms = await mariadbWrite(
            w.server.socket,
            "INSERT INTO app.t VALUES (1)",
            10_000,
          );
          await endHolds(w.state);
          assert.ok(
            ms < 10_000,
            `MariaDB takes a write within 10 s: the holder must learn that qemu-ga froze nothing (it held ${
              ms === Infinity ? "more than 10 s" : `${Math.round(ms)} ms`
            }; hook.maxHoldSeconds 120)`,
          );
          const result = lastResult(w.state);
          assert.equal(result.hook.agent, "qemu-ga");
          assert.equal(result.plugins[0].quiesce?.ok, true, "the freeze hook did lock MariaDB");
          assert.equal(result.snapshotTaken, false, "no snapshot happened");
          assert.notEqual(result.consistency, "application");
          assert.notEqual(result.status, "success");
          assert.notEqual(result.exitCode, 0);
          const { text } = await statusOf(config);
          assert.notEqual(text.code, 0, `status says the hold failed:\n${text.stdout}`);
        },
      );

      await t.step("guest-fsfreeze-thaw with no freeze (libvirt's error paths)", async () => {
        await endHolds(w.state);
        const before = readFileSync(join(w.state, "last-result.json"), "utf8");
        assert.equal(await ga.qmp("guest-fsfreeze-thaw"), 0);
        assert.equal(
          readFileSync(join(w.state, "last-result.json"), "utf8"),
          before,
          "a stray thaw records nothing",
        );
        assert.equal(
          await mariadbWrite(w.server.socket, "INSERT INTO app.t VALUES (2)") < 5000,
          true,
        );
      });

      await t.step(
        "a freeze with no thaw (libvirt gave up: guest-agent-timeout): the hold ends at its limit, status says so",
        async () => {
          // The same config file (the installed hook names it), with a short hold limit.
          const short = w.f.config({ plugins: [w.mysql], hook: { maxHoldSeconds: 4 } });
          try {
            assert.equal(await ga.qmp("guest-fsfreeze-freeze-list", { mountpoints: [w.f.mp] }), 1);
            const ms = await mariadbWrite(w.server.socket, "INSERT INTO app.t VALUES (3)", 15_000);
            assert.ok(ms < 10_000, `the lock ended at hook.maxHoldSeconds 4 (${ms} ms)`);
            await waitFor("the holder to end", () => !holderInfo(w.state), 10_000).catch(() => {});
            const result = lastResult(w.state);
            assert.equal(result.plugins[0].quiesce?.ok, true, "the freeze hook did lock MariaDB");
            assert.equal(result.hook.endedBy, "deadline");
            assert.equal(result.snapshotTaken, false);
            const { text } = await statusOf(short);
            assert.notEqual(text.code, 0);
            assert.match(text.stdout, /HoldTimeout/);
          } finally {
            // qemu-ga still has the mount frozen: libvirt's thaw never came. Thaw it now.
            await ga.qmp("guest-fsfreeze-thaw");
            w.f.config({ plugins: [w.mysql], hook: { maxHoldSeconds: 120 } });
          }
        },
      );

      await t.step(
        "status reports qemu-ga's frozen time, not 0 ms (issue 20 item 3)",
        async () => {
          await endHolds(w.state);
          assert.equal(await ga.qmp("guest-fsfreeze-freeze-list", { mountpoints: [w.f.mp] }), 1);
          await sleep(1500);
          assert.equal(await ga.qmp("guest-fsfreeze-thaw"), 1);
          const result = lastResult(w.state);
          assert.equal(result.hook.endedBy, "thaw");
          assert.equal(result.plugins[0].quiesce?.ok, true, "the freeze hook did lock MariaDB");
          const { text } = await statusOf(config);
          const frozen = numberIn(text.stdout, /frozen (\d+) ms/);
          assert.ok(
            frozen !== undefined && frozen >= 1000,
            `qemu-ga had the mount frozen for 1.5 s; status says "frozen ${frozen} ms":\n${text.stdout}`,
          );
        },
      );
    } finally {
      await ga.stop();
      await w.cleanup();
    }
  },
});

Deno.test({
  ...options,
  name:
    "issue 20 item 2: default hold limits derived from each agent, stated by the hook, status and check; the database held within it",
  fn: async (t) => {
    const w = await dbWorld();
    try {
      // No hook.maxHoldSeconds, the MySQL plugin's default watchdog (300 s).
      const config = w.f.config({ fsFreezeEnabled: false, plugins: [w.mysql] });
      // The longest a hold can need by each agent's own limits (research/agents.md): a disk-only
      // qemu-ga snapshot takes seconds; Azure: the script timeout (30) plus safefreeze's 60 s;
      // GCP: 60 s per script; AWS: DLM's script timeout (10-120 s) and an EBS snapshot is taken
      // when initiated; VMware: its 15-minute quiesce limit.
      const bounds = { azure: 150, gcp: 150, aws: 150, vmware: 900 } as const;
      for (const [agent, bound] of Object.entries(bounds)) {
        await t.step(`${agent}: the effective limit is stated, at most ${bound} s`, async () => {
          const calls = await agentHooks(w.f, config, agent as keyof typeof bounds);
          const freeze = await calls.pre();
          assert.equal(freeze.code, 0, freeze.stderr);
          const limit = numberIn(freeze.stderr, HOLD_LIMIT);
          const { text } = await statusOf(config);
          await calls.post();
          await endHolds(w.state);
          assert.ok(
            limit !== undefined && limit <= bound,
            `the ${agent} hold's default limit is ${limit} s (the old 600 s default, not derived from ${agent}'s own timeouts)`,
          );
          assert.match(
            text.stdout,
            new RegExp(`\\b${limit} s\\b`),
            `status names the effective limit during the hold:\n${text.stdout}`,
          );
        });
      }

      await t.step(
        "qemu-ga (a real freeze-list): status states a limit of at most 120 s",
        async () => {
          const ga = await qemuGaWithHook(w.f, config, w.keep);
          try {
            assert.equal(await ga.qmp("guest-fsfreeze-freeze-list", { mountpoints: [w.f.mp] }), 1);
            const { text } = await statusOf(config);
            const limit = numberIn(text.stdout, /a hold is in progress[^\n]*?\b(\d+) s\b/);
            assert.ok(
              limit !== undefined && limit <= 120,
              `status during qemu-ga's hold states its limit (at most 120 s: a disk-only snapshot takes seconds):\n${text.stdout}`,
            );
          } finally {
            await ga.stop();
            await endHolds(w.state);
          }
        },
      );

      await t.step("check states the effective limit", async () => {
        const check = await runBin(["check", "--config", config]);
        assert.match(
          check.stdout,
          /qemu-ga[^\n]*\b\d+ s\b|\b\d+ s\b[^\n]*qemu-ga/,
          `check names the hold limit for qemu-ga:\n${check.stdout}`,
        );
      });

      await t.step(
        "qemu-ga dies after its snapshot: MariaDB takes writes again within the stated limit",
        async () => {
          const freeze = await hook("freeze", "qemu-ga", config);
          assert.equal(freeze.code, 0, freeze.stderr);
          const limit = numberIn(freeze.stderr, HOLD_LIMIT)!;
          assert.ok(limit <= 120, `qemu-ga's limit ${limit} s`);
          const { write } = await heldWrite(w.server.socket, 10, { limitMs: (limit + 15) * 1000 });
          const ms = await write;
          assert.ok(ms <= (limit + 10) * 1000, `the lock ended with the hold (${ms} ms)`);
        },
      );
    } finally {
      await w.cleanup();
    }
  },
});

/** The metrics textfile's exit code sample. */
const exitCodeIn = (text: string) => numberIn(text, /^vmsnap_last_run_exit_code (\S+)$/m);

Deno.test({
  ...options,
  name:
    "issue 20 item 3: status and the metrics tell the truth after a holder or a run died, a lock ended early, a late post",
  fn: async (t) => {
    const w = await dbWorld();
    const metricsDir = w.f.path("metrics");
    mkdirSync(metricsDir, { mode: 0o755 });
    const textfile = join(metricsDir, "vmsnap.prom");
    const config = w.f.config({
      fsFreezeEnabled: false,
      plugins: [w.mysql],
      metrics: { textfile },
    });
    const succeed = async () => {
      assert.equal((await hook("freeze", "vmware", config)).code, 0);
      assert.equal((await hook("thaw", "vmware", config)).code, 0);
      assert.equal((await statusOf(config)).text.code, 0, "a good hold first");
    };
    try {
      await t.step("the holder died mid-hold: status, then after post and recover", async () => {
        await succeed();
        assert.equal((await hook("freeze", "vmware", config)).code, 0);
        process.kill(holderPid(w.state), "SIGKILL");
        await sleep(300);
        for (const after of ["the death", "the post hook", "vmsnap recover"]) {
          if (after === "the post hook") await hook("thaw", "vmware", config);
          if (after === "vmsnap recover") await runBin(["recover", "--config", config]);
          const { text } = await statusOf(config);
          assert.notEqual(
            text.code,
            0,
            `after ${after}, status still shows the last success:\n${text.stdout}`,
          );
          assert.match(text.stdout, /HolderDied|died/, text.stdout);
          const metrics = readFileSync(textfile, "utf8");
          assert.notEqual(exitCodeIn(metrics), 0, `after ${after}, the metrics still say exit 0`);
        }
      });

      await t.step("a run died: status says so, also after recover", async () => {
        await succeed();
        const snapping = w.f.path("run-snapping");
        const runConfig = w.f.config({
          fsFreezeEnabled: false,
          plugins: [w.mysql],
          metrics: { textfile },
          snapshot: { command: [w.f.script("slow.sh", `touch "${snapping}"; exec sleep 300`)] },
        }, "run.json");
        const run = startBin(["run", "--json", "--config", runConfig]);
        await waitFor("the snapshot", () => existsSync(snapping), 30_000);
        run.child.kill("SIGKILL");
        await run.done;
        for (const after of ["the death", "vmsnap recover"]) {
          if (after === "vmsnap recover") await runBin(["recover", "--config", runConfig]);
          const { text } = await statusOf(runConfig);
          assert.notEqual(text.code, 0, `after ${after}:\n${text.stdout}`);
          assert.match(text.stdout, /died|killed|Interrupted/i, text.stdout);
          assert.notEqual(exitCodeIn(readFileSync(textfile, "utf8")), 0);
        }
        await runBin(["recover", "--config", runConfig]);
      });

      await t.step(
        'the plugin\'s lock ended at its own limit: not "held" for the whole hold',
        async () => {
          const short = w.f.config({
            fsFreezeEnabled: false,
            plugins: [{ ...w.mysql, maxHoldSeconds: 2 }],
          }, "watchdog.json");
          assert.equal((await hook("freeze", "vmware", short)).code, 0);
          await sleep(4500);
          await hook("thaw", "vmware", short);
          const { text } = await statusOf(short);
          const held = numberIn(text.stdout, /plugin shop \(mysql\)[^\n]*held (\d+) ms/);
          assert.ok(
            held === undefined || held < 3000,
            `the lock ended at the plugin's maxHoldSeconds (2 s), status says held ${held} ms:\n${text.stdout}`,
          );
          assert.notEqual(lastResult(w.state).consistency, "application");
        },
      );

      await t.step(
        "Azure's post came after the hold's limit: HoldTimeout, and Azure's snapshot is not denied",
        async () => {
          const late = w.f.config(
            { fsFreezeEnabled: false, plugins: [w.mysql], hook: { maxHoldSeconds: 3 } },
            "late.json",
          );
          const azure = await agentHooks(w.f, late, "azure");
          assert.equal((await azure.pre()).code, 0);
          await waitFor("the hold's limit", () => !holderInfo(w.state), 15_000);
          // Azure always runs its post-script after its snapshot attempt (handle.py).
          const post = await azure.post();
          assert.match(post.stderr, /HoldTimeout/, post.stderr);
          assert.doesNotMatch(post.stderr, /HookAborted/);
          const { text } = await statusOf(late);
          assert.match(text.stdout, /HoldTimeout/);
          assert.doesNotMatch(
            text.stdout,
            /\(no snapshot\)/,
            `Azure took its snapshot after the hold ended; status must not say there was none:\n${text.stdout}`,
          );
        },
      );
    } finally {
      await w.cleanup();
    }
  },
});
