/**
 * The vmtest scenarios, run against a booted guest: write load on both
 * databases, a quiesced snapshot taken the way libvirt does (qemu-ga freeze,
 * QMP external snapshot, thaw), `vmsnap run --external` in the guest with the
 * host snapshotting on its `frozen` event (relayed over a virtio-serial
 * port), and vmsnap SIGKILLed while the root filesystem is frozen.
 *
 * @module
 */
import type { Socket } from "node:net";
import { join } from "node:path";
import type { Check } from "./restore.ts";
import { type Guest, type GuestRan, sleep } from "./guest.ts";

/** A snapshot to restore after the guest stops. */
export interface SnapshotToRestore {
  /** The qcow2 whose chain is the point-in-time image. */
  image: string;
  /** The table the load wrote in this case. */
  table: string;
  mysqlAckedBefore: number;
  postgresAckedBefore: number;
  /** Rows beyond the acks allowed (commits in flight when no lock held them). */
  mysqlSlack: number;
  postgresSlack: number;
  /** The GTID position vmsnap recorded (when vmsnap quiesced MariaDB). */
  gtid?: string;
}

/** One scenario's outcome. */
export interface CaseResult {
  name: string;
  how: string;
  checks: Check[];
  figures: [string, string][];
  snapshot?: SnapshotToRestore;
  /** Why the scenario did not run. */
  skipped?: string;
}

const ms = (value: number) => `${Math.round(value)} ms`;
const count = (text: string) => text.split("\n").filter(Boolean).length;
const GUEST_CONFIG = "/etc/vmsnap/vmtest.json";
const GUEST_VMSNAP = "/usr/local/sbin/vmsnap";
const WRITER = "/usr/local/lib/vmtest/writer.sh";
const RELAY = "/usr/local/lib/vmtest/relay.sh";

/** The write load of one scenario: a writer per database, acks on /run. */
class Load {
  constructor(
    readonly guest: Guest,
    readonly table: string,
    readonly pids: { mysql: number; postgresql: number },
  ) {}

  static async start(guest: Guest, table: string): Promise<Load> {
    await guest.sh(
      `mariadb -e "CREATE TABLE app.${table} (seq INT PRIMARY KEY) ENGINE=InnoDB" && ` +
        `psql -X -q -h /var/run/postgresql -U postgres -c "CREATE TABLE ${table} (seq int PRIMARY KEY)"`,
    );
    const spawnWriter = (kind: string) =>
      guest.spawn([WRITER, kind, table, Load.ackFile(table, kind), `/run/vmtest/${table}.stop`]);
    const load = new Load(guest, table, {
      mysql: await spawnWriter("mysql"),
      postgresql: await spawnWriter("postgresql"),
    });
    await load.waitFor(20, 300_000);
    return load;
  }

  static ackFile(table: string, kind: string): string {
    return `/run/vmtest/${table}-${kind}.acks`;
  }

  /** Acknowledged commits so far (read through the agent, no process started). */
  async acks(): Promise<{ mysql: number; postgresql: number }> {
    return {
      mysql: count(await this.guest.readFile(Load.ackFile(this.table, "mysql"))),
      postgresql: count(await this.guest.readFile(Load.ackFile(this.table, "postgresql"))),
    };
  }

  /** Waits until both writers have `n` more acks than `from`. */
  async waitFor(n: number, timeoutMs: number, from = { mysql: 0, postgresql: 0 }): Promise<void> {
    const deadline = performance.now() + timeoutMs;
    for (;;) {
      const now = await this.acks().catch(() => ({ mysql: 0, postgresql: 0 }));
      if (now.mysql >= from.mysql + n && now.postgresql >= from.postgresql + n) return;
      if (performance.now() > deadline) {
        throw new Error(
          `the write load did not reach ${n} more commits within ${timeoutMs} ms (${
            JSON.stringify(now)
          })`,
        );
      }
      await sleep(500);
    }
  }

  /** Stops both writers; returns a check that they ended cleanly. */
  async stop(): Promise<Check> {
    await this.guest.sh(`touch /run/vmtest/${this.table}.stop`);
    const codes = [];
    for (const pid of [this.pids.mysql, this.pids.postgresql]) {
      codes.push((await this.guest.wait(pid, 120_000)).code);
    }
    return {
      name: "both writers ran to the end without an error (every commit acknowledged or refused)",
      ok: codes.every((c) => c === 0),
      detail: `exit codes ${codes.join(", ")}`,
    };
  }
}

