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
function view(...entries: ([string, unknown?] | [string, unknown][])[]): RunView {
  const writes = entries.flatMap((e) => (Array.isArray(e[0]) ? e : [e])) as [string, unknown?][];
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

const joined = (m: string, ...phases: string[]) =>
  [
    [`member/${m}`, { member: m }],
    ...["joined", ...phases].map((p, i) => [`phase/${p}/${m}`, { at: i }]),
  ] as [string, unknown][];
const alive = (m: string) => [`w/alive/${m}`] as [string, unknown?];
const gone = (m: string) => [`w/alive/${m}`, DELETE] as [string, unknown];
const report = (m: string, consistency: string, passed: Record<string, number> = { held: 1 }) =>
  [`w/report/${m}`, { consistency, snapshotTaken: consistency !== "none", passed }] as [
    string,
    unknown,
  ];
const abort = (m: string) =>
  ["w/abort", { member: m, by: m, code: "GroupAborted", message: "x" }] as [string, unknown];
const barrier = (phase: string) => [`w/barrier/${phase}`, ""] as [string, unknown];

Deno.test("run view: barriers wait for exactly the run's members", () => {
  const v = view(joined("a", "held"), alive("a"), joined("b"), alive("b"), barrier("joined"));
  assert.deepEqual(v.missing("joined"), []);
  assert.deepEqual(v.missing("held"), ["b"]);
  assert.equal(v.passed("held"), false);
  assert.equal(runState(v), "running");
  assert.equal(runState(view(joined("a"), alive("a"))), "joining");
  assert.deepEqual(v.member("a").phases, { joined: 0, held: 1 });
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
  // A member's own view learns of a joiner from its alive key alone (records are not watched).
  const watched = view(alive("a"), alive("b"), gone("b"));
  assert.deepEqual(watched.lost(), ["b"]);
  assert.equal(watched.member("b").state, "lost");
  assert.equal(lost.consistency(), "none");
  assert.equal(runState(lost), "lost");
  assert.deepEqual(lost.ended(), { ended: true, reason: "member b was lost before reporting" });
  const skipped = view(
    joined("a"),
    alive("a"),
    joined("b"),
    alive("b"),
    report("a", "application"),
    report("b", "application", { joined: 1 }),
  );
  assert.equal(skipped.consistency(), "none", "b's snapshot did not come after the held barrier");
});

Deno.test("run keys: only the run's own keys are read", () => {
  const prefix = keys.runPrefix(RUN);
  assert.deepEqual(parseRunKey(prefix, `${prefix}w/alive/a`), { kind: "alive", member: "a" });
  assert.deepEqual(parseRunKey(prefix, `${prefix}w/abort`), { kind: "abort" });
  assert.deepEqual(parseRunKey(prefix, `${prefix}w/barrier/held`), {
    kind: "barrier",
    phase: "held",
  });
  assert.deepEqual(parseRunKey(prefix, `${prefix}phase/held/a`), {
    kind: "phase",
    phase: "held",
    member: "a",
  });
  assert.deepEqual(parseRunKey(prefix, `${prefix}w/alive/a/b`), { kind: "other" });
  assert.deepEqual(parseRunKey(prefix, `${prefix}member/a/extra`), { kind: "other" });
  assert.deepEqual(parseRunKey(prefix, `${keys.runPrefix("r2")}member/a`), { kind: "other" });
  assert.throws(() => groupKeys("a/b"), /not allowed/);
});
