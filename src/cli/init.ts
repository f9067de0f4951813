/**
 * `vmsnap init [--detect] [--dry-run]`: a commented starter config for this
 * VM. It lists the filesystems `vmsnap check` would freeze today (explicitly,
 * so a mount added later is never frozen unplanned) and, with `--detect`, a
 * plugin entry for each database server running here (MariaDB/MySQL,
 * PostgreSQL, MongoDB: found by process name, reached through the sockets the
 * process listens on), each with a password-file placeholder and, in a
 * comment, the user and GRANT it needs. Written root-only (0600) and never
 * over an existing file (O_EXCL).
 *
 * @module
 */
import {
  closeSync,
  constants,
  existsSync,
  fchmodSync,
  mkdirSync,
  openSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  writeSync,
} from "node:fs";
import { hostname } from "node:os";
import process from "node:process";
import { dirname, join } from "node:path";
import { DEFAULT_LOG_FILE, DEFAULT_METRICS_FILE, DEFAULT_STATE_DIR } from "../config/config.ts";
import { VmsnapError } from "../errors.ts";
import { type FreezeTarget, planFreeze } from "../freeze/plan.ts";
import { readMounts } from "../sys/mountinfo.ts";

/** A database server found running. */
export interface FoundDatabase {
  kind: "mysql" | "postgresql" | "mongodb";
  /** The process name (mariadbd, mysqld, postgres, mongod). */
  process: string;
  pid: number;
  /** Unix sockets it listens on. */
  sockets: string[];
  /** TCP ports it listens on. */
  ports: number[];
}

const KINDS: Record<string, FoundDatabase["kind"]> = {
  mariadbd: "mysql",
  mysqld: "mysql",
  postgres: "postgresql",
  postmaster: "postgresql",
  mongod: "mongodb",
};

const read = (path: string) => {
  try {
    return readFileSync(path, "utf8");
  } catch {
    return "";
  }
};

/** Listening unix sockets: inode → path (from /proc/net/unix, __SO_ACCEPTCON set). */
function listeningUnix(): Map<string, string> {
  const out = new Map<string, string>();
  for (const line of read("/proc/net/unix").split("\n").slice(1)) {
    const f = line.trim().split(/\s+/);
    if (f.length >= 8 && (parseInt(f[3], 16) & 0x10000) !== 0 && f[7].startsWith("/")) {
      out.set(f[6], f[7]);
    }
  }
  return out;
}

/** Listening TCP sockets: inode → port. */
function listeningTcp(): Map<string, number> {
  const out = new Map<string, number>();
  for (const file of ["/proc/net/tcp", "/proc/net/tcp6"]) {
    for (const line of read(file).split("\n").slice(1)) {
      const f = line.trim().split(/\s+/);
      if (f.length >= 10 && f[3] === "0A") out.set(f[9], parseInt(f[1].split(":")[1], 16));
    }
  }
  return out;
}

/** The socket inodes a process holds open. */
function socketInodes(pid: number): string[] {
  try {
    return readdirSync(`/proc/${pid}/fd`).flatMap((fd) => {
      try {
        return readlinkSync(`/proc/${pid}/fd/${fd}`).match(/^socket:\[(\d+)\]$/)?.[1] ?? [];
      } catch {
        return [];
      }
    });
  } catch {
    return [];
  }
}

/**
 * The database servers running on this machine (root sees every process's
 * sockets). PostgreSQL's backends are left out: only the postmaster counts.
 *
 * @example
 * ```ts
 * import { detectDatabases } from "./init.ts";
 * detectDatabases().map((d) => `${d.process} ${d.sockets.join(",")}`);
 * ```
 */
