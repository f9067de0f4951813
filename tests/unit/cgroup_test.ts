import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import {
  cgroup2OrMount,
  createProcessCgroup,
  findCgroup2,
  joinAndExecArgv,
} from "../../src/sys/cgroup.ts";
import { secureDir, waitFor } from "../helpers.ts";

const V1 = "32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu";

Deno.test("findCgroup2: the cgroup2 mount (unified, hybrid or none) and this process's cgroup in it", () => {
  const { dir, cleanup } = secureDir("cgroup-");
  try {
    const files = (mountinfo: string[], cgroup: string) => {
      writeFileSync(join(dir, "mountinfo"), mountinfo.join("\n") + "\n");
      writeFileSync(join(dir, "cgroup"), cgroup);
      return { mountinfo: join(dir, "mountinfo"), cgroup: join(dir, "cgroup") };
    };
    const unified = "29 23 0:26 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate";
    assert.deepEqual(
      findCgroup2(files([unified], "0::/system.slice/vmsnap.service\n")),
      { mountPoint: "/sys/fs/cgroup", own: "/sys/fs/cgroup/system.slice/vmsnap.service" },
    );
    const hybrid = "41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw";
    assert.deepEqual(
      findCgroup2(files([V1, hybrid], "9:name=systemd:/\n1:cpu:/\n0::/\n")),
      { mountPoint: "/sys/fs/cgroup/unified", own: "/sys/fs/cgroup/unified" },
    );
    // cgroup v1 only: none, and the runner falls back to process groups and the tag.
    assert.equal(findCgroup2(files([V1], "1:cpu:/\n")), undefined);
    // A mount of a subtree that does not hold this process is no use.
    const sub = "50 31 0:38 /other /mnt/cg rw - cgroup2 cgroup2 rw";
    assert.equal(findCgroup2(files([sub], "0::/mine\n")), undefined);
  } finally {
    cleanup();
  }
});

Deno.test("createProcessCgroup: made under this process's cgroup, removed on release; a dead vmsnap's empty cgroup is swept", () => {
  const home = findCgroup2();
  assert.ok(home, "this machine has a cgroup2 hierarchy (/sys/fs/cgroup/unified)");
  const stale = join(home.own, "vmsnap-99999999-1");
  mkdirSync(stale);
  const cgroup = createProcessCgroup(home);
  assert.ok(cgroup);
  try {
    assert.ok(cgroup.path.startsWith(`${home.own}/vmsnap-`));
    assert.deepEqual(cgroup.members(), []);
    assert.equal(cgroup.populated(), false);
    assert.equal(existsSync(stale), false, "the empty cgroup of a dead pid was removed");
  } finally {
    assert.equal(cgroup.release(), true);
  }
  assert.equal(existsSync(cgroup.path), false);
});

Deno.test("cgroup2OrMount: with no cgroup2 mounted (a cgroup-v1 VM), a private one is mounted and tracks and kills like the system's", async () => {
  const { dir, cleanup } = secureDir("cgroup-");
  const mountPoint = join(dir, "cgroup2");
  try {
    // This machine's mount table without its cgroup2 mount: what a cgroup-v1 VM shows.
    const v1Only = join(dir, "mountinfo");
    writeFileSync(
      v1Only,
      readFileSync("/proc/self/mountinfo", "utf8").split("\n")
        .filter((line) => !line.includes(" - cgroup2 ")).join("\n"),
    );
    assert.equal(findCgroup2({ mountinfo: v1Only }), undefined);
    const home = cgroup2OrMount(mountPoint, { mountinfo: v1Only });
    assert.equal(home?.mountPoint, mountPoint);
    assert.ok(
      readFileSync("/proc/self/mountinfo", "utf8").includes(` ${mountPoint} `),
      "mounted",
    );
    const cgroup = createProcessCgroup(home)!;
    assert.ok(cgroup.path.startsWith(mountPoint));
    const child = spawn("/bin/sh", joinAndExecArgv(cgroup.path, ["/bin/sleep", "300"]).slice(1), {
      stdio: "ignore",
    });
    await waitFor("the child in its cgroup", () => cgroup.members().includes(child.pid!));
    cgroup.kill();
    await waitFor("the cgroup to empty", () => !cgroup.populated());
    assert.equal(cgroup.release(), true);
  } finally {
    spawnSync("/usr/bin/umount", [mountPoint]);
    cleanup();
  }
});