/** Lines from the relay socket, with a timeout per line. */
class Lines {
  #buffer = "";
  #lines: string[] = [];
  #wake?: () => void;
  constructor(readonly socket: Socket) {
    socket.setEncoding("utf8");
    socket.on("data", (chunk: string) => {
      this.#buffer += chunk;
      const parts = this.#buffer.split("\n");
      this.#buffer = parts.pop()!;
      this.#lines.push(...parts.filter((l) => l.trim()));
      this.#wake?.();
    });
  }

  async next(timeoutMs: number): Promise<string> {
    const deadline = performance.now() + timeoutMs;
    while (this.#lines.length === 0) {
      const left = deadline - performance.now();
      if (left <= 0) throw new Error(`no line from the relay within ${timeoutMs} ms`);
      await new Promise<void>((resolve) => {
        this.#wake = resolve;
        setTimeout(resolve, Math.min(left, 1000));
      });
    }
    return this.#lines.shift()!;
  }

  /** Reads JSON lines until one matches. */
  async until(
    match: (event: Record<string, unknown>) => boolean,
    timeoutMs: number,
  ): Promise<Record<string, unknown>> {
    const deadline = performance.now() + timeoutMs;
    for (;;) {
      const line = await this.next(Math.max(1, deadline - performance.now()));
      try {
        const event = JSON.parse(line);
        if (match(event)) return event;
      } catch {
        // not JSON: ignore
      }
    }
  }
}

/** A `vmsnap run --external` in the guest, relayed (tests/vm/relay.sh). */
interface RelayedRun {
  /** The relay script's pid (its exit status is vmsnap's). */
  pid: number;
  lines: Lines;
  /** vmsnap's own pid (read from /run/vmtest/vmsnap.pid). */
  vmsnapPid(): Promise<number>;
  /** Waits for the relay script (qemu-ga reports an exit once, then forgets the pid). */
  wait(timeoutMs: number): Promise<GuestRan>;
  /** Ends whatever is left of the run (cleanup after a failed scenario). */
  end(): Promise<void>;
}

/** Starts `vmsnap run --external` in the guest, its stdin and stdout carried by the relay port. */
async function startRelayedRun(guest: Guest): Promise<RelayedRun> {
  const socket = await guest.relay();
  const lines = new Lines(socket);
  await guest.sh("rm -f /run/vmtest/vmsnap.pid /run/vmtest/vmsnap.err /run/vmtest/relay.flags");
  const pid = await guest.spawn([RELAY, GUEST_CONFIG]);
  const vmsnapPid = async () => Number((await guest.readFile("/run/vmtest/vmsnap.pid")).trim());
  let ended: GuestRan | undefined;
  const wait = async (timeoutMs: number) => (ended ??= await guest.wait(pid, timeoutMs));
  return {
    pid,
    lines,
    vmsnapPid,
    wait,
    async end() {
      socket.destroy();
      if (ended) return;
      try {
        if ((ended = await guest.status(pid))) return;
      } catch {
        return; // qemu-ga no longer knows the pid: it ended and was reported
      }
      // vmsnap's guard thaws what it froze; the agent's thaw is the last resort.
      await guest.exec(["/bin/kill", "-TERM", String(await vmsnapPid())], 30_000).catch(() => {});
      await wait(60_000).catch(async () => {
        await (await guest.qga()).execute("guest-fsfreeze-thaw", undefined, 60_000).catch(() => {});
        await guest.exec(["/bin/kill", "-KILL", String(await vmsnapPid())], 30_000).catch(() => {});
      });
    },
  };
}

/** qemu-ga's own log lines about freeze and thaw (from the journal). */
async function agentLog(guest: Guest, since: string): Promise<string[]> {
  const out = await guest.sh(
    `journalctl -u qemu-guest-agent --since '${since}' -o short-precise --no-pager | grep -i -E 'fsfreeze|thaw' | grep -v guest-exec || true`,
  );
  return out.split("\n").filter(Boolean).map((l) =>
    l.replace(/^\S+ \S+ /, "").replace(/ \S+ qemu-ga\[\d+\]: /, " ")
  );
}

