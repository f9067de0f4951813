/**
 * The defaults that more than one module needs, each written once: the
 * config's paths and timeouts (the config's field specs, `vmsnap init`, the
 * man page and `install` read them), the freeze's limits and verify's. A default that
 * only one config key has stays beside that key in its field spec
 * (src/config/keys.ts, each plugin's fields), where the validator, the JSON
 * Schema and the plugin's config type read it.
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

/** Where Azure's framework and vmsnap look for the config. */
export const DEFAULT_CONFIG_PATH = "/etc/azure/VMSnapshotScriptPluginConfig.json";

/** Where vmsnap keeps its lock and markers unless the config says otherwise (`stateDir`). */
export const DEFAULT_STATE_DIR = "/var/lib/vmsnap";

/** The log file unless `log.file` says otherwise. */
export const DEFAULT_LOG_FILE = "/var/log/vmsnap/vmsnap.jsonl";

/**
 * Where the Prometheus textfile goes unless `metrics.textfile` says otherwise
 * (node_exporter's directory on Debian).
 */
export const DEFAULT_METRICS_FILE = "/var/lib/prometheus/node-exporter/vmsnap.prom";

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

// ── consistency groups (src/group/) ──────────────────────────────────────────

/** An etcd call's deadline when its caller gives none. */
export const ETCD_REQUEST_TIMEOUT_MS = 2_000;

/** The longest one attempt on one etcd endpoint may take before the next endpoint is tried. */
export const ETCD_ATTEMPT_TIMEOUT_MS = 1_000;

/**
 * The TTL of a group member's etcd lease: a member that dies, is stopped or
 * loses etcd is seen as gone this long after its last keep-alive (etcd's
 * minimum is about 2 s). Keep-alives go every third of it or of
 * {@linkcode GROUP_ETCD_LOSS_MS}, whichever is shorter.
 */
export const GROUP_LEASE_TTL_SECONDS = 5;

/**
 * How long a member goes on without an answer from etcd (to its keep-alives,
 * or with its watch broken) before it counts itself cut off and aborts
 * (below the lease TTL, so that it gives up before the others count it gone).
 */
export const GROUP_ETCD_LOSS_MS = 3_000;

/** How long members started independently have to join one group run. */
export const GROUP_JOIN_TIMEOUT_SECONDS = 60;

/** `group.barrierTimeoutSeconds` when the config does not set it. */
export const GROUP_BARRIER_TIMEOUT_SECONDS = 30;

/** How long a finished group run's records stay in etcd (a lease: etcd removes them). */
export const GROUP_RETENTION_SECONDS = 7 * 24 * 3600;

/** How many group runs a group keeps in etcd at most (older ones are deleted by the next run). */
export const GROUP_KEEP_RUNS = 50;

/** After its own release, how long a member waits for the others' reports before it says "pending". */
export const GROUP_OUTCOME_WAIT_MS = 2_000;

/**
 * How long after `vmsnap install` a backup agent that runs it (qemu-ga's
 * `guest-exec`) is restarted: long enough for the caller to read the
 * install's answer (`guest-exec-status`), which the restart would lose.
 */
export const AGENT_RESTART_DELAY_SECONDS = 10;