export function detectDatabases(): FoundDatabase[] {
  const unix = listeningUnix();
  const tcp = listeningTcp();
  const found: FoundDatabase[] = [];
  const pids = readdirSync("/proc").filter((p) => /^\d+$/.test(p)).map(Number).sort((a, b) =>
    a - b
  );
  for (const pid of pids) {
    const name = read(`/proc/${pid}/comm`).trim();
    const kind = KINDS[name];
    if (!kind) continue;
    if (kind === "postgresql") {
      const ppid = read(`/proc/${pid}/stat`).replace(/^.*\) /s, "").split(" ")[1];
      if (KINDS[read(`/proc/${ppid}/comm`).trim()] === "postgresql") continue;
    }
    const inodes = socketInodes(pid);
    const sockets = inodes.flatMap((i) => unix.get(i) ?? []).sort();
    const ports = [...new Set(inodes.flatMap((i) => tcp.get(i) ?? []))].sort((a, b) => a - b);
    if (sockets.length === 0 && ports.length === 0) continue;
    found.push({ kind, process: name, pid, sockets, ports });
  }
  return found;
}

/** Options of {@link starterConfig}. */
export interface StarterOptions {
  /** Where the config will be; password files are placed beside it. */
  configPath: string;
  targets: FreezeTarget[];
  databases: FoundDatabase[];
  detect: boolean;
  now?: Date;
}

/** A plugin entry (and its comment) for a database found running. */
function pluginEntry(db: FoundDatabase, name: string, secretDir: string): string[] {
  const where = [...db.sockets, ...db.ports.map((p) => `TCP port ${p}`)].join(", ");
  const secret = join(secretDir, `${name}.${db.kind === "mongodb" ? "uri" : "password"}`);
  const make = `install -m 600 -o root -g root /dev/null ${secret}`;
  const lines = [`// ${db.process} (pid ${db.pid}) listening on ${where}.`];
  const entry: Record<string, unknown> = { type: db.kind, name };
  if (db.kind === "mysql") {
    const socket = db.sockets.find((s) => s.endsWith(".sock")) ?? db.sockets[0];
    if (socket) entry.socket = socket;
    else Object.assign(entry, { host: "127.0.0.1", port: db.ports[0] });
    entry.user = "vmsnap";
    entry.passwordFile = secret;
    lines.push(
      "// The user it connects as, created once (mariadb/mysql as root):",
      "//   CREATE USER 'vmsnap'@'localhost' IDENTIFIED BY 'PASSWORD';",
      // The binary log position needs BINLOG MONITOR (MariaDB 10.5+, whose server is
      // mariadbd) or REPLICATION CLIENT (MySQL, older MariaDB).
      db.process === "mariadbd"
        ? "//   GRANT RELOAD, PROCESS, BINLOG MONITOR ON *.* TO 'vmsnap'@'localhost';"
        : "//   GRANT RELOAD, PROCESS, REPLICATION CLIENT ON *.* TO 'vmsnap'@'localhost';",
      ...(db.process === "mariadbd" ? [] : [
        "//   -- MySQL 8 locks with LOCK INSTANCE FOR BACKUP, which needs BACKUP_ADMIN too:",
        "//   -- GRANT BACKUP_ADMIN ON *.* TO 'vmsnap'@'localhost';",
      ]),
      `// and its password alone in a root-only file: ${make}`,
    );
  } else if (db.kind === "postgresql") {
    const socket = db.sockets.find((s) => /\/\.s\.PGSQL\.\d+$/.test(s));
    if (socket) {
      entry.host = dirname(socket);
      entry.port = Number(socket.replace(/^.*\.s\.PGSQL\./, ""));
    } else Object.assign(entry, { host: "127.0.0.1", port: db.ports[0] });
    entry.user = "vmsnap";
    entry.passwordFile = secret;
    lines.push(
      "// The role it connects as, created once (psql as postgres):",
      "//   CREATE ROLE vmsnap LOGIN PASSWORD 'PASSWORD';",
      "//   GRANT pg_checkpoint TO vmsnap;",
      `// and its password alone in a root-only file: ${make}`,
      "// (and pg_hba.conf must let vmsnap log in with a password on this socket).",
    );
  } else {
    const port = db.ports[0] ??
      Number(db.sockets.find((s) => /mongodb-\d+\.sock$/.test(s))?.match(/(\d+)\.sock$/)?.[1]);
    entry.uriFile = secret;
    lines.push(
      "// The user it connects as, created once (mongosh, in the admin database):",
      '//   db.createUser({ user: "vmsnap", pwd: "PASSWORD", roles: ["hostManager"] })',
      `// and its URI alone in a root-only file (${make}):`,
      `//   mongodb://vmsnap:PASSWORD@localhost:${port || 27017}/?authSource=admin`,
    );
  }
  const body = JSON.stringify(entry, null, 2).split("\n");
  return [...lines, ...body];
}

