import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { parseMountinfo, readMounts, unescapeMountPath } from "../../src/sys/mountinfo.ts";
import { ROOT } from "../helpers.ts";

const fixture = (name: string) => readFileSync(join(ROOT, "tests", "fixtures", name), "utf8");

Deno.test("parses every field of a mountinfo line (proc(5) example)", () => {
  const { mounts, bad } = parseMountinfo(
    "36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue\n",
  );
  assert.deepEqual(bad, []);
  assert.deepEqual(mounts[0], {
    mountId: 36,
    parentId: 35,
    device: "98:0",
    root: "/mnt1",
    mountPoint: "/mnt2",
    mountOptions: ["rw", "noatime"],
    optionalFields: ["master:1"],
    fsType: "ext3",
    source: "/dev/root",
    superOptions: ["rw", "errors=continue"],
  });
});

Deno.test("octal escapes in paths are decoded", () => {
  assert.equal(unescapeMountPath("/mnt/my\\040data\\011tab\\134back"), "/mnt/my data\ttab\\back");
  const { mounts } = parseMountinfo(fixture("mountinfo_vm.txt"));
  assert.ok(mounts.some((m) => m.mountPoint === "/mnt/my data"));
});

Deno.test("several optional fields, and none", () => {
  const { mounts } = parseMountinfo(fixture("mountinfo_vm.txt"));
  assert.deepEqual(mounts.find((m) => m.mountPoint === "/mnt/my data")?.optionalFields, [
    "shared:32",
    "master:1",
  ]);
  const { mounts: none } = parseMountinfo("1 0 8:1 / / rw - ext4 /dev/sda1 rw\n");
  assert.deepEqual(none[0].optionalFields, []);
});

Deno.test("malformed lines are set aside, not fatal", () => {
  const { mounts, bad } = parseMountinfo("garbage\n1 0 8:1 / / rw - ext4 /dev/sda1 rw\n1 2 3\n");
  assert.equal(mounts.length, 1);
  assert.deepEqual(bad, ["garbage", "1 2 3"]);
});

Deno.test("real fixture files parse completely", () => {
  for (const name of ["mountinfo_vm.txt", "mountinfo_container.txt"]) {
    const text = fixture(name);
    const { mounts, bad } = parseMountinfo(text);
    assert.deepEqual(bad, [], name);
    assert.equal(mounts.length, text.trim().split("\n").length, name);
  }
});

Deno.test("this machine's own mount table parses and contains /", () => {
  assert.ok(readMounts().some((m) => m.mountPoint === "/"));
});
