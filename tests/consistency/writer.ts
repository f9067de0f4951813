/**
 * A steady write load for the restore tests: one connection, one commit per
 * row (`INSERT seq`), and after each commit is acknowledged its number is
 * appended to the ack file (which lives off the frozen filesystem). Stops
 * when the stop file appears.
 *
 * Redis: one `RPUSH log seq` per write; SQLite (WHERE = the database file):
 * one autocommit `INSERT` per row, waiting up to 60 s for a lock.
 *
 * Usage: deno run -A tests/consistency/writer.ts mysql|postgresql|redis|sqlite SOCKET_OR_DIR_OR_FILE PORT ACK_FILE STOP_FILE
 *
 * @module
 */
import { appendFileSync, existsSync } from "node:fs";
import process from "node:process";
import mysql from "mysql2/promise";
import postgres from "postgres";
import { RedisConnection } from "../../plugins/resp.ts";

const [kind, where, port, ackFile, stopFile] = process.argv.slice(2);
let insert: (seq: number) => Promise<unknown>;
let close: () => Promise<unknown>;
if (kind === "mysql") {
  const conn = await mysql.createConnection({ socketPath: where, user: "root" });
  insert = (seq) => conn.query("INSERT INTO app.commits (seq) VALUES (?)", [seq]);
  close = () => conn.end();
} else if (kind === "redis") {
  const redis = await RedisConnection.open({ socket: where }, new AbortController().signal);
  insert = (seq) => redis.command("RPUSH", "log", seq);
  close = () => redis.end();
} else if (kind === "sqlite") {
  const { DatabaseSync } = await import("node:sqlite");
  const db = new DatabaseSync(where);
  db.exec("PRAGMA busy_timeout = 60000");
  const statement = db.prepare("INSERT INTO commits (seq) VALUES (?)");
  insert = (seq) => Promise.resolve(statement.run(seq));
  close = () => Promise.resolve(db.close());
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
