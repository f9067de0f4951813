/**
 * A freeze-pool worker thread (src/freeze/pool.ts): loads its own libc
 * binding, says it is ready, then blocks in `Atomics.wait` until the main
 * thread hands it syncfs/FIFREEZE/FITHAW jobs. A second entrypoint of the
 * compiled binary (scripts/build.ts).
 *
 * @module
 */
import { loadFreezeLibc } from "../sys/freeze_libc.ts";
import { poolGeneration, type PoolReady, type PoolStart, poolViews, workerLoop } from "./pool.ts";

// deno-lint-ignore no-explicit-any
const scope = globalThis as any;

scope.onmessage = async (event: MessageEvent<PoolStart>) => {
  scope.onmessage = null;
  const { buffer, capacity, thread } = event.data;
  const views = poolViews(buffer, capacity);
  // Read before saying ready: a generation the main thread starts right after is never missed.
  const seen = poolGeneration(views);
  let libc;
  try {
    libc = await loadFreezeLibc();
  } catch (error) {
    scope.postMessage({ ok: false, error: (error as Error).message } satisfies PoolReady);
    return;
  }
  scope.postMessage({ ok: true } satisfies PoolReady);
  workerLoop(views, libc, { thread, seen });
  scope.close?.();
};