/** The parts of a run's (or a holder's) result that the scenarios check. */
interface LastResult {
  runId?: string;
  status?: string;
  consistency?: string;
  errors?: { code: string }[];
  plugins?: {
    name: string;
    quiesce?: { ok?: boolean; facts?: Record<string, unknown> };
    resume?: { facts?: Record<string, unknown> };
  }[];
}

/** The last result a run or a hook's holder left in the guest's stateDir. */
async function lastResult(guest: Guest): Promise<LastResult | undefined> {
  try {
    return JSON.parse(await guest.readFile("/var/lib/vmsnap/last-result.json"));
  } catch {
    return undefined;
  }
}

/** Waits (up to `timeoutMs`) for a last result of another run than `before`. */
async function newResult(
  guest: Guest,
  before: string | undefined,
  timeoutMs = 60_000,
): Promise<LastResult | undefined> {
  const deadline = performance.now() + timeoutMs;
  for (;;) {
    const result = await lastResult(guest);
    if ((result && result.runId !== before) || performance.now() > deadline) return result;
    await sleep(1000);
  }
}

/**
 * `vmsnap install --for qemu-ga` in the guest: vmsnap's file in
 * /etc/qemu/fsfreeze-hook.d and a drop-in that restarts qemu-ga with -F. It
 * runs in a unit of its own (systemd-run): restarting qemu-ga ends every
 * process started through it. Returns the checks and how long it took.
 *
 * @example
 * ```ts
 * const installed = await installHook(guest);
 * ```
 */
export async function installHook(guest: Guest): Promise<{ checks: Check[]; ms: number }> {
  const started = performance.now();
  await guest.sh(
    "systemd-run --unit=vmtest-install --collect /bin/sh -c " +
      `'${GUEST_VMSNAP} install --for qemu-ga --config ${GUEST_CONFIG} > /run/vmtest/install.log 2>&1; echo $? > /run/vmtest/install.rc'`,
  );
  const deadline = performance.now() + 300_000;
  let rc: string | undefined;
  while (rc === undefined) {
    if (performance.now() > deadline) throw new Error("vmsnap install did not finish in 300 s");
    await sleep(2000);
    rc = await guest.readFile("/run/vmtest/install.rc").then((t) => t.trim()).catch(() =>
      undefined
    );
  }
  // qemu-ga was restarted: wait until the new one answers and runs with its hook.
  let exec = "";
  while (!exec.includes("fsfreeze-hook")) {
    if (performance.now() > deadline) throw new Error("qemu-ga did not come back with -F");
    await sleep(2000);
    exec = await guest.sh("systemctl show -p ExecStart qemu-guest-agent; ps -o args= -C qemu-ga")
      .catch(() => "");
  }
  const log = await guest.readFile("/run/vmtest/install.log").catch(() => "");
  return {
    ms: performance.now() - started,
    checks: [{
      name:
        "vmsnap install --for qemu-ga: hook file and drop-in written, qemu-ga restarted with -F",
      ok: rc === "0" && /fsfreeze-hook/.test(exec),
      detail: `exit ${rc}; ${exec.trim().split("\n").at(-1)}; ${
        log.trim().split("\n").slice(0, 4).join(" / ")
      }`,
    }],
  };
}

/**
 * Case 1: the hypervisor's quiesced snapshot, the way libvirt does it:
 * guest-fsfreeze-freeze through the agent, blockdev-snapshot-sync, thaw.
 *
 * @example
 * ```ts
 * const result = await agentFreezeCase(guest, work, { hook: false });
 * ```
 */
