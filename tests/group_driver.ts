/**
 * A group member as a small program: it drives `src/group/member.ts`
 * through the steps a `run` takes (join, the `joined` barrier, quiesce,
 * `held`, the `held` barrier, snapshot, release, report, outcome) with
 * delays standing in for the real work, and prints every step and group
 * event as a JSON line on stdout with this machine's wall clock (`wall`),
 * so that a test can order events of several members and act between them
 * (SIGKILL, SIGSTOP, cutting its network).
 *
 * Usage: deno run -A tests/group_driver.ts '<DriverConfig as JSON>'
 *
 * Exit: 0 when the group passed every barrier and this member reported a
 * snapshot, 2 when the run was aborted, 3 when it could not join.
 *
 * @module
 */
import { readFileSync } from "node:fs";
import process from "node:process";
import type { Code } from "../src/errors.ts";
import type { Consistency } from "../src/protocol.ts";
import { EtcdClient } from "../src/group/etcd.ts";
import { GroupMember } from "../src/group/member.ts";

/** What one member does. */
export interface DriverConfig {
  endpoints: string[];
  tls?: { caFile: string; certFile?: string; keyFile?: string };
  username?: string;
  passwordFile?: string;
  group: string;
  member: string;
  members: string[];
  leaseTtlSeconds?: number;
  etcdLossMs?: number;
  joinTimeoutMs?: number;
  barrierTimeoutMs?: number;
  /** Time spent quiescing, after the `joined` barrier. */
  quiesceMs?: number;
  /** Time the snapshot takes, after the `held` barrier. */
  snapshotMs?: number;
  /** The consistency reported for a snapshot taken. */
  consistency?: Consistency;
  /** Fails there and aborts the run. */
  failAt?: "quiesce" | "snapshot";
  outcomeWaitMs?: number;
}

function emit(ev: string, fields: Record<string, unknown> = {}): void {
  // This machine's wall clock with the monotonic clock's resolution (sub-millisecond).
  const wall = Math.round((performance.timeOrigin + performance.now()) * 1000) / 1000;
  process.stdout.write(`${JSON.stringify({ ev, wall, ...fields })}\n`);
}

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal.aborted) return reject(signal.reason);
    const timer = setTimeout(() => {
      signal.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    const onAbort = () => {
      clearTimeout(timer);
      reject(signal.reason);
    };
    signal.addEventListener("abort", onAbort, { once: true });
  });
}

function client(config: DriverConfig): EtcdClient {
  const read = (file?: string) => (file ? readFileSync(file, "utf8") : undefined);
  return new EtcdClient({
    endpoints: config.endpoints,
    tls: config.tls
      ? {
        ca: read(config.tls.caFile),
        cert: read(config.tls.certFile),
        key: read(config.tls.keyFile),
      }
      : undefined,
    username: config.username,
    password: read(config.passwordFile)?.trim(),
  });
}

/** The steps of a run between the two barriers and after; throws the abort. */
async function takePart(m: GroupMember, config: DriverConfig): Promise<void> {
  await m.waitBarrier("joined", { timeoutMs: config.joinTimeoutMs ?? 10_000 });
  emit("quiescing");
  await sleep(config.quiesceMs ?? 0, m.signal);
  if (config.failAt === "quiesce") {
    await m.abort({ code: "PluginQuiesceFailed" as Code, message: "the test's quiesce failed" });
  }
  emit("holding");
  await m.reached("held");
  emit("held");
  await m.waitBarrier("held", { timeoutMs: config.barrierTimeoutMs ?? 10_000 });
  emit("passed");
  await sleep(config.snapshotMs ?? 0, m.signal);
  if (config.failAt === "snapshot") {
    await m.abort({ code: "SnapshotFailed" as Code, message: "the test's snapshot failed" });
  }
  emit("snapshot");
}

async function main(config: DriverConfig): Promise<number> {
  emit("start", { member: config.member, pid: process.pid });
  let m: GroupMember;
  try {
    m = await GroupMember.join({
      client: client(config),
      group: config.group,
      member: config.member,
      members: config.members,
      leaseTtlSeconds: config.leaseTtlSeconds,
      etcdLossMs: config.etcdLossMs,
      joinTimeoutMs: config.joinTimeoutMs,
      onEvent: (event) => emit("group", { event }),
    }, { timeoutMs: 5000 });
  } catch (error) {
    const e = error as { code?: string; message?: string };
    emit("join-failed", { code: e.code, message: e.message });
    return 3;
  }
  let exit = 0;
  try {
    await takePart(m, config);
    emit("released");
    await m.report({ consistency: config.consistency ?? "application", snapshotTaken: true });
  } catch (error) {
    const e = error as { code?: string; message?: string };
    emit("released", { aborted: true, code: e.code, message: e.message });
    exit = 2;
    await m.report({ consistency: "none", snapshotTaken: false, message: e.message })
      .catch((cause) => emit("report-failed", { message: String(cause) }));
  }
  const outcome = await m.outcome({ waitMs: config.outcomeWaitMs ?? 3000 });
  emit("outcome", { outcome, requests: m.requests });
  await m.close();
  emit("closed");
  return exit;
}

if (import.meta.main) {
  process.exit(await main(JSON.parse(process.argv[2]) as DriverConfig));
}
