/**
 * The steady write load of the restore tests: the writer process
 * (`writer.ts`) and the check that restored rows are exactly 1..K.
 *
 * @module
 */
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import process from "node:process";
import { ROOT } from "../helpers.ts";

/** Starts the writer process; acks are appended to a file off the frozen filesystem. */
export function startWriter(
  kind: "mysql" | "postgresql" | "redis" | "sqlite",
  where: string,
  port: number,
  dir: string,
) {
  const ackFile = join(dir, `${kind}-acks`);
  const stopFile = join(dir, `${kind}-stop`);
  writeFileSync(ackFile, "");
  const child = spawn(process.execPath, [
    "run",
    "-A",
    join(ROOT, "tests", "consistency", "writer.ts"),
    kind,
    where,
    String(port),
    ackFile,
    stopFile,
  ], { stdio: "inherit" });
  const exited = new Promise<number | null>((resolve) => child.on("exit", resolve));
  const acks = () => readFileSync(ackFile, "utf8").trim().split("\n").filter(Boolean).length;
  return {
    ackFile,
    acks,
    async stop() {
      writeFileSync(stopFile, "");
      assert.equal(await exited, 0, "the writer ran without an error");
    },
  };
}

/** Asserts rows are exactly 1..K and returns K. */
export function contiguous(rows: number[]): number {
  rows.forEach((seq, i) => assert.equal(seq, i + 1, `row ${i + 1} is ${seq}: a commit is missing`));
  return rows.length;
}