export async function agentFreezeCase(
  guest: Guest,
  work: string,
  options: { hook: boolean },
): Promise<CaseResult> {
  const table = "qga";
  const checks: Check[] = [];
  const figures: [string, string][] = [];
  const load = await Load.start(guest, table);
  const since = (await guest.sh("date '+%Y-%m-%d %H:%M:%S'")).trim();
  const previous = (await lastResult(guest))?.runId;
  const before = await load.acks();
  const qga = await guest.qga();
  const t0 = performance.now();
  const frozenCount = await qga.execute("guest-fsfreeze-freeze", undefined, 300_000) as number;
  const tFrozen = performance.now();
  let snap: { image: string; ms: number };
  let thawed: number;
  let tThawed: number;
  try {
    const status = await qga.execute("guest-fsfreeze-status");
    checks.push({
      name: "guest-fsfreeze-freeze froze the guest's filesystems",
      ok: frozenCount >= 1 && status === "frozen",
      detail: `${frozenCount} filesystem(s), status ${status}`,
    });
    snap = await guest.snapshot(join(work, "after-qga.qcow2"));
  } finally {
    thawed = await qga.execute("guest-fsfreeze-thaw", undefined, 120_000) as number;
    tThawed = performance.now();
  }
  const status = await qga.execute("guest-fsfreeze-status");
  checks.push({
    name: "guest-fsfreeze-thaw thawed them; the agent says thawed",
    ok: thawed === frozenCount && status === "thawed",
    detail: `${thawed} thawed, status ${status}`,
  });
  await load.waitFor(10, 120_000, await load.acks());
  checks.push({
    name: "the writers resumed after the thaw",
    ok: true,
    detail: "10 more commits on each database",
  });
  checks.push(await load.stop());
  let gtid: string | undefined;
  if (options.hook) {
    const result = await newResult(guest, previous);
    const mariadb = result?.plugins?.find((p) => p.name === "mariadb");
    gtid = mariadb?.quiesce?.facts?.gtidPosition as string | undefined;
    checks.push({
      name: "vmsnap's hook quiesced both databases around qemu-ga's freeze (its last result)",
      ok: result?.status === "success" && result?.consistency === "application" && !!gtid,
      detail: `status ${result?.status}, consistency ${result?.consistency}, plugins ${
        JSON.stringify(
          result?.plugins?.map((p) => [p.name, p.quiesce?.ok, p.resume?.facts?.holdMs]),
        )
      }, errors ${JSON.stringify(result?.errors)}`,
    });
    figures.push(["GTID position vmsnap's hook recorded", gtid ?? "(none)"]);
  }
  const log = await agentLog(guest, since);
  figures.push(["quiesce (guest-fsfreeze-freeze call)", ms(tFrozen - t0)]);
  figures.push(["QMP blockdev-snapshot-sync", ms(snap.ms)]);
  figures.push([
    "frozen window seen by the host (freeze reply → thaw reply)",
    ms(tThawed - tFrozen),
  ]);
  figures.push(["qemu-ga's log (journal; it logs the freeze call, not the thaw)", log.join(" / ")]);
  return {
    name: "qemu-ga quiesced snapshot (libvirt's way)",
    how: options.hook
      ? "guest-fsfreeze-freeze → vmsnap's fsfreeze hook quiesces both databases, qemu-ga freezes every filesystem → blockdev-snapshot-sync → guest-fsfreeze-thaw"
      : "guest-fsfreeze-freeze (qemu-ga's own freeze, NO vmsnap hook: hook mode is not on main yet, so the databases are not quiesced, only the filesystems frozen) → blockdev-snapshot-sync → guest-fsfreeze-thaw",
    checks,
    figures,
    snapshot: {
      image: snap.image,
      table,
      mysqlAckedBefore: before.mysql,
      postgresAckedBefore: before.postgresql,
      // Acks are read before the freeze call: commits until the lock (with the hook) or the
      // freeze may be there too. With the hook, MariaDB's GTID position pins the exact set.
      mysqlSlack: Infinity,
      postgresSlack: Infinity,
      gtid,
    },
  };
}

/**
 * Case 2: `vmsnap run --external` in the guest freezes the root filesystem
 * itself (freeze.mounts "auto", both database plugins); its `frozen` line
 * comes to the host over the relay port, the host snapshots through QMP and
 * answers `snapshot-done` on the same port.
 *
 * @example
 * ```ts
 * const result = await relayedRunCase(guest, work);
 * ```
 */
