/**
 * The external handshake's input, through the binary: an answer the caller
 * wrote before vmsnap announced `frozen` is not an answer; the external
 * caller keeps its own timeout; nothing frozen, no `frozen` event.
 */
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { codes, resultOf, runBin, startBin, timeToWrite, waitFor } from "../helpers.ts";
import { runFixture } from "../run_fixture.ts";

Deno.test("external handshake: snapshot-done sent before the frozen line is discarded (and logged), only a later answer counts", async () => {
  const f = runFixture();
  try {
    const config = f.config();
    // Written at once, long before the freeze: a caller that did not wait for `frozen`.
    const early = startBin(["run", "--external", "--json", "--config", config]);
    early.child.stdin.write("snapshot-done\n");
    await waitFor("the frozen line", () => early.stdout().includes('"frozen"'));
    assert.ok(
      (await timeToWrite(f.mp, 300)) === Infinity,
      "still frozen: the early answer was not taken",
    );
    early.child.stdin.write("snapshot-failed\n");
    const ran = await early.done;
    const result = resultOf(ran.stdout);
    assert.equal(result.snapshotTaken, false, ran.stdout);
    assert.deepEqual(codes(result), ["SnapshotFailed"]);
    const log = readFileSync(f.path("log/vmsnap.jsonl"), "utf8").split("\n").filter(Boolean)
      .map((l) => JSON.parse(l));
    const discarded = log.find((r) => r.event === "snapshot-input-discarded");
    assert.ok(discarded, "the log says what was discarded");
    assert.equal(discarded.lines, 1);

    // Piped in before the run even started, then EOF: no answer at all.
    const piped = startBin(["run", "--external", "--json", "--config", config]);
    piped.child.stdin.end("snapshot-done\n");
    const eof = resultOf((await piped.done).stdout);
    assert.equal(eof.snapshotTaken, false);
    assert.match(eof.errors[0].message, /closed stdin/);
  } finally {
    f.cleanup();
  }
});

Deno.test("--external with a config that has snapshot.command: the caller gets the external timeout, not the command's (1 s)", async () => {
  const f = runFixture();
  try {
    // The config's command times out after 1 s; the caller answers after 2 s.
    const config = f.config({ snapshot: { command: [f.snap], timeoutInSeconds: 1 } });
    const peer = startBin(["run", "--external", "--json", "--config", config]);
    await waitFor("the frozen line", () => peer.stdout().includes('"frozen"'));
    await new Promise((resolve) => setTimeout(resolve, 2000));
    peer.child.stdin.end("snapshot-done\n");
    const ran = await peer.done;
    const result = resultOf(ran.stdout);
    assert.deepEqual(codes(result), [], ran.stdout);
    assert.equal(result.snapshotTaken, true);
    assert.equal(result.snapshot.kind, "external");
  } finally {
    f.cleanup();
  }
});

Deno.test("nothing frozen (fsFreezeEnabled false): no frozen event on stdout, only the snapshot and the result", async () => {
  const f = runFixture();
  try {
    const ran = await runBin(["run", "--json", "--config", f.config({ fsFreezeEnabled: false })]);
    const events = ran.stdout.split("\n").filter(Boolean).map((l) => JSON.parse(l).event);
    assert.equal(ran.code, 0, ran.stdout);
    assert.ok(!events.includes("frozen"), events.join(" "));
    assert.ok(!events.includes("thawed"), events.join(" "));
    assert.deepEqual(events.slice(-2), ["snapshot-taken", "result"]);
  } finally {
    f.cleanup();
  }
});
