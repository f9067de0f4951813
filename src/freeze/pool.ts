/**
 * A small pool of worker threads that issue syncfs(2) and FIFREEZE/FITHAW on
 * several filesystems at once. An FFI call blocks the thread that makes it,
 * and FIFREEZE first flushes its filesystem: frozen one after another, a
 * writer on the first of eight filesystems waits for all eight flushes; issued
 * together, for the slowest one.
 *
 * The pool is started off the critical path (while the run prepares and
 * quiesces). Each worker holds its own libc binding and blocks in
 * `Atomics.wait` on a shared buffer. {@linkcode FreezePool.run} writes the
 * descriptors (the main thread's, shared by every thread of the process),
 * wakes the workers, takes jobs itself, and blocks until every worker is done:
 * no event-loop turn and no message on the hot path. Job i goes to thread
 * i mod (workers + 1), so up to workers + 1 calls are issued together, every
 * one of them whatever the others return; with `stopOnFailure`, a thread's
 * later jobs are not started once one failed.
 *
 * @module
 */
import { FIFREEZE, FITHAW, type FreezeLibc } from "../sys/freeze_libc.ts";

/** What a pool job does with its descriptor. */
export type PoolOp = "sync" | "freeze" | "thaw";

/** One job's outcome; `started` false when it was never started (`stopOnFailure`). */
export type PoolResult =
  | { started: false }
  | {
    started: true;
    /** 0, or -errno. */
    result: number;
    ms: number;
    /** Which thread ran it: 0 the calling thread, 1.. a worker. */
    thread: number;
  };

/** Worker threads that run syncfs/FIFREEZE/FITHAW concurrently. */
export interface FreezePool {
  /** How many worker threads (the calling thread takes part too). */
  readonly workers: number;
  /**
   * Resolves true once every worker has loaded libc; false on an error, or
   * when they are not all up `timeoutMs` after the pool started (so a caller
   * that comes late never waits).
   */
  ready(timeoutMs: number): Promise<boolean>;
  /**
   * Runs `op` on every descriptor, concurrently, and blocks until all are
   * done. Results are in the order of `fds`.
   */
  run(op: PoolOp, fds: readonly number[], options: { stopOnFailure: boolean }): PoolResult[];
  /** Ends the workers. */
  close(): void;
}

// Layout of the shared buffer: a control block, then per job [fd, result, thread, state] and ms.
const GEN = 0; // bumped to wake the workers
const OP = 1;
const COUNT = 2;
const STRIDE = 3; // threads taking part: thread k takes jobs k, k + STRIDE, ...
const DONE = 4; // workers done with this generation
const FAILED = 5;
const STOP_ON_FAILURE = 6;
const CONTROL_BYTES = 32;
const JOB_INTS = 4;
const STARTED = 1;
const OPS: Record<PoolOp | "exit", number> = { sync: 1, freeze: 2, thaw: 3, exit: 9 };
/** What a job reports when the thread's call threw instead of returning (never an errno). */
export const POOL_CALL_THREW = 1000;

/** The views of one shared buffer. */
export interface PoolViews {
  control: Int32Array;
  jobs: Int32Array;
  ms: Float64Array;
}

/**
 * The generation a worker reads before it says it is ready.
 *
 * @example
 * ```ts
 * import { poolGeneration, poolViews } from "./pool.ts";
 * const seen = poolGeneration(poolViews(new SharedArrayBuffer(1024), 4));
 * ```
 */
export function poolGeneration(views: PoolViews): number {
  return Atomics.load(views.control, GEN);
}

/**
 * The views over a pool's shared buffer (also built by each worker).
 *
 * @example
 * ```ts
 * import { poolViews } from "./pool.ts";
 * const { control, jobs, ms } = poolViews(new SharedArrayBuffer(1024), 4);
 * ```
 */
export function poolViews(buffer: SharedArrayBuffer, capacity: number): PoolViews {
  return {
    control: new Int32Array(buffer, 0, CONTROL_BYTES / 4),
    jobs: new Int32Array(buffer, CONTROL_BYTES, capacity * JOB_INTS),
    ms: new Float64Array(buffer, CONTROL_BYTES + capacity * JOB_INTS * 4, capacity),
  };
}

