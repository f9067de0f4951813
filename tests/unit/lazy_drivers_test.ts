/**
 * The database drivers load only when a plugin of their type runs: in the
 * module graph of `mod.ts` every edge to a driver is a dynamic `import()` or
 * a type-only import, so `vmsnap --version`, `help` and `check` on a
 * script-only config never evaluate them (issue 12: start-up).
 */
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { join } from "node:path";
import process from "node:process";
import { ROOT } from "../helpers.ts";

const DRIVERS = /^(mysql2|postgres|mongodb|bson|node:sqlite)(\/|$)/;

Deno.test("drivers are imported dynamically (or for types only), never at start", () => {
  const graph = JSON.parse(
    execFileSync(process.execPath, ["info", "--json", join(ROOT, "mod.ts")], {
      cwd: ROOT,
      encoding: "utf8",
      maxBuffer: 64 * 1024 * 1024,
    }),
  ) as {
    modules: {
      specifier: string;
      dependencies?: { specifier: string; code?: unknown; isDynamic?: boolean }[];
    }[];
  };
  const edges = graph.modules.filter((m) => m.specifier.startsWith("file://")).flatMap((m) =>
    (m.dependencies ?? []).filter((d) => DRIVERS.test(d.specifier)).map((d) => ({
      from: m.specifier.slice(`file://${ROOT}`.length),
      ...d,
    }))
  );
  assert.ok(
    ["mysql2", "postgres", "mongodb", "node:sqlite"].every((driver) =>
      edges.some((e) => e.specifier === driver && e.isDynamic)
    ),
    `every driver is loaded somewhere: ${JSON.stringify(edges.map((e) => e.specifier))}`,
  );
  const eager = edges.filter((e) => e.code !== undefined && !e.isDynamic);
  assert.deepEqual(eager.map((e) => `${e.from} → ${e.specifier}`), []);
});
