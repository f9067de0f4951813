/**
 * A steady write load for the restore tests: one connection, one commit per
 * row (`INSERT seq`), and after each commit is acknowledged its number is
 * appended to the ack file (which lives off the frozen filesystem). Stops
 * when the stop file appears.
 *
 * Usage: deno run -A tests/consistency/writer.ts mysql|postgresql SOCKET_OR_DIR PORT ACK_FILE STOP_FILE
 *
 * @module
 */
import { appendFileSync, existsSync } from "node:fs";
import process from "node:process";
import mysql from "mysql2/promise";
import postgres from "postgres";

const [kind, where, port, ackFile, stopFile] = process.argv.slice(2);
let insert: (seq: number) => Promise<unknown>;
let close: () => Promise<unknown>;
if (kind === "mysql") {
  const conn = await mysql.createConnection({ socketPath: where, user: "root" });
  insert = (seq) => conn.query("INSERT INTO app.commits (seq) VALUES (?)", [seq]);
  close = () => conn.end();
} else {
  const sql = postgres({
    host: where,
    port: Number(port),
    user: "postgres",
    database: "postgres",
    max: 1,
    onnotice: () => {},
  });
  insert = (seq) => sql`INSERT INTO commits (seq) VALUES (${seq})`;
  close = () => sql.end();
}
let seq = 0;
while (!existsSync(stopFile)) {
  seq++;
  await insert(seq);
  appendFileSync(ackFile, `${seq}\n`);
}
await close();
process.exit(0);