export async function relayedRunCase(guest: Guest, work: string): Promise<CaseResult> {
  const table = "run";
  const checks: Check[] = [];
  const figures: [string, string][] = [];
  const load = await Load.start(guest, table);
  const t0 = performance.now();
  const relay = await startRelayedRun(guest);
  let tFrozen = 0, tAnswered = 0, tDone = 0;
  let acked: { mysql: number; postgresql: number };
  let snap: { image: string; ms: number };
  let result: {
    consistency: string;
    status: string;
    exitCode: number;
    freeze: { frozenMs: number; mounts: { mountPoint: string }[] };
    plugins: { name: string; quiesce?: { facts?: Record<string, unknown> } }[];
    errors: unknown[];
  };
  let ran: { code: number };
  try {
    const frozen = await relay.lines.until(
      (e) => e.event === "frozen" || e.event === "result",
      300_000,
    );
    tFrozen = performance.now();
    if (frozen.event !== "frozen") {
      throw new Error(`vmsnap ended before freezing: ${JSON.stringify(frozen)}`);
    }
    checks.push({
      name: 'vmsnap froze the root filesystem ("auto") and said frozen on the relay',
      ok: Array.isArray(frozen.mounts) && (frozen.mounts as string[]).includes("/"),
      detail: `mounts ${JSON.stringify(frozen.mounts)}`,
    });
    // Read while frozen: the agent is not frozen itself, so its file commands work.
    acked = await load.acks();
    snap = await guest.snapshot(join(work, "after-run.qcow2"));
    relay.lines.socket.write("snapshot-done\n");
    tAnswered = performance.now();
    result = await relay.lines.until((e) => e.event === "result", 300_000) as typeof result;
    tDone = performance.now();
    ran = await relay.wait(120_000);
  } finally {
    await relay.end();
  }
  checks.push({
    name: "vmsnap run exited 0 with consistency application",
    ok: ran.code === 0 && result.consistency === "application" && result.status === "success",
    detail: `exit ${ran.code}, status ${result.status}, consistency ${result.consistency}, errors ${
      JSON.stringify(result.errors)
    }`,
  });
  // The port's descriptor, shared by vmsnap's stdin and stdout and the relay shell (relay.sh).
  const flagsLine = await guest.readFile("/run/vmtest/relay.flags").catch(() => "");
  const flags = parseInt(/flags:\s*([0-7]+)/.exec(flagsLine)?.[1] ?? "x", 8);
  checks.push({
    name: "vmsnap read its answer from the port itself and left the shared descriptor blocking",
    ok: Number.isInteger(flags) && (flags & 0o4000) === 0,
    detail: `flags 0${flags.toString(8)} after vmsnap exited`,
  });
  await load.waitFor(10, 120_000, await load.acks());
  checks.push({
    name: "the writers resumed after the thaw",
    ok: true,
    detail: "10 more commits each",
  });
  checks.push(await load.stop());
  const gtid = result.plugins.find((p) => p.name === "mariadb")?.quiesce?.facts?.gtidPosition as
    | string
    | undefined;
  figures.push(["vmsnap start → frozen line on the host", ms(tFrozen - t0)]);
  figures.push(["QMP blockdev-snapshot-sync", ms(snap.ms)]);
  figures.push(["frozen line → snapshot-done written", ms(tAnswered - tFrozen)]);
  figures.push(["frozen window vmsnap reports (freeze.frozenMs)", ms(result.freeze.frozenMs)]);
  figures.push(["snapshot-done → result line", ms(tDone - tAnswered)]);
  figures.push(["GTID position vmsnap recorded", gtid ?? "(none)"]);
  return {
    name: "vmsnap run in the guest, snapshot on its frozen event",
    how:
      'vmsnap run --json --external (freeze.mounts "auto", mysql + postgresql plugins) with stdin/stdout on virtio-serial port org.vmsnap.relay → host reads {"event":"frozen"} → blockdev-snapshot-sync → host writes snapshot-done',
    checks,
    figures,
    snapshot: {
      image: snap.image,
      table,
      mysqlAckedBefore: acked.mysql,
      postgresAckedBefore: acked.postgresql,
      // MariaDB was locked before the freeze: exactly the acknowledged commits.
      mysqlSlack: 0,
      // PostgreSQL's checkpoint mode holds no lock: commits until the freeze may be there.
      postgresSlack: Infinity,
      gtid,
    },
  };
}

