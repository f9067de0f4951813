/**
 * `freeze.expediteRcu`: /sys/kernel/rcu_expedited goes from 0 to 1 only around
 * the FIFREEZE calls and is 0 again before the snapshot; an administrator's 1
 * is left alone; the guard puts the 0 back when the agent dies while it is
 * set. Through the compiled binary. The setting is the machine's: every test
 * puts back what it found.
 */
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { BIN, resultOf, runBin, waitFor } from "../helpers.ts";
import { runFixture } from "../run_fixture.ts";

const KNOB = "/sys/kernel/rcu_expedited";
const knob = () => readFileSync(KNOB, "utf8").trim();

Deno.test({
  name: "freeze.expediteRcu: on only around FIFREEZE, the admin's setting kept, the guard restores",
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async (t) => {
    const found = knob();
    const f = runFixture();
    try {
      writeFileSync(KNOB, "0");
      // The snapshot command sees the setting as it is during the frozen window.
      const seen = f.path("seen");
      const snap = f.script("snap-seen.sh", `cat ${KNOB} >> "${seen}"`);
      const run = async (expediteRcu: boolean) => {
        const config = f.config({
          freeze: { mounts: [f.mp], expediteRcu },
          snapshot: { command: [snap] },
        }, `expedite-${expediteRcu}.json`);
        const ran = await runBin(["run", "--json", "--config", config]);
        assert.equal(ran.code, 0, ran.stdout + ran.stderr);
        return resultOf(ran.stdout);
      };

      await t.step("set from 0 for the freeze, 0 again before the snapshot and after", async () => {
        const result = await run(true);
        assert.equal(result.freeze.rcuExpedited, "set");
        assert.equal(result.freeze.mounts[0].frozen, true);
        assert.equal(readFileSync(seen, "utf8").trim().split("\n").at(-1), "0");
        assert.equal(knob(), "0");
      });

      await t.step("without the key: untouched, not reported", async () => {
        const result = await run(false);
        assert.equal(result.freeze.rcuExpedited, undefined);
        assert.equal(knob(), "0");
      });

      await t.step("an administrator's 1 is left as it is", async () => {
        writeFileSync(KNOB, "1");
        const result = await run(true);
        assert.equal(result.freeze.rcuExpedited, "already");
        assert.equal(readFileSync(seen, "utf8").trim().split("\n").at(-1), "1");
        assert.equal(knob(), "1");
        writeFileSync(KNOB, "0");
      });

      await t.step("the agent dies while it is set: the guard puts the 0 back", async () => {
        const state = f.path("guard-state");
        mkdirSync(state, { mode: 0o700 });
        const guard = spawn(BIN, ["__guard"], { stdio: ["pipe", "pipe", "inherit"] });
        let out = "";
        guard.stdout.on("data", (d) => (out += d));
        const exited = new Promise((resolve) => guard.on("exit", resolve));
        guard.stdin.write(
          JSON.stringify({
            op: "arm",
            runId: "rcu",
            mounts: [f.mp],
            held: [],
            maxFrozenMs: 60_000,
            stateDir: state,
            restoreRcuExpedited: true,
          }) + "\n",
        );
        await waitFor("armed", () => out.includes('"armed"'));
        writeFileSync(KNOB, "1"); // as the agent does before its FIFREEZE calls
        guard.stdin.end(); // the agent "dies" before putting it back
        await exited;
        assert.equal(knob(), "0");
      });
    } finally {
      writeFileSync(KNOB, found);
      f.cleanup();
    }
  },
});
