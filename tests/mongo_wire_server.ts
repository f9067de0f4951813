/**
 * A MongoDB wire-protocol server for tests (no MongoDB server can be
 * installed here). It speaks OP_QUERY (the driver's first handshake) and
 * OP_MSG, and implements what the plugin uses, for real: `hello`, `fsync`
 * with lock counting, `fsyncUnlock` (an error when not locked),
 * `currentOp` (reports `fsyncLock`), and `insert`/`find`, where an insert
 * waits while the server is fsync-locked. It has no users: every SASL
 * attempt fails as a wrong password does.
 *
 * @module
 */
import { BSON, Long } from "bson";
import { createServer, type Server, type Socket } from "node:net";

/** What the test can read and change. */
export interface MongoWireServer {
  port: number;
  uri: string;
  /** Current fsync lock count. */
  lockCount(): number;
  /** Sets the lock count (another tool's lock). */
  setLockCount(n: number): void;
  /** Every lock/unlock/insert as it happened. */
  events: { at: number; op: string; lockCount: number }[];
  /** Documents per collection. */
  documents: Map<string, Record<string, unknown>[]>;
  /** Drops every client connection (the lock stays: fsync locks outlive connections). */
  dropConnections(): void;
  close(): Promise<void>;
}

const OP_REPLY = 1;
const OP_QUERY = 2004;
const OP_MSG = 2013;

function header(length: number, requestId: number, responseTo: number, opCode: number): Buffer {
  const b = Buffer.alloc(16);
  b.writeInt32LE(length, 0);
  b.writeInt32LE(requestId, 4);
  b.writeInt32LE(responseTo, 8);
  b.writeInt32LE(opCode, 12);
  return b;
}

function readCString(buf: Buffer, offset: number): [string, number] {
  const end = buf.indexOf(0, offset);
  return [buf.toString("utf8", offset, end), end + 1];
}

/**
 * Starts the server on 127.0.0.1 (a free port).
 *
 * @example
 * ```ts
 * const mongo = await startMongoWireServer({ silentOn: ["buildInfo"] });
 * try { ... mongo.lockCount() ... } finally { await mongo.close(); }
 * ```
 */