/**
 * The starter config's text (JSONC: comments say what each part is and what
 * to do next).
 *
 * @example
 * ```ts
 * import { starterConfig } from "./init.ts";
 * const text = starterConfig({ configPath: "/etc/azure/x.json", targets: [], databases: [], detect: false });
 * text.includes('"fsFreezeEnabled": true'); // true
 * ```
 */
export function starterConfig(options: StarterOptions): string {
  const date = (options.now ?? new Date()).toISOString().slice(0, 10);
  const secretDir = dirname(options.configPath);
  const names = new Map<string, number>();
  const uniqueName = (base: string) => {
    const n = (names.get(base) ?? 0) + 1;
    names.set(base, n);
    return n === 1 ? base : `${base}-${n}`;
  };
  const plugins = options.databases.map((db) =>
    pluginEntry(
      db,
      uniqueName(db.process.replace(/d$/, "").replace("postmaster", "postgres")),
      secretDir,
    )
  );
  const pluginLines = plugins.length
    ? plugins.flatMap((p, i) =>
      p.map((l, j) => j === p.length - 1 && i < plugins.length - 1 ? `${l},` : l)
    )
    : [
      options.detect
        ? "// No MariaDB/MySQL, PostgreSQL or MongoDB server was found running."
        : "// Run vmsnap init --detect to list the databases running here, or add entries:",
      '// { "type": "mysql", "socket": "/run/mysqld/mysqld.sock", "user": "vmsnap",',
      `//   "passwordFile": "${join(secretDir, "mysql.password")}" },`,
      '// { "type": "postgresql", "host": "/var/run/postgresql", "user": "vmsnap",',
      `//   "passwordFile": "${join(secretDir, "postgresql.password")}" }`,
    ];
  const width = Math.max(0, ...options.targets.map((t) => t.mountPoint.length));
  const targetLines = options.targets.length
    ? options.targets.map((t) =>
      `//   ${t.mountPoint.padEnd(width)}  ${t.fsType} on ${t.source} (${t.device})`
    )
    : ["//   (none: no filesystem here can be frozen; the snapshot is crash-consistent)"];
  const indent = (lines: string[], by: string) => lines.map((l) => `${by}${l}`);
  return [
    `// vmsnap config for ${hostname()}, written by vmsnap init${
      options.detect ? " --detect" : ""
    } on ${date}.`,
    "// Next: create what the comments below ask for, then",
    `//   vmsnap check --connect --config ${options.configPath}`,
    "//   systemctl enable --now vmsnap.timer",
    "// Comments and trailing commas are allowed (JSONC). Reference: man vmsnap,",
    "// /usr/share/doc/vmsnap/operations.md; schema: vmsnap schema.",
    "{",
    "  // Azure Backup's keys, read as Azure's framework reads them.",
    '  "pluginName": "ScriptRunner",',
    '  "preScriptLocation": "",',
    '  "postScriptLocation": "",',
    '  "preScriptParams": [],',
    '  "postScriptParams": [],',
    '  "preScriptNoOfRetries": 0,',
    '  "postScriptNoOfRetries": 0,',
    '  "timeoutInSeconds": 30,',
    '  "continueBackupOnFailure": true,',
    '  "fsFreezeEnabled": true,',
    "",
    `  // The filesystems vmsnap check plans to freeze here (${date}), children first:`,
    ...indent(targetLines, "  "),
    '  // Listed, so a mount added later is not frozen until you add it; "auto"',
    "  // follows the mount table instead.",
    '  "freeze": {',
    ...(options.targets.length
      ? [
        '    "mounts": [',
        ...options.targets.map((t, i, all) =>
          `      ${JSON.stringify(t.mountPoint)}${i < all.length - 1 ? "," : ""}`
        ),
        "    ],",
      ]
      : ['    "mounts": [],']),
    '    "exclude": [],',
    '    "maxFrozenSeconds": 60',
    "  },",
    "",
    "  // How the snapshot is taken: a command (argv, no shell) run while frozen, or",
    '  // "external": {} for a caller that drives vmsnap run --external.',
    '  // "snapshot": { "command": ["/usr/local/sbin/take-snapshot"], "timeoutInSeconds": 60 },',
    "",
    "  // The databases to quiesce; each holds its lock until the snapshot is taken.",
    '  "plugins": [',
    ...indent(pluginLines, "    "),
    "  ],",
    "",
    '  "log": { "file": ' + JSON.stringify(DEFAULT_LOG_FILE) + ', "level": "info" },',
    `  "stateDir": ${JSON.stringify(DEFAULT_STATE_DIR)},`,
    "  // For node_exporter's textfile collector (written when its directory exists).",
    `  "metrics": { "textfile": ${JSON.stringify(DEFAULT_METRICS_FILE)} }`,
    "}",
    "",
  ].join("\n");
}