function call(libc: FreezeLibc, op: number, fd: number): number {
  if (op === OPS.sync) return libc.syncfs(fd);
  return libc.ioctl(fd, op === OPS.freeze ? FIFREEZE : FITHAW);
}

/**
 * Runs this thread's jobs (k, k + stride, ...: each call of a level on its own
 * thread when there are threads enough). With `stopOnFailure`, a thread's
 * later jobs are not started once any job failed.
 */
function drain(views: PoolViews, libc: FreezeLibc, thread: number): void {
  const { control, jobs, ms } = views;
  const op = control[OP];
  const count = control[COUNT];
  const stride = control[STRIDE];
  const stopOnFailure = control[STOP_ON_FAILURE] === 1;
  for (let job = thread; job < count; job += stride) {
    // Each thread's first job is issued whatever the others did: a level goes out together.
    if (stopOnFailure && job !== thread && Atomics.load(control, FAILED) === 1) return;
    const fd = jobs[job * JOB_INTS];
    const started = performance.now();
    let result: number;
    try {
      result = call(libc, op, fd);
    } catch {
      result = -POOL_CALL_THREW;
    }
    ms[job] = performance.now() - started;
    jobs[job * JOB_INTS + 1] = result;
    jobs[job * JOB_INTS + 2] = thread;
    if (result < 0) Atomics.store(control, FAILED, 1);
    Atomics.store(jobs, job * JOB_INTS + 3, STARTED);
  }
}

/**
 * A worker's loop: waits for a generation, drains it, says it is done;
 * returns on `exit`. `seen` is the generation read before the worker said it
 * was ready (so a generation started right after is never missed).
 *
 * @example
 * ```ts
 * // src/freeze/worker.ts: the body of a pool worker.
 * import { loadFreezeLibc } from "../sys/freeze_libc.ts";
 * import { poolGeneration, poolViews, workerLoop } from "./pool.ts";
 * declare const buffer: SharedArrayBuffer;
 * const views = poolViews(buffer, 8);
 * const seen = poolGeneration(views);
 * workerLoop(views, await loadFreezeLibc(), { thread: 1, seen });
 * ```
 */
export function workerLoop(
  views: PoolViews,
  libc: FreezeLibc,
  options: { thread: number; seen: number },
): void {
  const { control } = views;
  let seen = options.seen;
  for (;;) {
    Atomics.wait(control, GEN, seen);
    seen = Atomics.load(control, GEN);
    if (control[OP] === OPS.exit) return;
    try {
      drain(views, libc, options.thread);
    } finally {
      Atomics.add(control, DONE, 1);
      Atomics.notify(control, DONE);
    }
  }
}

/** The message that starts a worker. */
export interface PoolStart {
  buffer: SharedArrayBuffer;
  capacity: number;
  thread: number;
}

/** A worker's first answer. */
export type PoolReady = { ok: true } | { ok: false; error: string };

/**
 * The worker's module: beside this one when run from source (Deno, `bun
 * run`); in a compiled Bun binary, the second entrypoint keeps its path from
 * the project root under the binary's root (`$bunfs/root/src/...`), while
 * this module is bundled into a chunk at that root (scripts/build.ts).
 */