export async function startMongoWireServer(
  options: {
    /** Commands that get no reply at all: a server that accepted the login and then went silent. */
    silentOn?: string[];
  } = {},
): Promise<MongoWireServer> {
  let lockCount = 0;
  let nextId = 1;
  let connectionId = 0;
  const events: MongoWireServer["events"] = [];
  const documents = new Map<string, Record<string, unknown>[]>();
  let unlockWaiters: (() => void)[] = [];
  const sockets = new Set<Socket>();
  const started = performance.now();
  const note = (op: string) =>
    events.push({ at: Math.round(performance.now() - started), op, lockCount });

  async function command(
    body: Record<string, unknown>,
    connection: number,
  ): Promise<Record<string, unknown>> {
    const name = Object.keys(body)[0];
    switch (name) {
      case "hello":
      case "isMaster":
      case "ismaster":
        return {
          helloOk: true,
          isWritablePrimary: true,
          ismaster: true,
          maxBsonObjectSize: 16 * 1024 * 1024,
          maxMessageSizeBytes: 48_000_000,
          maxWriteBatchSize: 100_000,
          localTime: new Date(),
          logicalSessionTimeoutMinutes: 30,
          connectionId: connection,
          minWireVersion: 0,
          maxWireVersion: 21,
          readOnly: false,
          ...(body.saslSupportedMechs ? { saslSupportedMechs: ["SCRAM-SHA-256"] } : {}),
          ok: 1,
        };
      case "saslStart":
      case "saslContinue":
      case "authenticate":
        return {
          ok: 0,
          errmsg: "Authentication failed.",
          code: 18,
          codeName: "AuthenticationFailed",
        };
      case "ping":
      case "endSessions":
      case "killCursors":
        return { ok: 1 };
      case "buildInfo":
      case "buildinfo":
        return { version: "7.0.0-vmsnap-wire-test", versionArray: [7, 0, 0, 0], ok: 1 };
      case "connectionStatus":
        return { authInfo: { authenticatedUsers: [], authenticatedUserRoles: [] }, ok: 1 };
      case "fsync":
        if (body.lock) {
          lockCount++;
          note("lock");
          return {
            info: "now locked against writes, use db.fsyncUnlock() to unlock",
            lockCount: Long.fromNumber(lockCount),
            ok: 1,
          };
        }
        note("fsync");
        return { numFiles: 1, ok: 1 };
      case "fsyncUnlock":
        if (lockCount === 0) {
          note("unlock-refused");
          return {
            ok: 0,
            errmsg: "fsyncUnlock called when not locked",
            code: 125,
            codeName: "CommandFailed",
          };
        }
        lockCount--;
        note("unlock");
        if (lockCount === 0) {
          for (const wake of unlockWaiters) wake();
          unlockWaiters = [];
        }
        return { info: "fsyncUnlock completed", lockCount: Long.fromNumber(lockCount), ok: 1 };
      case "currentOp":
        return { inprog: [], ...(lockCount > 0 ? { fsyncLock: true } : {}), ok: 1 };
      case "insert": {
        // Writes wait while the server is fsync-locked, as a real mongod's do.
        while (lockCount > 0) await new Promise<void>((resolve) => unlockWaiters.push(resolve));
        const collection = String(body.insert);
        const docs = (body.documents as Record<string, unknown>[]) ?? [];
        documents.set(collection, [...(documents.get(collection) ?? []), ...docs]);
        note("insert");
        return { n: docs.length, ok: 1 };
      }
      case "find": {
        const collection = String(body.find);
        return {
          cursor: {
            id: Long.fromNumber(0),
            ns: `${body.$db}.${collection}`,
            firstBatch: documents.get(collection) ?? [],
          },
          ok: 1,
        };
      }
      default:
        return {
          ok: 0,
          errmsg: `no such command: '${name}'`,
          code: 59,
          codeName: "CommandNotFound",
        };
    }
  }

  async function handle(socket: Socket, message: Buffer, connection: number): Promise<void> {
    const requestId = message.readInt32LE(4);
    const opCode = message.readInt32LE(12);
    if (opCode === OP_QUERY) {
      let offset = 20;
      [, offset] = readCString(message, offset);
      offset += 8; // numberToSkip, numberToReturn
      const size = message.readInt32LE(offset);
      const query = BSON.deserialize(message.subarray(offset, offset + size));
      const reply = BSON.serialize(await command(query, connection));
      const head = Buffer.alloc(20);
      head.writeInt32LE(0, 0); // responseFlags
      head.writeBigInt64LE(0n, 4); // cursorID
      head.writeInt32LE(0, 12); // startingFrom
      head.writeInt32LE(1, 16); // numberReturned
      const length = 16 + head.length + reply.length;
      socket.write(Buffer.concat([header(length, nextId++, requestId, OP_REPLY), head, reply]));
      return;
    }
    if (opCode !== OP_MSG) {
      socket.destroy();
      return;
    }
    const flags = message.readUInt32LE(16);
    const end = message.length - (flags & 1 ? 4 : 0);
    let offset = 20;
    let body: Record<string, unknown> = {};
    const sequences: Record<string, unknown[]> = {};
    while (offset < end) {
      const kind = message[offset++];
      const size = message.readInt32LE(offset);
      if (kind === 0) {
        body = BSON.deserialize(message.subarray(offset, offset + size));
        offset += size;
      } else {
        const sectionEnd = offset + size;
        let [id, at] = readCString(message, offset + 4);
        const docs: unknown[] = [];
        while (at < sectionEnd) {
          const docSize = message.readInt32LE(at);
          docs.push(BSON.deserialize(message.subarray(at, at + docSize)));
          at += docSize;
        }
        sequences[id] = docs;
        offset = sectionEnd;
        id = "";
      }
    }
    Object.assign(body, sequences);
    if (options.silentOn?.includes(Object.keys(body)[0])) {
      note(`silent:${Object.keys(body)[0]}`);
      return;
    }
    const reply = BSON.serialize(await command(body, connection));
    const length = 16 + 4 + 1 + reply.length;
    const flagBits = Buffer.alloc(5);
    socket.write(Buffer.concat([header(length, nextId++, requestId, OP_MSG), flagBits, reply]));
  }

  const server: Server = createServer((socket) => {
    sockets.add(socket);
    const connection = ++connectionId;
    let pending = Buffer.alloc(0);
    socket.on("data", (chunk: Buffer) => {
      pending = Buffer.concat([pending, chunk]);
      while (pending.length >= 4 && pending.length >= pending.readInt32LE(0)) {
        const length = pending.readInt32LE(0);
        const message = pending.subarray(0, length);
        pending = pending.subarray(length);
        handle(socket, Buffer.from(message), connection).catch(() => socket.destroy());
      }
    });
    socket.on("error", () => {});
    socket.on("close", () => sockets.delete(socket));
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const port = (server.address() as { port: number }).port;
  return {
    port,
    uri: `mongodb://127.0.0.1:${port}/?directConnection=true`,
    lockCount: () => lockCount,
    setLockCount: (n) => {
      lockCount = n;
    },
    events,
    documents,
    dropConnections: () => {
      for (const s of sockets) s.destroy();
    },
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
}
