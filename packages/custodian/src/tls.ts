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
import { X509Certificate, createPrivateKey } from 'node:crypto';
import { unwatchFile, watchFile } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { createSecureContext, type SecureContextOptions } from 'node:tls';
import * as grpc from '@grpc/grpc-js';
import type { Logger } from 'pino';
import { CustodianError } from './errors.js';

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

const read = async (file: string, what: string): Promise<Buffer> => {
  try {
    return await readFile(file);
  } catch (error) {
    throw new CustodianError('invalid_key_material', `cannot read the TLS ${what} ${file}: ${(error as Error).message}`);
  }
};

/** Reads and checks the files: the key belongs to the certificate, the CA parses, Node accepts the set. */
export async function readTlsFiles(files: TlsFileSet, role: 'server' | 'client'): Promise<TlsFileMaterial> {
  if ((files.certFile === undefined) !== (files.keyFile === undefined)) {
    throw new CustodianError('invalid_key_material', 'a TLS certificate and its key go together');
  }
  if (role === 'server' && files.certFile === undefined) throw new CustodianError('invalid_key_material', 'a TLS server needs a certificate and a key');
  const cert = files.certFile === undefined ? null : await read(files.certFile, 'certificate');
  const key = files.keyFile === undefined ? null : await read(files.keyFile, 'key');
  const ca = files.caFile === undefined ? null : await read(files.caFile, 'CA bundle');
  let fingerprint: string | null = null;
  if (cert !== null && key !== null) {
    let leaf: X509Certificate;
    try {
      leaf = new X509Certificate(cert);
    } catch (error) {
      throw new CustodianError('invalid_key_material', `${files.certFile} is not a PEM certificate: ${(error as Error).message}`);
    }
    try {
      if (!leaf.checkPrivateKey(createPrivateKey(key))) throw new Error('the key does not belong to the certificate');
    } catch (error) {
      throw new CustodianError('invalid_key_material', `TLS material refused (${files.certFile}, ${files.keyFile}): ${(error as Error).message}`);
    }
    fingerprint = leaf.fingerprint256;
  }
  if (ca !== null) {
    try {
      new X509Certificate(ca);
    } catch (error) {
      throw new CustodianError('invalid_key_material', `${files.caFile} is not a PEM certificate: ${(error as Error).message}`);
    }
  }
  try {
    createSecureContext({ ...(cert && { cert }), ...(key && { key }), ...(ca && { ca }) });
  } catch (error) {
    throw new CustodianError('invalid_key_material', `TLS material refused: ${(error as Error).message}`);
  }
  return { cert, key, ca, fingerprint };
}

/** TLS material read from files and kept current. */
export interface WatchedTlsFiles {
  readonly files: TlsFileSet;
  current(): TlsFileMaterial;
  /** Called with each new material after a successful reload. */
  onChange(listener: (material: TlsFileMaterial) => void): void;
  /** Rereads the files now (e.g. on SIGHUP); true when new material took effect. */
  reload(): Promise<boolean>;
  close(): void;
}

export interface WatchTlsFilesOptions {
  readonly files: TlsFileSet;
  readonly role: 'server' | 'client';
  readonly logger: Logger;
  /** How often the files are checked for changes, ms. Default 10,000. */
  readonly pollIntervalMs?: number;
}

const same = (a: Buffer | null, b: Buffer | null): boolean => (a === null ? b === null : b !== null && a.equals(b));

/** Loads the material (throws `invalid_key_material` on bad files) and watches the files. */
export async function watchTlsFiles(options: WatchTlsFilesOptions): Promise<WatchedTlsFiles> {
  const { files, role } = options;
  const log = options.logger.child({ component: 'tls', role });
  let material = await readTlsFiles(files, role);
  log.info({ fingerprint: material.fingerprint, ca: material.ca !== null }, 'TLS material loaded');
  const listeners: Array<(m: TlsFileMaterial) => void> = [];
  let reloading: Promise<boolean> | null = null;
  const reload = (): Promise<boolean> =>
    (reloading ??= (async () => {
      try {
        const next = await readTlsFiles(files, role);
        if (same(next.cert, material.cert) && same(next.key, material.key) && same(next.ca, material.ca)) return false;
        material = next;
        for (const listener of listeners) listener(next);
        log.info({ fingerprint: next.fingerprint, ca: next.ca !== null }, 'TLS material reloaded');
        return true;
      } catch (error) {
        log.error({ reason: (error as Error).message }, 'TLS material not reloaded; the previous material stays in use');
        return false;
      } finally {
        reloading = null;
      }
    })());
  const watched = [files.certFile, files.keyFile, files.caFile].filter((f): f is string => f !== undefined);
  let timer: NodeJS.Timeout | null = null;
  // A renewal replaces several files: settle briefly so the set is read together.
  const changed = (): void => {
    if (timer !== null) clearTimeout(timer);
    timer = setTimeout(() => {
      timer = null;
      void reload();
    }, 200);
    timer.unref?.();
  };
  const interval = options.pollIntervalMs ?? 10_000;
  for (const file of watched) watchFile(file, { interval, persistent: false }, changed);
  return {
    files,
    current: () => material,
    onChange: (listener) => void listeners.push(listener),
    reload,
    close() {
      if (timer !== null) clearTimeout(timer);
      for (const file of watched) unwatchFile(file, changed);
    },
  };
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
