import assert from "node:assert/strict";
import { DEFAULT_SNAPSHOT_TIMEOUT_SECONDS } from "../../src/defaults.ts";
import { snapshotMethod } from "../../src/preflight/preflight.ts";

Deno.test("snapshotMethod: --external and --snapshot-command keep their own kind's timeout, not the other's", () => {
  const command = {
    snapshot: { kind: "command" as const, command: ["/usr/local/sbin/snap"], timeoutInSeconds: 5 },
  };
  const external = { snapshot: { kind: "external" as const, timeoutInSeconds: 900 } };
  // The config's command timeout (5 s) is not the external caller's.
  assert.deepEqual(snapshotMethod(command, { external: true }), {
    kind: "external",
    timeoutInSeconds: DEFAULT_SNAPSHOT_TIMEOUT_SECONDS,
  });
  assert.deepEqual(snapshotMethod(external, { external: true }), external.snapshot);
  assert.deepEqual(snapshotMethod(command, { snapshotCommand: ["/x"] }), {
    kind: "command",
    command: ["/x"],
    timeoutInSeconds: 5,
  });
  assert.equal(
    snapshotMethod(external, { snapshotCommand: ["/x"] })?.timeoutInSeconds,
    DEFAULT_SNAPSHOT_TIMEOUT_SECONDS,
  );
  assert.equal(snapshotMethod({ snapshot: null }, {}), undefined);
});
