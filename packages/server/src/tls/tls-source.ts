/**
 * TLS material of both servers, read from files (VEIL_TLS_CERT_FILE,
 * VEIL_TLS_KEY_FILE, VEIL_TLS_CLIENT_CA_FILE, VEIL_TLS_REST_CLIENT_CA_FILE) and reloaded without a restart:
 * the files are polled for changes and `reload()` (SIGHUP) rereads them. New
 * material is checked (the key matches the certificate, Node accepts it)
 * before it replaces the old one; bad material is logged and ignored, so a
 * half-written certificate never takes a server down. The reading, checks and
 * polling are @veil/custodian's (its tls-files.ts: the custodians' TLS too).
 */
import type { Logger } from 'pino';
import { readTlsFileSet, sameBytes, watchTlsMaterial } from '@veil/custodian';

export interface TlsFiles {
  /** PEM certificate chain of the servers (leaf first). */
  certFile: string;
  /** PEM private key of that certificate. */
  keyFile: string;
  /** PEM CA certificates device certificates must chain to (mutual TLS on gRPC); undefined: no client certificates. */
  clientCaFile: string | undefined;
  /** PEM CA certificates REST callers' certificates must chain to (mutual TLS on REST); undefined: none asked for. */
  restClientCaFile?: string | undefined;
}

/** One consistent set of TLS material. */
export interface TlsMaterial {
  cert: Buffer;
  key: Buffer;
  clientCa: Buffer | null;
  restClientCa: Buffer | null;
  /** SHA-256 fingerprint of the leaf certificate (for logs). */
  fingerprint: string;
  /** Leaf certificate's expiry. */
  validTo: string;
}

export interface TlsSource {
  readonly files: TlsFiles;
  current(): TlsMaterial;
  /** Called with each new material after a successful reload. */
  onChange(listener: (material: TlsMaterial) => void): void;
  /** Rereads the files; resolves true when new material took effect, false when unchanged or refused. */
  reload(): Promise<boolean>;
  close(): void;
}

export class TlsMaterialError extends Error {
  override readonly name = 'TlsMaterialError';
  readonly code = 'tls_material';
}

/** Reads and checks TLS material; throws TlsMaterialError with the file at fault. */
export async function readTlsMaterial(files: TlsFiles): Promise<TlsMaterial> {
  const read = await readTlsFileSet(
    { certFile: files.certFile, keyFile: files.keyFile, caFiles: { 'client CA': files.clientCaFile, 'REST client CA': files.restClientCaFile } },
    { requireCertificate: true, fail: (message) => new TlsMaterialError(message) },
  );
  return {
    cert: read.cert!,
    key: read.key!,
    clientCa: read.cas['client CA'],
    restClientCa: read.cas['REST client CA'],
    fingerprint: read.fingerprint!,
    validTo: read.validTo!,
  };
}

export interface TlsSourceOptions {
  files: TlsFiles;
  logger: Logger;
  /** How often the files are checked for changes, ms. Default 10 000. */
  pollIntervalMs?: number;
}

/** Loads the material (throws on bad files) and watches the files. */
export async function createTlsSource(options: TlsSourceOptions): Promise<TlsSource> {
  const { files } = options;
  const watched = await watchTlsMaterial({
    files: [files.certFile, files.keyFile, ...(files.clientCaFile ? [files.clientCaFile] : []), ...(files.restClientCaFile ? [files.restClientCaFile] : [])],
    read: () => readTlsMaterial(files),
    same: (a, b) => a.cert.equals(b.cert) && a.key.equals(b.key) && sameBytes(a.clientCa, b.clientCa) && sameBytes(a.restClientCa, b.restClientCa),
    describe: (m) => ({ fingerprint: m.fingerprint, validTo: m.validTo, mutual: m.clientCa !== null, restMutual: m.restClientCa !== null }),
    logger: options.logger.child({ component: 'tls' }),
    pollIntervalMs: options.pollIntervalMs,
  });
  return { ...watched, files };
}
