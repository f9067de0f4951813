import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { freezeLevels, planFreeze, type PlanOptions } from "../../src/freeze/plan.ts";
import { parseMountinfo } from "../../src/sys/mountinfo.ts";
import { ROOT } from "../helpers.ts";

const { mounts } = parseMountinfo(
  readFileSync(join(ROOT, "tests", "fixtures", "mountinfo_vm.txt"), "utf8"),
);
const noLoops: PlanOptions["loopBacking"] = () => undefined;
const points = (plan: ReturnType<typeof planFreeze>) => plan.targets.map((t) => t.mountPoint);
const reason = (plan: ReturnType<typeof planFreeze>, point: string) =>
  plan.skipped.filter((s) => s.mountPoint === point).map((s) => s.reason).join(" | ");

Deno.test("auto: local writable block-device filesystems of freezable types, children first", () => {
  const plan = planFreeze(mounts, { mounts: "auto", exclude: [], loopBacking: noLoops });
  assert.deepEqual(points(plan), [
    "/var/lib/mysql/binlog",
    "/mnt/images/vm",
    "/var/lib/mysql",
    "/mnt/my data",
    "/boot",
    "/data",
    "/",
  ]);
  assert.deepEqual(plan.problems, []);
});

Deno.test("auto: every other mount is skipped with its reason", () => {
  const plan = planFreeze(mounts, { mounts: "auto", exclude: [], loopBacking: noLoops });
  assert.match(reason(plan, "/proc"), /not backed by a block device/);
  assert.match(reason(plan, "/tmp"), /not backed by a block device/);
  assert.match(reason(plan, "/mnt/nfs"), /network filesystem/);
  assert.match(reason(plan, "/home/alice/gdrive"), /FUSE/);
  assert.match(reason(plan, "/boot/efi"), /type vfat does not support freezing/);
  assert.match(reason(plan, "/snap/core20/2015"), /squashfs does not support freezing/);
  assert.match(reason(plan, "/mnt/readonly"), /read-only/);
  // A bind mount of a subdirectory collapses into the mount of the filesystem's root.
  assert.match(reason(plan, "/srv/backups"), /same filesystem as \/var\/lib\/mysql/);
  // Two btrfs mounts of one filesystem (subvolumes): one entry, the root's.
  assert.match(reason(plan, "/home"), /same filesystem as \/mnt\/my data/);
  // Two mounts stacked on /data: only the top one is visible.
  assert.match(reason(plan, "/data"), /hidden under a later mount/);
  assert.equal(plan.targets.find((t) => t.mountPoint === "/data")?.device, "8:66");
  // Every mount is either a target or skipped.
  assert.equal(plan.targets.length + plan.skipped.length, mounts.length);
});

Deno.test("auto: freeze.exclude takes mount points and globs, by filesystem", () => {
  const plan = planFreeze(mounts, {
    mounts: "auto",
    exclude: ["/boot", "/var/lib/**", "/mnt/my?data/"],
    loopBacking: noLoops,
  });
  assert.deepEqual(points(plan), ["/mnt/images/vm", "/data", "/"]);
  assert.match(
    reason(plan, "/var/lib/mysql/binlog"),
    /excluded by freeze.exclude "\/var\/lib\/\*\*"/,
  );
  assert.match(reason(plan, "/var/lib/mysql"), /excluded/);
  // The bind mount of an excluded filesystem is excluded too.
  assert.match(reason(plan, "/srv/backups"), /excluded/);
});

Deno.test("auto: a loop filesystem is frozen before the filesystem holding its image", () => {
  // /mnt/images/vm is a loop filesystem mounted below /data, with its image on /var/lib/mysql.
  const loopBacking: PlanOptions["loopBacking"] = (source) =>
    source === "/dev/loop5" ? { device: "8:17", file: "/var/lib/mysql/vm.img" } : undefined;
  const order = points(planFreeze(mounts, { mounts: "auto", exclude: [], loopBacking }));
  assert.ok(order.indexOf("/mnt/images/vm") < order.indexOf("/var/lib/mysql"), order.join(" "));
  assert.ok(order.indexOf("/mnt/images/vm") < order.indexOf("/data"), order.join(" "));
  // Without a device, the file's path decides.
  const byPath: PlanOptions["loopBacking"] = (source) =>
    source === "/dev/loop5" ? { file: "/boot/images/vm.img" } : undefined;
  const order2 = points(planFreeze(mounts, { mounts: "auto", exclude: [], loopBacking: byPath }));
  assert.ok(order2.indexOf("/mnt/images/vm") < order2.indexOf("/boot"), order2.join(" "));
});

