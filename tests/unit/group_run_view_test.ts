/**
 * The rules that turn a run's records into its state (src/group/run_view.ts),
 * in etcd's revision order: who is missing at a barrier, who is lost, and
 * the group's consistency: the lowest reported, `none` when an abort came
 * before the last report, when a member was lost, or when a member reported
 * a snapshot without having passed the `held` barrier; `pending` otherwise.
 */
import assert from "node:assert/strict";
import type { Kv } from "../../src/group/etcd.ts";
import { groupKeys, parseRunKey } from "../../src/group/keys.ts";
import { RunView } from "../../src/group/run_view.ts";
import { runState } from "../../src/group/status.ts";

const keys = groupKeys("shop");
const DELETE = Symbol("delete");
const RUN = "r1";

/** A view with meta for members a and b, and the given writes applied in revision order. */
function view(...writes: [string, unknown?][]): RunView {
  const v = new RunView(keys.runPrefix(RUN));
  v.meta = {
    runId: RUN,
    members: ["a", "b"],
    createdBy: "a",
    createdAt: "",
    joinTimeoutMs: 1000,
    leaseTtlSeconds: 5,
    retentionLease: "1",
    runLease: "2",
  };
  writes.forEach(([path, value], i) => {
    const kv: Kv = {
      key: keys.runPrefix(RUN) + path,
      value: value === undefined || value === DELETE ? "" : JSON.stringify(value),
      createRevision: i + 10,
      modRevision: i + 10,
      version: 1,
      lease: "0",
    };
    v.apply(value === DELETE ? "delete" : "put", kv);
  });
  return v;
}

const joined = (m: string, more: Record<string, number> = {}) =>
  [`member/${m}`, { member: m, phases: { joined: 1, ...more } }] as [string, unknown];
const alive = (m: string) => [`alive/${m}`] as [string, unknown?];
const gone = (m: string) => [`alive/${m}`, DELETE] as [string, unknown];
const report = (m: string, consistency: string, passed = ["joined", "held"]) =>
  [`report/${m}`, { consistency, snapshotTaken: consistency !== "none", passed }] as [
    string,
    unknown,
  ];
const abort = (m: string) =>
  ["abort", { member: m, by: m, code: "GroupAborted", message: "x" }] as [string, unknown];

Deno.test("run view: barriers wait for exactly the run's members", () => {
  const v = view(joined("a", { held: 5 }), alive("a"), joined("b"), alive("b"));
  assert.deepEqual(v.missing("joined"), []);
  assert.deepEqual(v.missing("held"), ["b"]);
  assert.equal(runState(v), "running");
  assert.equal(runState(view(joined("a"), alive("a"))), "joining");
});

Deno.test("run view: the group's consistency is the lowest reported, once all reported", () => {
  const v = view(joined("a"), alive("a"), joined("b"), alive("b"), report("a", "application"));
  assert.equal(v.consistency(), "pending");
  const done = view(
    joined("a"),
    alive("a"),
    joined("b"),
    alive("b"),
    report("a", "application"),
    report("b", "filesystem"),
    gone("a"),
    gone("b"),
  );
  assert.equal(done.consistency(), "filesystem");
  assert.deepEqual(done.lost(), []);
  assert.equal(runState(done), "complete");
});

Deno.test("run view: an abort before the last report, a lost member, or a snapshot before the barrier make it none", () => {
  const early = view(
    joined("a"),
    alive("a"),
    joined("b"),
    alive("b"),
    report("a", "application"),
    abort("b"),
    report("b", "none"),
  );
  assert.equal(early.consistency(), "none");
  assert.equal(runState(early), "aborted");
  // An abort recorded after every member reported does not undo the snapshots.
  const late = view(
    joined("a"),
    alive("a"),
    joined("b"),
    alive("b"),
    report("a", "application"),
    report("b", "application"),
    abort("b"),
  );
  assert.equal(late.consistency(), "application");
  const lost = view(joined("a"), alive("a"), joined("b"), alive("b"), gone("b"));
  assert.deepEqual(lost.lost(), ["b"]);
  assert.equal(lost.consistency(), "none");
  assert.equal(runState(lost), "lost");
  assert.deepEqual(lost.ended(), { ended: true, reason: "member b was lost before reporting" });
  const skipped = view(
    joined("a"),
    alive("a"),
    joined("b"),
    alive("b"),
    report("a", "application"),
    report("b", "application", ["joined"]),
  );
  assert.equal(skipped.consistency(), "none", "b's snapshot did not come after the held barrier");
});

Deno.test("run keys: only the run's own keys are read", () => {
  const prefix = keys.runPrefix(RUN);
  assert.deepEqual(parseRunKey(prefix, `${prefix}alive/a`), { kind: "alive", member: "a" });
  assert.deepEqual(parseRunKey(prefix, `${prefix}abort`), { kind: "abort" });
  assert.deepEqual(parseRunKey(prefix, `${prefix}member/a/extra`), { kind: "other" });
  assert.deepEqual(parseRunKey(prefix, `${keys.runPrefix("r2")}member/a`), { kind: "other" });
  assert.throws(() => groupKeys("a/b"), /not allowed/);
});
