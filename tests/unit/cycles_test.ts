import assert from "node:assert/strict";
import {
  findCycles,
  layerOf,
  LAYERS,
  projectGraph,
  upwardImports,
} from "../../scripts/check_cycles.ts";

Deno.test("the cycle check finds a cycle of type imports and names it shortest first", () => {
  const graph = new Map<string, Set<string>>([
    ["plugins/plugin.ts", new Set(["src/config/config.ts", "src/errors.ts"])],
    ["src/config/config.ts", new Set(["plugins/registry.ts"])],
    ["plugins/registry.ts", new Set(["plugins/mysql.ts"])],
    ["plugins/mysql.ts", new Set(["plugins/plugin.ts"])],
    ["src/errors.ts", new Set()],
  ]);
  assert.deepEqual(findCycles(graph), [[
    "plugins/mysql.ts",
    "plugins/plugin.ts",
    "src/config/config.ts",
    "plugins/registry.ts",
    "plugins/mysql.ts",
  ]]);
  graph.get("plugins/plugin.ts")!.delete("src/config/config.ts");
  assert.deepEqual(findCycles(graph), []);
});

Deno.test("vmsnap's own modules have no import cycle", () => {
  assert.deepEqual(findCycles(projectGraph(["mod.ts"])), []);
});

Deno.test("the layer check names an import that goes up a layer, and accepts one that goes down", () => {
  const graph = new Map<string, Set<string>>([
    ["src/sys/libc.ts", new Set(["src/errors.ts"])],
    ["src/config/config.ts", new Set(["src/sys/libc.ts", "plugins/registry.ts"])],
    ["plugins/registry.ts", new Set(["src/config/config.ts"])],
    ["src/cli/main.ts", new Set(["src/run/sequence.ts", "src/hook/hook.ts"])],
    ["src/hook/hook.ts", new Set(["src/cli/main.ts"])],
  ]);
  assert.deepEqual(upwardImports(graph), [
    ["src/config/config.ts", "plugins/registry.ts"],
    ["src/hook/hook.ts", "src/cli/main.ts"],
  ]);
  assert.equal(LAYERS[layerOf("src/errors.ts")].name, "src/*.ts (shared vocabulary)");
  assert.equal(layerOf("tests/helpers.ts"), -1);
});
