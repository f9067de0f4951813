/**
 * scripts/bun/overrides.ts: the compiled binary's copy of bson allocates its
 * serialization buffer without zero-filling it (17 MiB made resident now and
 * then: bench/ANALYSIS.md, Peak RSS). The copy must serialize exactly as bson
 * does, first call and later ones (tests/e2e/mongodb_test.ts: the binary
 * carries it). whatwg-url is the runtime's own URL in the binary, and saslprep
 * loads on first use: the MongoDB driver must parse connection strings and
 * prepare passwords the same with them, under Bun.
 */
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { readFileSync, symlinkSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import { join } from "node:path";
import { BSON, Long } from "bson";
import { writeBundlerTsconfig } from "../../scripts/bun/overrides.ts";
import { ROOT, secureDir } from "../helpers.ts";

Deno.test("the bson override serializes every command the plugin sends as bson does", () => {
  const work = secureDir("bun-overrides-");
  try {
    const tsconfig = JSON.parse(readFileSync(writeBundlerTsconfig(work.dir), "utf8"));
    const [patchedFile] = tsconfig.compilerOptions.paths.bson;
    assert.match(
      readFileSync(patchedFile, "utf8"),
      /let buffer = ByteUtils\.allocateUnsafe\(MAXSIZE\);/,
    );
    assert.deepEqual(tsconfig.compilerOptions.paths["jsonc-parser"], [
      join(ROOT, "scripts", "bun", "jsonc_slim.js"),
    ]);
    const patched = createRequire(import.meta.url)(patchedFile) as typeof import("bson");
    const commands = [
      { hello: 1, helloOk: true, client: { driver: { name: "nodejs", version: "7.9.0" } } },
      { saslStart: 1, mechanism: "SCRAM-SHA-256", payload: new BSON.Binary(new Uint8Array(40)) },
      { fsync: 1, lock: true, $db: "admin", lsid: { id: new BSON.UUID() } },
      { currentOp: 1, $all: false, $db: "admin", txnNumber: Long.fromNumber(7) },
      { fsyncUnlock: 1, $db: "admin" },
      { ping: 1, $db: "admin" },
    ];
    // Twice: the second round writes over what the first left in the reused buffer.
    for (const round of [1, 2]) {
      for (const command of commands) {
        assert.deepEqual(
          patched.serialize(command),
          BSON.serialize(command),
          `round ${round}: ${Object.keys(command)[0]}`,
        );
      }
    }
  } finally {
    work.cleanup();
  }
});

/** Connection strings of every shape the driver takes, valid and not. */
const MONGODB_URIS = [
  "mongodb://127.0.0.1:27017",
  "mongodb://user:p%40ss%3Aw0rd@db1.example.com:27017,db2.example.com:27018/admin?replicaSet=rs0&authSource=admin",
  "mongodb://backup:secret@[::1]:27017/?directConnection=true&tls=true&tlsAllowInvalidCertificates=true",
  "mongodb://u:pw@%2Fvar%2Frun%2Fmongodb%2Fmongod.sock/?authMechanism=SCRAM-SHA-256",
  "mongodb+srv://user:pw@cluster0.example.mongodb.net/?retryWrites=true&w=majority&appName=x",
  "mongodb://h1,h2,h3/db?ReadPreference=secondaryPreferred&readPreferenceTags=dc:ny,rack:1&readPreferenceTags=",
  "mongodb://h/?tlsCAFile=/etc/ssl/ca%20file.pem&tlsCertificateKeyFile=/etc/ssl/c.pem&TLS=true",
  "mongodb://us%C3%A9r:p%C3%A4ss@h/?authMechanism=PLAIN&authSource=$external",
  "mongodb://h/?compressors=zlib,zstd&zlibCompressionLevel=4&connectTimeoutMS=3000",
  "mongodb://h:1/d%20b?appname=a%20b&maxPoolSize=1",
  "mongodb://CN=x,OU=y@h/?authMechanism=MONGODB-X509&tls=true",
  "mongodb://h/?authMechanismProperties=SERVICE_NAME:mongodb&authMechanism=GSSAPI",
  "mongodb://h#frag",
  "mongodb://h/?a=%zz",
  "mongodb://ü.example.com/",
  "mongodb://h:99999/",
  "mongodb://h/db?w=1&journal=true&wtimeoutMS=5",
  "notmongo://h",
  "mongodb://u:p:q@h",
  "mongodb://@h",
];

/** Parses each URI as the plugin's client does and prints what the driver made of it. */
const PARSE_SCRIPT = `
import { MongoClient } from "mongodb";
// The driver's own way in (require): Bun bundles it, and resolves it to the package's CommonJS.
const { ConnectionString } = require("mongodb-connection-string-url");
const out = [];
for (const uri of ${JSON.stringify(MONGODB_URIS)}) {
  const r = { uri };
  try {
    const cs = new ConnectionString(uri);
    r.cs = [cs.hosts, cs.username, cs.password, cs.pathname, cs.search, cs.hash, cs.isSRV,
      [...cs.searchParams], cs.searchParams.get("authsource"), cs.toString(), cs.redact().toString()];
  } catch (e) { r.csError = e.name + ": " + e.message; }
  try {
    const o = new MongoClient(uri, { serverSelectionTimeoutMS: 1000, maxPoolSize: 1 }).options;
    r.options = [o.hosts.map(String), o.dbName, o.replicaSet, o.tls, o.srvHost, o.credentials,
      o.directConnection, o.readPreference?.mode, o.readPreference?.tags, o.compressors,
      o.appName, o.tlsCAFile, o.tlsCertificateKeyFile, o.writeConcern];
  } catch (e) { r.optionsError = e.name + ": " + e.message; }
  out.push(r);
}
// The driver's SCRAM-SHA-256 password preparation (the binary's stand-in loads it when called).
const saslprep = require("@mongodb-js/saslprep");
for (const input of ["pencil", "I\\u00ADX", "user", "\\u2168", "\\u00AA", "a\\u00A0b", "\\u0007"]) {
  try { out.push({ saslprep: [input, saslprep(input), saslprep.saslprep(input, { allowUnassigned: true })] }); }
  catch (e) { out.push({ saslprep: [input, e.name + ": " + e.message] }); }
}
console.log(JSON.stringify(out));
`;

Deno.test("under Bun, the driver parses connection strings and prepares passwords as with the packages", () => {
  const work = secureDir("bun-overrides-");
  try {
    const bun = join(ROOT, "node_modules", "bun", "bin", "bun.exe");
    symlinkSync(join(ROOT, "node_modules"), join(work.dir, "node_modules"));
    const script = join(work.dir, "parse.js");
    writeFileSync(script, PARSE_SCRIPT);
    const tsconfig = writeBundlerTsconfig(join(work.dir, "overrides"));
    const bundled = join(work.dir, "parse.bundled.js");
    execFileSync(bun, [
      "build",
      "--target=bun",
      `--tsconfig-override=${tsconfig}`,
      "--outfile",
      bundled,
      script,
    ], { stdio: "pipe" });
    const bundle = readFileSync(bundled, "utf8");
    assert.ok(!bundle.includes("tr46"), "whatwg-url is not in the bundle");
    assert.ok(bundle.includes("saslprep.cjs"), "the saslprep stand-in is in the bundle");
    const withPackage = JSON.parse(execFileSync(bun, ["run", script], { encoding: "utf8" }));
    const withRuntime = JSON.parse(execFileSync(bun, ["run", bundled], { encoding: "utf8" }));
    assert.equal(withPackage.length, MONGODB_URIS.length + 7);
    assert.ok(withPackage.some((r: { saslprep?: string[] }) => r.saslprep?.[1] === "IX"));
    assert.ok(withPackage.filter((r: { options?: unknown }) => r.options).length >= 10);
    assert.deepEqual(withRuntime, withPackage);
  } finally {
    work.cleanup();
  }
});
