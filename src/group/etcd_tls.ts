/**
 * Checks the PEM texts a member gives etcd's TLS before any connection, so
 * that a wrong file is named as such (the runtimes' own TLS errors name no
 * file, and Bun's says only that a socket could not be opened).
 *
 * @module
 */
import { createPrivateKey, X509Certificate } from "node:crypto";
import { VmsnapError } from "../errors.ts";
import type { EtcdTls } from "./etcd_http.ts";

/** Where each PEM text came from, for the messages. */
export interface EtcdTlsFiles {
  caFile?: string;
  certFile?: string;
  keyFile?: string;
}

/**
 * Throws `GroupTlsInvalid` when the CA or the client certificate is not a
 * PEM certificate, the key is not a PEM private key, only one of
 * certificate and key is given, or the key is not the certificate's.
 *
 * @example
 * ```ts
 * import { checkEtcdTls } from "./etcd_tls.ts";
 * checkEtcdTls({}, {}); // nothing to check
 * ```
 */
export function checkEtcdTls(tls: EtcdTls, files: EtcdTlsFiles = {}): void {
  const name = (file: string | undefined, what: string) => file ?? what;
  if (tls.ca !== undefined) parseCertificate(tls.ca, name(files.caFile, "the CA certificate"));
  if ((tls.cert === undefined) !== (tls.key === undefined)) {
    throw new VmsnapError(
      "GroupTlsInvalid",
      `group.etcd has ${
        tls.cert === undefined ? "a key but no certificate" : "a certificate but no key"
      }. Fix: set both certFile and keyFile (mutual TLS), or neither.`,
    );
  }
  if (tls.cert === undefined || tls.key === undefined) return;
  const certFile = name(files.certFile, "the client certificate");
  const keyFile = name(files.keyFile, "the client key");
  const cert = parseCertificate(tls.cert, certFile);
  let key;
  try {
    key = createPrivateKey(tls.key);
  } catch (cause) {
    throw new VmsnapError(
      "GroupTlsInvalid",
      `${keyFile} is not a PEM private key (unencrypted). Fix: check it with openssl pkey -in ${keyFile} -noout.`,
      { cause },
    );
  }
  if (!cert.checkPrivateKey(key)) {
    throw new VmsnapError(
      "GroupTlsInvalid",
      `${keyFile} is not the key of ${certFile}. Fix: point keyFile at the key the certificate was made for.`,
    );
  }
}

function parseCertificate(pem: string, file: string): X509Certificate {
  try {
    return new X509Certificate(pem);
  } catch (cause) {
    throw new VmsnapError(
      "GroupTlsInvalid",
      `${file} is not a PEM certificate. Fix: check it with openssl x509 -in ${file} -noout.`,
      { cause },
    );
  }
}