/**
 * Case 3: vmsnap SIGKILLed while the root filesystem is frozen. Its guard
 * must thaw the root; the guest keeps answering; the databases take writes.
 *
 * @example
 * ```ts
 * const result = await killedWhileFrozenCase(guest);
 * ```
 */
export async function killedWhileFrozenCase(guest: Guest): Promise<CaseResult> {
  const checks: Check[] = [];
  const figures: [string, string][] = [];
  const relay = await startRelayedRun(guest);
  let thawedMs = Infinity;
  try {
    const frozen = await relay.lines.until(
      (e) => e.event === "frozen" || e.event === "result",
      300_000,
    );
    if (frozen.event !== "frozen") {
      throw new Error(`vmsnap ended before freezing: ${JSON.stringify(frozen)}`);
    }
    const vmsnapPid = await relay.vmsnapPid();
    // A write to the frozen root, started before the kill: it completes once the root is thawed.
    const probe = await guest.spawn([
      "/bin/sh",
      "-c",
      "echo probe > /var/tmp/vmtest-probe && sync /var/tmp/vmtest-probe",
    ], true);
    await sleep(2000);
    const blocked = (await guest.status(probe)) === undefined;
    checks.push({
      name: "a write to / blocks while vmsnap holds it frozen",
      ok: blocked,
      detail: blocked ? "still blocked after 2 s" : "the write completed: / was not frozen",
    });
    const tKill = performance.now();
    await guest.exec(["/bin/kill", "-KILL", String(vmsnapPid)], 30_000);
    try {
      const done = await guest.wait(probe, 120_000);
      thawedMs = performance.now() - tKill;
      checks.push({
        name: "the guard thawed / after the SIGKILL (the blocked write completed)",
        ok: done.code === 0,
        detail: `write completed ${Math.round(thawedMs)} ms after the kill`,
      });
    } catch (error) {
      checks.push({
        name: "the guard thawed / after the SIGKILL (the blocked write completed)",
        ok: false,
        detail: `${(error as Error).message}; thawing through qemu-ga to recover the guest`,
      });
      await (await guest.qga()).execute("guest-fsfreeze-thaw", undefined, 60_000).catch(() => {});
    }
    const ran = await relay.wait(30_000);
    checks.push({
      name: "vmsnap died of SIGKILL",
      ok: ran.code === 128 + 9,
      detail: `exit status ${ran.code}`,
    });
  } finally {
    await relay.end();
  }
  const qga = await guest.qga();
  const pingStarted = performance.now();
  await qga.execute("guest-ping", undefined, 10_000);
  const status = await qga.execute("guest-fsfreeze-status");
  checks.push({
    name: "qemu-ga answers (guest-ping) and says thawed",
    ok: status === "thawed",
    detail: `ping ${Math.round(performance.now() - pingStarted)} ms, status ${status}`,
  });
  const db = await guest.exec([
    "/bin/sh",
    "-c",
    "mariadb -e 'CREATE TABLE app.after_kill (x INT); INSERT INTO app.after_kill VALUES (1)' && " +
    "psql -X -q -h /var/run/postgresql -U postgres -c 'CREATE TABLE after_kill (x int); INSERT INTO after_kill VALUES (1)'",
  ], 60_000);
  checks.push({
    name:
      "both databases take writes again (the lock and the checkpoint session ended with vmsnap)",
    ok: db.code === 0,
    detail: db.code === 0 ? "INSERT committed on each" : db.stderr,
  });
  const report = await guest.exec([
    "/bin/sh",
    "-c",
    "for i in $(seq 30); do ls /var/lib/vmsnap/guard-*.json >/dev/null 2>&1 && break; sleep 1; done; " +
    "cat /var/lib/vmsnap/guard-*.json || { ls -la /var/lib/vmsnap; ps -eo pid,args | grep vmsnap; exit 1; }",
  ], 60_000);
  checks.push({
    name: "the guard left its report in stateDir for the next run",
    ok: report.code === 0 && report.stdout.includes('"/"'),
    detail: (report.stdout + report.stderr).trim().slice(0, 600),
  });
  figures.push(["SIGKILL → root writable again", ms(thawedMs)]);
  return {
    name: "vmsnap SIGKILLed while the root filesystem is frozen",
    how:
      'vmsnap run --external (freeze.mounts "auto") in the guest; on its frozen line the host runs kill -KILL through qemu-ga and never answers',
    checks,
    figures,
  };
}

