/**
 * The defaults that more than one module needs, each written once.
 *
 * @module
 */

/** `snapshot.timeoutInSeconds` (command and external) when the config does not set it. */
export const DEFAULT_SNAPSHOT_TIMEOUT_SECONDS = 60;

/** The kernel's switch for expedited RCU grace periods (`freeze.expediteRcu`). */
export const RCU_EXPEDITED_PATH = "/sys/kernel/rcu_expedited";

/** `freeze.maxFrozenSeconds` when the config does not set it. */
export const DEFAULT_MAX_FROZEN_SECONDS = 60;

/** How long the agent waits for its freeze guard to come up. */
export const GUARD_START_TIMEOUT_MS = 10_000;

/** How long the agent waits for the guard's answer to `release`. */
export const GUARD_RELEASE_TIMEOUT_MS = 5_000;

/**
 * The most worker threads a run starts to syncfs/freeze filesystems
 * concurrently (the run's own thread takes a job too: 8 at once).
 */
export const FREEZE_POOL_MAX_WORKERS = 7;

/**
 * How long after their start (during quiesce) the freeze pool's threads may take to be up; a
 * freeze step that comes later does not wait for them.
 */
export const FREEZE_POOL_READY_TIMEOUT_MS = 2_000;

/** `vmsnap verify`: how long a restored server may take to finish its recovery. */
export const VERIFY_START_TIMEOUT_SECONDS = 900;

/** `vmsnap verify`: how long one check (CHECK TABLE of everything, pg_amcheck) may take. */
export const VERIFY_CHECK_TIMEOUT_SECONDS = 3600;

/** `vmsnap verify`: the size of the tmpfs that holds the overlays' upper layers (tmpfs `size=`). */
export const VERIFY_TMPFS_SIZE = "50%";

/** `vmsnap verify`: the service user each restored database runs as. */
export const VERIFY_SERVICE_USERS: Readonly<Record<string, string>> = {
  mysql: "mysql",
  postgresql: "postgres",
  redis: "redis",
  sqlite: "nobody",
};

/** `vmsnap verify`: a restored server's limits besides its address space (the machine's memory). */
export const VERIFY_SERVER_LIMITS = { openFiles: 65_536, processes: 4_096 };

/** `vmsnap verify`: how many reports `<stateDir>/verify/` keeps (the oldest go first). */
export const VERIFY_REPORTS_KEPT = 100;
