/**
 * Fails when the project's own modules import each other in a cycle, or when
 * a module imports from a layer above its own (type imports count: a cycle
 * of types is a cycle of concerns). Reads the module graph from
 * `deno info --json` for mod.ts and every module under src/ and plugins/,
 * and prints each cycle found, shortest first, then each upward import. The
 * layers are written down in docs/architecture.md.
 *
 * Usage: deno run -A scripts/check_cycles.ts
 *
 * @module
 */
import { execFileSync } from "node:child_process";
import { readdirSync } from "node:fs";
import { dirname, join, relative } from "node:path";
import process from "node:process";

const root = join(dirname(new URL(import.meta.url).pathname), "..");
const deno = join(root, "node_modules", "deno", "deno");

interface InfoModule {
  specifier: string;
  dependencies?: { code?: { specifier?: string }; type?: { specifier?: string } }[];
}

/** The project's module graph: file → the project files it imports (code or type). */
export function projectGraph(entries: string[]): Map<string, Set<string>> {
  const graph = new Map<string, Set<string>>();
  for (const entry of entries) {
    const info = JSON.parse(
      execFileSync(deno, ["info", "--json", entry], { cwd: root, encoding: "utf8" }),
    ) as { modules: InfoModule[] };
    for (const module of info.modules) {
      if (!module.specifier.startsWith(`file://${root}/`)) continue;
      const from = relative(root, new URL(module.specifier).pathname);
      if (from.startsWith("node_modules/")) continue;
      const edges = graph.get(from) ?? new Set<string>();
      graph.set(from, edges);
      for (const dep of module.dependencies ?? []) {
        for (const target of [dep.code?.specifier, dep.type?.specifier]) {
          if (!target?.startsWith(`file://${root}/`)) continue;
          const to = relative(root, new URL(target).pathname);
          if (!to.startsWith("node_modules/")) edges.add(to);
        }
      }
    }
  }
  return graph;
}

/** Every elementary cycle's shortest representative per strongly connected component. */
export function findCycles(graph: Map<string, Set<string>>): string[][] {
  // Tarjan's strongly connected components.
  let index = 0;
  const indices = new Map<string, number>();
  const low = new Map<string, number>();
  const stack: string[] = [];
  const onStack = new Set<string>();
  const components: string[][] = [];
  const visit = (v: string) => {
    indices.set(v, index);
    low.set(v, index++);
    stack.push(v);
    onStack.add(v);
    for (const w of graph.get(v) ?? []) {
      if (!indices.has(w)) {
        visit(w);
        low.set(v, Math.min(low.get(v)!, low.get(w)!));
      } else if (onStack.has(w)) low.set(v, Math.min(low.get(v)!, indices.get(w)!));
    }
    if (low.get(v) === indices.get(v)) {
      const component: string[] = [];
      let w: string;
      do {
        w = stack.pop()!;
        onStack.delete(w);
        component.push(w);
      } while (w !== v);
      if (component.length > 1 || graph.get(v)?.has(v)) components.push(component);
    }
  };
  for (const v of [...graph.keys()].sort()) if (!indices.has(v)) visit(v);
  // One concrete cycle per component: the shortest path back to its first member.
  return components.map((component) => {
    const members = new Set(component);
    const start = [...component].sort()[0];
    const previous = new Map<string, string>();
    const queue = [start];
    while (queue.length) {
      const v = queue.shift()!;
      for (const w of graph.get(v) ?? []) {
        if (!members.has(w)) continue;
        if (w === start) {
          const path = [v];
          while (path[0] !== start) path.unshift(previous.get(path[0])!);
          return [...path, start];
        }
        if (!previous.has(w)) {
          previous.set(w, v);
          queue.push(w);
        }
      }
    }
    return [start];
  });
}

/**
 * The layers, lowest first: a module may import from its own layer or a lower
 * one. A layer is a folder (its files and subfolders) or, for the shared
 * vocabulary at the bottom, the files directly in src/.
 */
export const LAYERS: readonly { name: string; holds: (path: string) => boolean }[] = [
  { name: "src/*.ts (shared vocabulary)", holds: (p) => /^src\/[^/]+\.ts$/.test(p) },
  { name: "src/sys/", holds: (p) => p.startsWith("src/sys/") },
  { name: "src/config/", holds: (p) => p.startsWith("src/config/") },
  { name: "plugins/", holds: (p) => p.startsWith("plugins/") },
  { name: "src/freeze/", holds: (p) => p.startsWith("src/freeze/") },
  { name: "src/state/", holds: (p) => p.startsWith("src/state/") },
  { name: "src/preflight/", holds: (p) => p.startsWith("src/preflight/") },
  { name: "src/group/", holds: (p) => p.startsWith("src/group/") },
  { name: "src/run/", holds: (p) => p.startsWith("src/run/") },
  { name: "src/verify/", holds: (p) => p.startsWith("src/verify/") },
  { name: "src/hook/", holds: (p) => p.startsWith("src/hook/") },
  { name: "src/cli/", holds: (p) => p.startsWith("src/cli/") },
  { name: "mod.ts", holds: (p) => p === "mod.ts" },
];

/** The layer of a module (its index in LAYERS), or -1 for a file outside them. */
export function layerOf(path: string): number {
  return LAYERS.findIndex((layer) => layer.holds(path));
}

/** Every import from a lower layer up to a higher one, as `from → to` pairs. */
export function upwardImports(graph: Map<string, Set<string>>): [string, string][] {
  const found: [string, string][] = [];
  for (const [from, targets] of [...graph.entries()].sort(([a], [b]) => a.localeCompare(b))) {
    const own = layerOf(from);
    if (own < 0) continue;
    for (const to of [...targets].sort()) {
      if (layerOf(to) > own) found.push([from, to]);
    }
  }
  return found;
}

function modulesUnder(dir: string): string[] {
  return readdirSync(join(root, dir), { recursive: true, encoding: "utf8" })
    .filter((name) => name.endsWith(".ts"))
    .map((name) => join(dir, name));
}

if (import.meta.main) {
  const entries = ["mod.ts", ...modulesUnder("src"), ...modulesUnder("plugins")];
  const graph = projectGraph(entries);
  const cycles = findCycles(graph);
  for (const cycle of cycles) console.error(`import cycle: ${cycle.join(" → ")}`);
  const upward = upwardImports(graph);
  for (const [from, to] of upward) {
    console.error(
      `upward import: ${from} (${LAYERS[layerOf(from)].name}) imports ${to} (${
        LAYERS[layerOf(to)].name
      }); see docs/architecture.md`,
    );
  }
  console.log(
    cycles.length || upward.length
      ? `${cycles.length} import cycle(s), ${upward.length} upward import(s)`
      : `no import cycles, no upward imports (${entries.length} modules)`,
  );
  process.exit(cycles.length || upward.length ? 1 : 0);
}
