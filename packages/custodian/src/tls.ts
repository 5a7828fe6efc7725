/**
 * TLS between the coordinator and its custodians (issue 12 item 1, issue 11 item 5): the
 * custodian's server credentials (certificate and key, optionally a client CA that the
 * coordinator's certificate must chain to: mutual TLS) and the coordinator's channel credentials
 * (a pinned CA bundle, optionally a client certificate), both read from PEM files, polled for
 * changes and reloaded without a restart (new connections get the new material; a half-written
 * or mismatched file is logged and ignored, the previous material stays in use).
 *
 * A custodian address `grpcs://host:port` in a task descriptor means TLS to that custodian; a
 * plain `host:port` is cleartext (loopback, or a TLS-terminating proxy). TLS 1.2 or later.
 */
import type { SecureContextOptions } from 'node:tls';
import * as grpc from '@grpc/grpc-js';
import type { Logger } from 'pino';
import { CustodianError } from './errors.js';
import { readTlsFileSet, sameBytes, watchTlsMaterial, type WatchedTlsMaterial } from './tls-files.js';

/** PEM files of one side. A server needs cert and key; a client may have neither. */
export interface TlsFileSet {
  /** Certificate chain, leaf first. */
  readonly certFile?: string | undefined;
  readonly keyFile?: string | undefined;
  /**
   * Server: the CA the coordinator's client certificate must chain to (mutual TLS).
   * Client: the CA bundle the custodians' certificates must chain to (pinned; without it, the system CAs).
   */
  readonly caFile?: string | undefined;
}

/** One consistent set of material. */
export interface TlsFileMaterial {
  readonly cert: Buffer | null;
  readonly key: Buffer | null;
  readonly ca: Buffer | null;
  /** SHA-256 fingerprint of the leaf certificate, if any (for logs). */
  readonly fingerprint: string | null;
}

/** Reads and checks the files (tls-files.ts): the key belongs to the certificate, the CA parses, Node accepts the set. */
export async function readTlsFiles(files: TlsFileSet, role: 'server' | 'client'): Promise<TlsFileMaterial> {
  const read = await readTlsFileSet(
    { certFile: files.certFile, keyFile: files.keyFile, caFiles: { 'CA bundle': files.caFile } },
    { requireCertificate: role === 'server', fail: (message) => new CustodianError('invalid_key_material', message) },
  );
  return { cert: read.cert, key: read.key, ca: read.cas['CA bundle'], fingerprint: read.fingerprint };
}

/** TLS material read from files and kept current. */
export interface WatchedTlsFiles extends WatchedTlsMaterial<TlsFileMaterial> {
  readonly files: TlsFileSet;
}

export interface WatchTlsFilesOptions {
  readonly files: TlsFileSet;
  readonly role: 'server' | 'client';
  readonly logger: Logger;
  /** How often the files are checked for changes, ms. Default 10,000. */
  readonly pollIntervalMs?: number;
}

/** Loads the material (throws `invalid_key_material` on bad files) and watches the files. */
export async function watchTlsFiles(options: WatchTlsFilesOptions): Promise<WatchedTlsFiles> {
  const { files, role } = options;
  const watched = await watchTlsMaterial({
    files: [files.certFile, files.keyFile, files.caFile].filter((f): f is string => f !== undefined),
    read: () => readTlsFiles(files, role),
    same: (a, b) => sameBytes(a.cert, b.cert) && sameBytes(a.key, b.key) && sameBytes(a.ca, b.ca),
    describe: (m) => ({ fingerprint: m.fingerprint, ca: m.ca !== null }),
    logger: options.logger.child({ component: 'tls', role }),
    pollIntervalMs: options.pollIntervalMs,
  });
  return { ...watched, files };
}

/**
 * A custodian's server credentials, following `watched`: a new certificate, key or client CA
 * applies to new connections. With a CA, the coordinator must present a certificate that chains
 * to it (mutual TLS); a coordinator without one fails the handshake.
 */
class ReloadableServerCredentials extends grpc.ServerCredentials {
  constructor(material: TlsFileMaterial) {
    const mutual = material.ca !== null;
    super({ requestCert: mutual, rejectUnauthorized: mutual, minVersion: 'TLSv1.2' }, ReloadableServerCredentials.context(material));
  }
  static context(material: TlsFileMaterial): SecureContextOptions {
    return { cert: material.cert ?? undefined, key: material.key ?? undefined, ...(material.ca && { ca: material.ca }) };
  }
  update(material: TlsFileMaterial): void {
    this.updateSecureContextOptions(ReloadableServerCredentials.context(material));
  }
  _equals(other: grpc.ServerCredentials): boolean {
    return other === this;
  }
}

/** Server credentials that follow the watched files (role `server`). */
export function reloadableServerCredentials(watched: WatchedTlsFiles): grpc.ServerCredentials {
  const credentials = new ReloadableServerCredentials(watched.current());
  watched.onChange((material) => credentials.update(material));
  return credentials;
}

/**
 * The coordinator's channel credentials to custodians, following the watched files (role
 * `client`): the pinned CA bundle (system CAs without one) and the client certificate, if any.
 * Returns the same object until the material changes (a channel is rebuilt only then).
 */
export function committeeChannelCredentials(watched: WatchedTlsFiles | null): () => grpc.ChannelCredentials {
  let material: TlsFileMaterial | null = null;
  let credentials: grpc.ChannelCredentials | null = null;
  return () => {
    const now = watched === null ? null : watched.current();
    if (credentials === null || now !== material) {
      material = now;
      credentials = grpc.credentials.createSsl(now?.ca ?? null, now?.key ?? null, now?.cert ?? null);
    }
    return credentials;
  };
}

/** A custodian address as the descriptor names it: `grpcs://host:port` (TLS) or `host:port` (cleartext). */
export function parseCustodianAddress(address: string): { readonly target: string; readonly tls: boolean } {
  const match = /^grpcs:\/\/(.+:\d+)\/?$/.exec(address);
  if (match !== null) return { target: match[1] as string, tls: true };
  return { target: address, tls: false };
}