/**
 * Case 4: the hypervisor never sends thaw. qemu-ga's freeze runs vmsnap's
 * hook (the holder quiesces and holds both databases), the host never thaws
 * within hook.maxHoldSeconds: the holder must end its hold by itself. qemu-ga
 * has no deadline of its own: the filesystems stay frozen until the late thaw.
 *
 * @example
 * ```ts
 * const result = await holderDeadlineCase(guest, 30);
 * ```
 */
export async function holderDeadlineCase(
  guest: Guest,
  maxHoldSeconds: number,
): Promise<CaseResult> {
  const checks: Check[] = [];
  const figures: [string, string][] = [];
  await guest.sh(`cp -p /etc/vmsnap/vmtest-short-hold.json ${GUEST_CONFIG}`);
  const before = (await lastResult(guest))?.runId;
  const qga = await guest.qga();
  const t0 = performance.now();
  const frozenCount = await qga.execute("guest-fsfreeze-freeze", undefined, 300_000) as number;
  const tFrozen = performance.now();
  let late = "";
  try {
    await sleep(maxHoldSeconds * 1000 + 15_000);
    late = await qga.execute("guest-fsfreeze-status") as string;
  } finally {
    await qga.execute("guest-fsfreeze-thaw", undefined, 120_000);
  }
  const tThawed = performance.now();
  checks.push({
    name:
      "qemu-ga keeps the filesystems frozen past the holder's deadline (it has none of its own)",
    ok: frozenCount >= 1 && late === "frozen",
    detail: `${frozenCount} frozen; status ${maxHoldSeconds + 15} s later: ${late}`,
  });
  const result = await newResult(guest, before);
  const codes = (result?.errors ?? []).map((e) => e.code);
  const holds = (result?.plugins ?? []).map((p) => p.resume?.facts?.holdMs).filter(
    (h: unknown) => typeof h === "number",
  ) as number[];
  checks.push({
    name: "the holder ended its hold by itself at hook.maxHoldSeconds and recorded HoldTimeout",
    ok: result?.runId !== before && codes.includes("HoldTimeout") &&
      holds.every((h) => h < (maxHoldSeconds + 10) * 1000),
    detail: `status ${result?.status}, consistency ${result?.consistency}, errors ${
      codes.join(", ")
    }, holds ${holds.map((h) => `${Math.round(h / 1000)} s`).join(", ")}`,
  });
  const status = await qga.execute("guest-fsfreeze-status");
  const db = await guest.exec([
    "/bin/sh",
    "-c",
    "mariadb -e 'CREATE TABLE app.after_deadline (x INT); INSERT INTO app.after_deadline VALUES (1)' && " +
    "psql -X -q -h /var/run/postgresql -U postgres -c 'CREATE TABLE after_deadline (x int); INSERT INTO after_deadline VALUES (1)'",
  ], 60_000);
  checks.push({
    name: "after the late thaw: qemu-ga says thawed, both databases take writes",
    ok: status === "thawed" && db.code === 0,
    detail: `status ${status}; ${db.code === 0 ? "INSERT committed on each" : db.stderr}`,
  });
  const vmsnapStatus = await guest.exec([GUEST_VMSNAP, "status", "--config", GUEST_CONFIG], 60_000);
  figures.push(["freeze call (hook quiesce + qemu-ga freeze)", ms(tFrozen - t0)]);
  figures.push(["frozen (host never thawed until)", ms(tThawed - tFrozen)]);
  figures.push([
    "vmsnap status afterwards",
    vmsnapStatus.stdout.trim().split("\n").slice(0, 6).join(" / "),
  ]);
  return {
    name: "the hypervisor never sends thaw (hook mode's holder deadline)",
    how:
      `guest-fsfreeze-freeze with vmsnap's hook (hook.maxHoldSeconds ${maxHoldSeconds}); the host waits ${
        maxHoldSeconds + 15
      } s before guest-fsfreeze-thaw`,
    checks,
    figures,
  };
}
