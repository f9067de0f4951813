/**
 * Issue 21 item 10, through the compiled binary: names that every JavaScript
 * object has (`toString`, `constructor`, `valueOf`, `__proto__`,
 * `hasOwnProperty`) are neither events nor agents. `vmsnap hook <word>` and
 * `--for <word>` are usage errors (exit 64) and leave an active hold alone:
 * the hold still holds MariaDB and ends on the agent's own thaw. (An `in`
 * test on the event table once took `toString` for an event and ended the
 * hold; the cli's `Object.hasOwn` fixed it.)
 */
import assert from "node:assert/strict";
import { alive } from "../helpers.ts";
import { lastResult } from "../hook_agent.ts";
import { dbWorld, heldWrite, holderPid, hook } from "../hook_world.ts";

const WORDS = ["toString", "constructor", "valueOf", "__proto__", "hasOwnProperty"];

Deno.test({
  name: "hook: inherited names are not events or agents: exit 64, the hold goes on",
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    const w = await dbWorld();
    try {
      const config = w.f.config({ fsFreezeEnabled: false, plugins: [w.mysql] });
      const freeze = await hook("freeze", "vmware", config);
      assert.equal(freeze.code, 0, freeze.stderr);
      const holder = holderPid(w.state);
      for (const word of WORDS) {
        const event = await hook(word, "vmware", config);
        assert.equal(event.code, 64, `hook ${word}: exit ${event.code}\n${event.stderr}`);
        assert.match(event.stderr, /hook needs an event/);
        const agent = await hook("thaw", word, config);
        assert.equal(agent.code, 64, `--for ${word}: exit ${agent.code}\n${agent.stderr}`);
        assert.match(agent.stderr, /--for must be one of/);
        assert.ok(alive(holder), `${word} left the hold alone`);
      }
      const { write } = await heldWrite(w.server.socket, 1);
      const thaw = await hook("thaw", "vmware", config);
      assert.equal(thaw.code, 0, thaw.stderr);
      assert.ok(await write !== Infinity, "the write completed after the thaw");
      assert.equal(lastResult(w.state).hook.endedBy, "thaw");
    } finally {
      await w.cleanup();
    }
  },
});
