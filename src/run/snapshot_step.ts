/**
 * The snapshot step of a run: taken when allowed, with the mounts still frozen.
 *
 * @module
 */
import type { Readable } from "node:stream";
import type { RunEvent } from "../protocol.ts";
import type { HandshakeReader } from "./snapshot.ts";
import type { PreparedRun } from "./state.ts";

/**
 * Takes the snapshot when allowed (not interrupted; a failed freeze only with
 * `continueBackupOnFailure`), with the mounts that are still frozen.
 *
 * @example
 * ```ts
 * import process from "node:process";
 * import { snapshotStep } from "./snapshot_step.ts";
 * import type { PreparedRun } from "./state.ts";
 * declare const run: PreparedRun;
 * await snapshotStep(run, process.stdin);
 * ```
 */
export async function snapshotStep(
  run: PreparedRun,
  stdin: Readable,
  handshake?: HandshakeReader,
): Promise<void> {
  const { config, method, session } = run.setup;
  const continueOnFailure = config.continueBackupOnFailure;
  const allowed = !run.interrupt.signal.aborted && (!session.failed || continueOnFailure);
  if (!allowed) {
    if (session.failed && !continueOnFailure) {
      run.fail({
        code: "FreezeFailed",
        message: "the freeze failed and continueBackupOnFailure is false: no snapshot was taken.",
      });
    }
    return;
  }
  const mounts = session.stillFrozen();
  if (method.kind !== "external" && mounts.length > 0) {
    run.output.event({ event: "frozen", runId: run.runId, mounts });
  }
  run.output.say(
    "snapshot",
    method.kind === "command" ? method.command.join(" ") : "waiting for the caller (external)",
  );
  const snapshot = run.snapshot = await run.deps.takeSnapshot(method, {
    runId: run.runId,
    mounts,
    signal: run.interrupt.signal,
    log: (level, event, fields) => run.log.record(level, event, fields),
    announce: (event) => run.output.handshake(event),
    stdin,
    handshake,
  });
  if (snapshot.error) run.fail(snapshot.error);
  if (snapshot.taken) {
    const taken: RunEvent = {
      event: "snapshot-taken",
      runId: run.runId,
      durationMs: snapshot.durationMs,
    };
    // Still frozen: the line goes out right after the thaw's FITHAW calls (before `thawed`).
    session.whenThawed(() => run.output.event(taken));
  }
}
