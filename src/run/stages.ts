/**
 * Plugin order: every plugin has a `stage` (an integer, default 0). Quiesce
 * runs the stages in ascending order, the plugins of one stage in parallel;
 * resume runs them in descending order. So an application's writers (stage
 * 0, a script that stops them) are stopped before its database is locked
 * (stage 1), and the database is unlocked before the writers come back.
 *
 * @module
 */

/**
 * Groups items by stage, lowest stage first (stable within a stage).
 *
 * @example
 * ```ts
 * import { byStage } from "./stages.ts";
 * byStage([{ n: "db", stage: 1 }, { n: "app" }], (p) => p.stage); // [[{ n: "app" }], [{ n: "db", stage: 1 }]]
 * ```
 */
export function byStage<T>(items: T[], stageOf: (item: T) => number | undefined): T[][] {
  const stages = new Map<number, T[]>();
  for (const item of items) {
    const stage = stageOf(item) ?? 0;
    stages.set(stage, [...stages.get(stage) ?? [], item]);
  }
  return [...stages.entries()].sort(([a], [b]) => a - b).map(([, group]) => group);
}

/**
 * Runs `step` over the items stage by stage: ascending for quiesce,
 * descending for resume, each stage's items in parallel. After each stage of
 * a quiesce, `goOn` decides whether the next stage starts (a failed quiesce
 * without continueBackupOnFailure stops there; what was not started is not
 * resumed either).
 *
 * @example
 * ```ts
 * import { runStaged } from "./stages.ts";
 * const plugins = [{ name: "app", stage: 0 }, { name: "db", stage: 1 }];
 * await runStaged({
 *   items: plugins,
 *   stageOf: (p) => p.stage,
 *   order: "ascending",
 *   step: async (group) => console.log("quiesce", group.map((p) => p.name)),
 * });
 * ```
 */
export async function runStaged<T>(options: {
  items: T[];
  stageOf: (item: T) => number | undefined;
  order: "ascending" | "descending";
  step: (group: T[]) => Promise<void>;
  goOn?: () => boolean;
}): Promise<void> {
  const groups = byStage(options.items, options.stageOf);
  if (options.order === "descending") groups.reverse();
  for (const group of groups) {
    await options.step(group);
    if (options.goOn && !options.goOn()) return;
  }
}