function workerUrl(): string {
  const compiledRoot = import.meta.url.match(/^file:\/\/\/?\$bunfs\/root\//)?.[0];
  return compiledRoot
    ? `${compiledRoot}src/freeze/worker.ts`
    : new URL("./worker.ts", import.meta.url).href;
}

/** Starts the worker threads; resolves true once every one has loaded libc. */
function startWorkers(
  views: { buffer: SharedArrayBuffer; capacity: number; workers: number },
): { threads: Worker[]; all: Promise<boolean> } {
  const { buffer, capacity } = views;
  const url = workerUrl();
  const threads: Worker[] = [];
  const answers: Promise<boolean>[] = [];
  for (let thread = 1; thread <= views.workers; thread++) {
    // smol: Bun's smaller heap (~2-3 MiB a worker); type module: Deno's workers.
    const worker = new Worker(url, { type: "module", smol: true } as WorkerOptions);
    // A pool must never keep the process alive (Bun; Deno's workers have no unref).
    (worker as { unref?: () => void }).unref?.();
    threads.push(worker);
    answers.push(
      new Promise<boolean>((resolve) => {
        worker.onmessage = (event: MessageEvent<PoolReady>) => resolve(event.data?.ok === true);
        worker.onerror = (event) => {
          event.preventDefault?.();
          resolve(false);
        };
      }),
    );
    worker.postMessage({ buffer, capacity, thread } satisfies PoolStart);
  }
  return { threads, all: Promise.all(answers).then((oks) => oks.every(Boolean)) };
}

/**
 * One generation of jobs: the descriptors written, `helpers` workers woken,
 * this thread's share done, then every worker waited for (Atomics.wait: no
 * event-loop turn). Results in the order of `fds`.
 */
function runJobs(
  views: PoolViews,
  libc: FreezeLibc,
  job: { op: PoolOp; fds: readonly number[]; stopOnFailure: boolean; helpers: number },
): PoolResult[] {
  const { control, jobs, ms } = views;
  const { fds, helpers } = job;
  fds.forEach((fd, i) => {
    jobs[i * JOB_INTS] = fd;
    jobs[i * JOB_INTS + 3] = 0;
  });
  control[OP] = OPS[job.op];
  control[COUNT] = fds.length;
  control[STRIDE] = helpers + 1;
  control[DONE] = 0;
  control[FAILED] = 0;
  control[STOP_ON_FAILURE] = job.stopOnFailure ? 1 : 0;
  if (helpers > 0) {
    // The plain writes above are visible to a worker once it reads the new generation.
    Atomics.add(control, GEN, 1);
    Atomics.notify(control, GEN);
  }
  drain(views, libc, 0);
  for (let done = Atomics.load(control, DONE); done < helpers; done = Atomics.load(control, DONE)) {
    Atomics.wait(control, DONE, done);
  }
  return fds.map((_, i): PoolResult =>
    jobs[i * JOB_INTS + 3] === STARTED
      ? {
        started: true,
        result: jobs[i * JOB_INTS + 1],
        ms: ms[i],
        thread: jobs[i * JOB_INTS + 2],
      }
      : { started: false }
  );
}

/**
 * Starts `workers` threads for up to `capacity` descriptors per call. Returns
 * at once: {@linkcode FreezePool.ready} says when they can be used. The
 * calling thread's own libc binding is `libc`.
 *
 * @example
 * ```ts
 * import { loadFreezeLibc } from "../sys/freeze_libc.ts";
 * import { startFreezePool } from "./pool.ts";
 * const pool = startFreezePool({ workers: 3, capacity: 4, libc: await loadFreezeLibc() });
 * try {
 *   if (await pool.ready(2000)) pool.run("sync", [5, 6, 7, 8], { stopOnFailure: false });
 * } finally {
 *   pool.close();
 * }
 * ```
 */
export function startFreezePool(
  options: { workers: number; capacity: number; libc: FreezeLibc },
): FreezePool {
  const { capacity, libc } = options;
  const buffer = new SharedArrayBuffer(CONTROL_BYTES + capacity * (JOB_INTS * 4 + 8));
  const views = poolViews(buffer, capacity);
  const { threads, all } = startWorkers({ buffer, capacity, workers: options.workers });
  const startedAt = performance.now();
  let closed = false;
  let usable = false;
  return {
    workers: options.workers,
    async ready(timeoutMs) {
      let timer: ReturnType<typeof setTimeout> | undefined;
      const late = new Promise<boolean>((resolve) => {
        timer = setTimeout(
          () => resolve(false),
          Math.max(0, startedAt + timeoutMs - performance.now()),
        );
      });
      usable = !closed && await Promise.race([all, late]);
      clearTimeout(timer);
      return usable;
    },
    run(op, fds, { stopOnFailure }) {
      if (fds.length > capacity) {
        throw new Error(`the freeze pool holds ${capacity} jobs, not ${fds.length}`);
      }
      // Not ready (or closed): the calling thread does every job, in order.
      const helpers = usable && !closed ? threads.length : 0;
      return runJobs(views, libc, { op, fds, stopOnFailure, helpers });
    },
    close() {
      if (closed) return;
      closed = true;
      views.control[OP] = OPS.exit;
      Atomics.add(views.control, GEN, 1);
      Atomics.notify(views.control, GEN);
      for (const worker of threads) worker.terminate();
    },
  };
}
