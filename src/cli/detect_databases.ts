/**
 * The database servers running on this machine, for `vmsnap init --detect`:
 * MariaDB/MySQL, PostgreSQL and MongoDB, found by process name and reached
 * through the sockets the process listens on (/proc).
 *
 * @module
 */
import { readdirSync, readFileSync, readlinkSync } from "node:fs";

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
 * import { detectDatabases } from "./detect_databases.ts";
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
