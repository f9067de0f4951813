/**
 * What a hold claims when the agent freezes (qemu-ga, VMware, Azure) and no
 * plugin is configured: the agent's freeze is what the config asked for, so a
 * thaw after it is filesystem-consistent, as the same trust makes a hold with
 * plugins application-consistent. Through the compiled binary.
 */
import assert from "node:assert/strict";
import { runBin } from "../helpers.ts";
import { runFixture } from "../run_fixture.ts";
import { lastResult } from "../hook_agent.ts";

Deno.test({
  name: "hook consistency: an agent's freeze without plugins is filesystem-consistent",
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async (t) => {
    const f = runFixture();
    const state = f.path("state");
    const hook = (event: string, agent: string, config: string) =>
      runBin(["hook", event, "--for", agent, "--config", config]);
    try {
      for (
        const [agent, freeze, thaw] of [["vmware", "freeze", "thaw"], ["qemu-ga", "freeze", "thaw"]]
      ) {
        await t.step(`${agent}: freeze, then thaw: filesystem, exit 0`, async () => {
          const config = f.config({ plugins: [] }, `${agent}.json`);
          const pre = await hook(freeze, agent, config);
          assert.equal(pre.code, 0, pre.stderr);
          const post = await hook(thaw, agent, config);
          assert.equal(post.code, 0, post.stderr);
          const result = lastResult(state);
          assert.equal(result.hook.freezeBy, "agent");
          assert.equal(result.requestedConsistency, "filesystem");
          assert.equal(result.consistency, "filesystem");
          assert.equal(result.status, "success");
        });
      }

      await t.step("vmware: freezeFail: no snapshot, exit 2", async () => {
        const config = f.config({ plugins: [] }, "fail.json");
        assert.equal((await hook("freeze", "vmware", config)).code, 0);
        const fail = await hook("freezeFail", "vmware", config);
        assert.equal(fail.code, 2, fail.stderr);
        assert.equal(lastResult(state).consistency, "none");
      });

      await t.step("fsFreezeEnabled false: nothing asked, crash as asked, exit 0", async () => {
        const config = f.config({ plugins: [], fsFreezeEnabled: false }, "nofreeze.json");
        assert.equal((await hook("freeze", "vmware", config)).code, 0);
        const thaw = await hook("thaw", "vmware", config);
        assert.equal(thaw.code, 0, thaw.stderr);
        const result = lastResult(state);
        assert.equal(result.requestedConsistency, "crash");
        assert.equal(result.consistency, "crash");
      });
    } finally {
      f.cleanup();
    }
  },
});
