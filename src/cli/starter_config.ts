/**
 * The text of the starter config `vmsnap init` writes: JSONC whose comments
 * say what each part is and what to do next. It lists the filesystems
 * `vmsnap check` would freeze today (explicitly, so a mount added later is
 * never frozen unplanned) and a plugin entry for each database found running,
 * with a password-file placeholder and, in a comment, the user and GRANT it
 * needs.
 *
 * @module
 */
import { hostname } from "node:os";
import { dirname, join } from "node:path";
import {
  DEFAULT_CONFIG_PATH,
  DEFAULT_LOG_FILE,
  DEFAULT_METRICS_FILE,
  DEFAULT_STATE_DIR,
} from "../config/config.ts";
import type { FreezeTarget } from "../freeze/plan.ts";
import type { FoundDatabase } from "./detect_databases.ts";
import type { FoundAgent } from "../hook/detect_agents.ts";

/** Options of {@link starterConfig}. */
export interface StarterOptions {
  /** Where the config will be; password files are placed beside it. */
  configPath: string;
  targets: FreezeTarget[];
  databases: FoundDatabase[];
  detect: boolean;
  /** The backup agents found (`--detect`). */
  agents?: FoundAgent[];
  now?: Date;
}

/**
 * The command that installs vmsnap's hook for an agent, naming this config
 * when it is not the agent's default.
 *
 * @example
 * ```ts
 * import { installCommand } from "./starter_config.ts";
 * installCommand("qemu-ga", "/etc/vmsnap/vmsnap.json"); // "vmsnap install --for qemu-ga --config /etc/vmsnap/vmsnap.json"
 * ```
 */
export function installCommand(agent: string, configPath: string): string {
  return `vmsnap install --for ${agent}${
    configPath === DEFAULT_CONFIG_PATH ? "" : ` --config ${configPath}`
  }`;
}

/** The comment naming the backup agents found and how to hook vmsnap into each. */
function agentSection(options: StarterOptions): string[] {
  if (!options.detect) return [];
  const agents = options.agents ?? [];
  if (agents.length === 0) {
    return ["// No backup agent (qemu-ga, VMware Tools, Azure, Google, AWS SSM) was found here."];
  }
  return [
    "// Backup agents found here; each calls vmsnap's hook once installed for it:",
    ...agents.map((a) =>
      `//   ${a.agent} (${a.where}): ${
        a.installed ? "installed" : installCommand(a.agent, options.configPath)
      }`
    ),
  ];
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
 * import { starterConfig } from "./starter_config.ts";
 * const text = starterConfig({ configPath: "/etc/azure/x.json", targets: [], databases: [], detect: false });
 * text.includes('"fsFreezeEnabled": true'); // true
 * ```
 */
export function starterConfig(options: StarterOptions): string {
  const date = (options.now ?? new Date()).toISOString().slice(0, 10);
  const indent = (lines: string[]) => lines.map((l) => `  ${l}`);
  return [
    `// vmsnap config for ${hostname()}, written by vmsnap init${
      options.detect ? " --detect" : ""
    } on ${date}.`,
    "// Next: create what the comments below ask for, then",
    `//   vmsnap check --connect --config ${options.configPath}`,
    "//   systemctl enable --now vmsnap.timer",
    "// Comments and trailing commas are allowed (JSONC). Reference: man vmsnap,",
    "// /usr/share/doc/vmsnap/operations.md; schema: vmsnap schema.",
    ...agentSection(options),
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
    ...indent(freezeSection(options.targets, date)),
    "",
    "  // How the snapshot is taken: a command (argv, no shell) run while frozen, or",
    '  // "external": {} for a caller that drives vmsnap run --external.',
    '  // "snapshot": { "command": ["/usr/local/sbin/take-snapshot"], "timeoutInSeconds": 60 },',
    "",
    "  // The databases to quiesce; each holds its lock until the snapshot is taken.",
    '  "plugins": [',
    ...indent(indent(pluginSection(options))),
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

/** `"freeze"`, with the filesystems vmsnap check would freeze here listed, and a comment on each. */
function freezeSection(targets: FreezeTarget[], date: string): string[] {
  const width = Math.max(0, ...targets.map((t) => t.mountPoint.length));
  const described = targets.length
    ? targets.map((t) =>
      `//   ${t.mountPoint.padEnd(width)}  ${t.fsType} on ${t.source} (${t.device})`
    )
    : ["//   (none: no filesystem here can be frozen; the snapshot is crash-consistent)"];
  const mounts = targets.length
    ? [
      '  "mounts": [',
      ...targets.map((t, i) =>
        `    ${JSON.stringify(t.mountPoint)}${i < targets.length - 1 ? "," : ""}`
      ),
      "  ],",
    ]
    : ['  "mounts": [],'];
  return [
    `// The filesystems vmsnap check plans to freeze here (${date}), children first:`,
    ...described,
    '// Listed, so a mount added later is not frozen until you add it; "auto"',
    "// follows the mount table instead.",
    '"freeze": {',
    ...mounts,
    '  "exclude": [],',
    '  "maxFrozenSeconds": 60',
    "},",
  ];
}

/** The entries of `"plugins"`: one per database found (unique names), else examples in comments. */
function pluginSection(options: StarterOptions): string[] {
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
  if (plugins.length) {
    return plugins.flatMap((p, i) =>
      p.map((l, j) => j === p.length - 1 && i < plugins.length - 1 ? `${l},` : l)
    );
  }
  return [
    options.detect
      ? "// No MariaDB/MySQL, PostgreSQL or MongoDB server was found running."
      : "// Run vmsnap init --detect to list the databases running here, or add entries:",
    '// { "type": "mysql", "socket": "/run/mysqld/mysqld.sock", "user": "vmsnap",',
    `//   "passwordFile": "${join(secretDir, "mysql.password")}" },`,
    '// { "type": "postgresql", "host": "/var/run/postgresql", "user": "vmsnap",',
    `//   "passwordFile": "${join(secretDir, "postgresql.password")}" }`,
  ];
}