/** What `vmsnap init` did. */
export interface InitOutcome {
  path: string;
  written: boolean;
  text: string;
  targets: FreezeTarget[];
  databases: FoundDatabase[];
}

/**
 * Builds the starter config and writes it (unless dry-run). Throws
 * `ConfigExists` rather than touch an existing file.
 *
 * @example
 * ```ts
 * import { initConfig } from "./init.ts";
 * const outcome = initConfig({ configPath: "/etc/azure/VMSnapshotScriptPluginConfig.json", detect: true, dryRun: true });
 * console.log(outcome.text);
 * ```
 */
export function initConfig(
  options: { configPath: string; detect: boolean; dryRun: boolean },
): InitOutcome {
  const { configPath } = options;
  const refuse = () =>
    new VmsnapError(
      "ConfigExists",
      `${configPath} already exists; vmsnap init never overwrites a config. Fix: vmsnap init --dry-run --config ${configPath} to see the starter, and merge what you need by hand, or move the file away.`,
    );
  if (existsSync(configPath)) throw refuse();
  const plan = planFreeze(readMounts(), { mounts: "auto", exclude: [] });
  const databases = options.detect ? detectDatabases() : [];
  const text = starterConfig({
    configPath,
    targets: plan.targets,
    databases,
    detect: options.detect,
  });
  const outcome = { path: configPath, written: false, text, targets: plan.targets, databases };
  if (options.dryRun) return outcome;
  if (process.getuid?.() !== 0) {
    throw new VmsnapError(
      "NotRoot",
      `vmsnap init writes a root-owned config and must run as root. Fix: sudo vmsnap init, or vmsnap init --dry-run to see it.`,
    );
  }
  mkdirSync(dirname(configPath), { recursive: true, mode: 0o700 });
  let fd: number;
  try {
    fd = openSync(
      configPath,
      constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW,
      0o600,
    );
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "EEXIST") throw refuse();
    throw error;
  }
  try {
    fchmodSync(fd, 0o600);
    writeSync(fd, text);
  } finally {
    closeSync(fd);
  }
  return { ...outcome, written: true };
}

/**
 * What `vmsnap init` prints after writing (the config itself goes to stdout
 * with --dry-run).
 *
 * @example
 * ```ts
 * import { formatInit } from "./init.ts";
 * formatInit({ path: "/etc/azure/x.json", written: true, text: "", targets: [], databases: [] });
 * ```
 */
export function formatInit(outcome: InitOutcome): string {
  const dbs = outcome.databases.map((d) =>
    `${d.process} (${d.sockets[0] ?? `port ${d.ports[0]}`})`
  );
  return [
    `${outcome.written ? "wrote" : "would write"} ${outcome.path} (root, 0600)`,
    `  freeze: ${outcome.targets.map((t) => t.mountPoint).join(", ") || "nothing"}`,
    `  databases: ${dbs.join(", ") || "none found"}`,
    "Next: follow the comments in the file (users, GRANTs, password files), then",
    `  vmsnap check --connect --config ${outcome.path}`,
    "  systemctl enable --now vmsnap.timer",
  ].join("\n");
}