Deno.test("auto: a deep loop chain orders every dependent first", () => {
  const chain = parseMountinfo([
    "1 0 8:1 / / rw - ext4 /dev/sda1 rw",
    "2 1 7:1 / /a rw - ext4 /dev/loop1 rw",
    "3 1 7:2 / /b rw - ext4 /dev/loop2 rw",
    "4 1 7:3 / /c rw - ext4 /dev/loop3 rw",
  ].join("\n")).mounts;
  // loop3 (on /c) has its image on /b, loop2's image is on /a, loop1's on /.
  const backing: Record<string, string> = {
    "/dev/loop3": "7:2",
    "/dev/loop2": "7:1",
    "/dev/loop1": "8:1",
  };
  const plan = planFreeze(chain, {
    mounts: "auto",
    exclude: [],
    loopBacking: (s) => backing[s] ? { device: backing[s], file: "x" } : undefined,
  });
  assert.deepEqual(points(plan), ["/c", "/b", "/a", "/"]);
});

Deno.test("a list: kept in the given order, checked, a wrong order warned", () => {
  const loopBacking: PlanOptions["loopBacking"] = (source) =>
    source === "/dev/loop5" ? { device: "8:17", file: "/var/lib/mysql/vm.img" } : undefined;
  const plan = planFreeze(mounts, {
    mounts: ["/var/lib/mysql/", "/mnt/images/vm", "/srv/backups", "/", "/boot"],
    exclude: [],
    loopBacking,
  });
  assert.deepEqual(points(plan), ["/var/lib/mysql", "/mnt/images/vm", "/", "/boot"]);
  assert.match(reason(plan, "/srv/backups"), /same filesystem as \/var\/lib\/mysql/);
  assert.deepEqual(plan.warnings.map((w) => [w.code, w.path]), [
    ["FreezeOrder", "freeze.mounts[1]"],
    ["FreezeOrder", "freeze.mounts[4]"],
  ]);
  assert.match(
    plan.warnings[0].message,
    /freezes \/var\/lib\/mysql before \/mnt\/images\/vm, which has its loop image on it/,
  );
  assert.match(plan.warnings[1].message, /freezes \/ before \/boot, which is mounted below it/);
  assert.match(reason(plan, "/data"), /not in freeze.mounts/);
});

Deno.test("a list: a path that is not a mount point, and a filesystem that cannot freeze", () => {
  const plan = planFreeze(mounts, {
    mounts: ["/var/lib/mysql/data", "/tmp", "/mnt/nfs", "/nowhere"],
    exclude: [],
    loopBacking: noLoops,
  });
  assert.deepEqual(plan.targets, []);
  assert.deepEqual(plan.problems.map((p) => [p.code, p.path]), [
    ["FreezeMountNotFound", "freeze.mounts[0]"],
    ["FreezeNotSupported", "freeze.mounts[1]"],
    ["FreezeNotSupported", "freeze.mounts[2]"],
    ["FreezeMountNotFound", "freeze.mounts[3]"],
  ]);
  assert.match(plan.problems[0].message, /lies on the filesystem mounted at \/var\/lib\/mysql/);
  assert.match(plan.problems[3].message, /lies on the filesystem mounted at \/; list that/);
});

const levelPoints = (levels: ReturnType<typeof freezeLevels>) =>
  levels.map((level) => level.map((t) => t.mountPoint));

Deno.test("levels: independent filesystems share a level; a mount and the one under it never do", () => {
  const plan = planFreeze(mounts, { mounts: "auto", exclude: [], loopBacking: noLoops });
  assert.deepEqual(levelPoints(freezeLevels(plan.targets, noLoops)), [
    ["/var/lib/mysql/binlog", "/mnt/images/vm", "/mnt/my data", "/boot", "/data"],
    ["/var/lib/mysql"],
    ["/"],
  ]);
});

Deno.test("levels: a loop filesystem goes in a level before the one holding its image; chains stay in order", () => {
  const chain = parseMountinfo([
    "1 0 8:1 / / rw - ext4 /dev/sda1 rw",
    "2 1 7:1 / /a rw - ext4 /dev/loop1 rw",
    "3 1 7:2 / /b rw - ext4 /dev/loop2 rw",
    "4 1 7:3 / /c rw - ext4 /dev/loop3 rw",
    "5 1 8:2 / /d rw - ext4 /dev/sdb1 rw",
  ].join("\n")).mounts;
  const backing: Record<string, string> = { "/dev/loop3": "7:2", "/dev/loop2": "7:1" };
  const loopBacking: PlanOptions["loopBacking"] = (s) =>
    backing[s] ? { device: backing[s], file: "x" } : undefined;
  const plan = planFreeze(chain, { mounts: "auto", exclude: [], loopBacking });
  assert.deepEqual(levelPoints(freezeLevels(plan.targets, loopBacking)), [
    ["/c", "/d"],
    ["/b"],
    ["/a"],
    ["/"],
  ]);
});

Deno.test("levels: an explicit list in the wrong order keeps that order (one level each)", () => {
  const plan = planFreeze(mounts, {
    mounts: ["/var/lib/mysql", "/var/lib/mysql/binlog", "/boot"],
    exclude: [],
    loopBacking: noLoops,
  });
  assert.deepEqual(levelPoints(freezeLevels(plan.targets, noLoops)), [
    ["/var/lib/mysql", "/boot"],
    ["/var/lib/mysql/binlog"],
  ]);
});
