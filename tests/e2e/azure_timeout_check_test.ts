/**
 * Issue 20 item 6: Azure's `timeoutInSeconds` lowered after `vmsnap install
 * --for azure`: `check` compares Azure's current value with the installed
 * hook's `--timeout` and says what to run. Runs vmsnap at its real paths in a
 * private view of /etc (tests/private_system.ts); nothing is frozen.
 */
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { runFixture } from "../run_fixture.ts";
import { privateSystem } from "../private_system.ts";

const options = { sanitizeResources: false, sanitizeOps: false };

Deno.test({
  ...options,
  name:
    "issue 20 item 6: Azure's timeoutInSeconds lowered after install: check compares it with the hook's and says what to run",
  fn: async () => {
    const f = runFixture();
    const system = await privateSystem({ scratch: f.path("scratch") });
    try {
      // As on an Azure VM: the admin's scripts and Azure's file, then vmsnap install --for azure.
      const script = (name: string) =>
        system.put(`/etc/azure/${name}`, "#!/bin/sh\nexit 0\n", 0o700);
      const azure = {
        pluginName: "ScriptRunner",
        preScriptLocation: script("admin-pre.sh"),
        postScriptLocation: script("admin-post.sh"),
        timeoutInSeconds: 60,
        continueBackupOnFailure: true,
        fsFreezeEnabled: true,
      };
      const azureFile = "/etc/azure/VMSnapshotScriptPluginConfig.json";
      system.put(azureFile, JSON.stringify(azure), 0o600);
      const installed = await system.vmsnap(["install", "--for", "azure"]);
      assert.equal(installed.code, 0, installed.stdout + installed.stderr);
      assert.match(readFileSync(system.path("/etc/azure/vmsnap-pre.sh"), "utf8"), /--timeout 55/);
      const check = () => system.vmsnap(["check", "--config", "/etc/vmsnap/vmsnap.json"]);
      const before = await check();
      assert.doesNotMatch(before.stdout + before.stderr, /timeoutInSeconds \(?10/);

      // Later someone lowers Azure's timeout: Azure stops waiting for the pre hook at 10 s.
      const lowered = JSON.parse(readFileSync(system.path(azureFile), "utf8"));
      system.put(azureFile, JSON.stringify({ ...lowered, timeoutInSeconds: 10 }), 0o600);
      const after = await check();
      const said = after.stdout + after.stderr;
      assert.match(said, /timeoutInSeconds/, `check compares Azure's timeout:\n${said}`);
      assert.match(said, /\b10\b/, "it names Azure's current 10 s");
      assert.match(said, /\b55\b/, "and the hook's 55 s");
      assert.match(said, /vmsnap install --for azure/, "and says what to run");
    } finally {
      await system.stop();
      f.cleanup();
    }
  },
});
