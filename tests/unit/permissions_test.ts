import assert from "node:assert/strict";
import { chmodSync, mkdirSync, symlinkSync } from "node:fs";
import { join } from "node:path";
import { runChecks } from "../../src/preflight/check.ts";
import { checkFile, resolveSecurely } from "../../src/sys/permissions.ts";
import { put, secureDir } from "../helpers.ts";
import { PERMISSION_CASES } from "../permission_cases.ts";

for (const c of PERMISSION_CASES) {
  Deno.test(`permission matrix (library): ${c.name}`, async () => {
    const { dir, cleanup } = secureDir();
    try {
      const report = await runChecks({ configPath: c.setup(dir) });
      if (c.expect === null) {
        assert.deepEqual(report.problems, [], "expected no problem");
        assert.equal(report.ok, true);
      } else {
        const hit = report.problems.find((p) => p.code === c.expect);
        assert.ok(hit, `expected ${c.expect}, got ${JSON.stringify(report.problems, null, 2)}`);
        assert.equal(report.ok, false);
        if (c.mentions) {
          assert.match(
            hit.message,
            new RegExp(c.mentions(dir).replace(/[.*+?^${}()|[\]\\]/g, "\\$&")),
          );
        }
        assert.match(hit.message, /Fix: /);
      }
    } finally {
      cleanup();
    }
  });
}

Deno.test("resolveSecurely follows links through directories and reports the real path", () => {
  const { dir, cleanup } = secureDir();
  try {
    put(join(dir, "real", "x.sh"), "x", 0o700);
    symlinkSync(join(dir, "real"), join(dir, "alias"));
    const resolved = resolveSecurely(join(dir, "alias", "x.sh"));
    assert.equal(resolved.realPath, join(dir, "real", "x.sh"));
    assert.deepEqual(resolved.unsafe, []);
    assert.ok(resolved.stat?.isFile());
  } finally {
    cleanup();
  }
});

Deno.test("resolveSecurely names every unsafe directory on the way", () => {
  const { dir, cleanup } = secureDir();
  try {
    put(join(dir, "a", "b", "x.sh"), "x", 0o700);
    chmodSync(join(dir, "a"), 0o775);
    chmodSync(join(dir, "a", "b"), 0o757);
    const { unsafe } = resolveSecurely(join(dir, "a", "b", "x.sh"));
    assert.equal(unsafe.length, 2);
    assert.match(unsafe[0], /a is writable by group \(mode 0775\)/);
    assert.match(unsafe[1], /b is writable by other \(mode 0757\)/);
  } finally {
    cleanup();
  }
});

Deno.test("a file under /tmp is refused because of /tmp itself", () => {
  const [problem] = checkFile("/tmp/does-not-matter.sh", {
    role: "script",
    notFound: "Pre-ScriptNotFound",
    permission: "InsufficientPermissionforPre-Script",
    what: "pre-script",
  });
  // Missing, but the walk judged /tmp before finding it absent: not-found wins.
  assert.equal(problem.code, "Pre-ScriptNotFound");
});

Deno.test("a relative script path is refused", () => {
  const [problem] = checkFile("pre.sh", {
    role: "script",
    notFound: "Pre-ScriptNotFound",
    permission: "InsufficientPermissionforPre-Script",
    what: "pre-script",
  });
  assert.equal(problem.code, "RelativePath");
});

Deno.test("a path through a regular file is not found, not a crash", () => {
  const { dir, cleanup } = secureDir();
  try {
    put(join(dir, "file"), "x", 0o600);
    mkdirSync(join(dir, "d"));
    const [problem] = checkFile(join(dir, "file", "x.sh"), {
      role: "script",
      notFound: "Pre-ScriptNotFound",
      permission: "InsufficientPermissionforPre-Script",
      what: "pre-script",
    });
    assert.equal(problem.code, "InsufficientPermissionforPre-Script");
    assert.match(problem.message, /is not a directory/);
  } finally {
    cleanup();
  }
});
