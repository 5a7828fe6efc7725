/**
 * TLS material of both servers, read from files (VEIL_TLS_CERT_FILE,
 * VEIL_TLS_KEY_FILE, VEIL_TLS_CLIENT_CA_FILE, VEIL_TLS_REST_CLIENT_CA_FILE) and reloaded without a restart:
 * the files are polled for changes and `reload()` (SIGHUP) rereads them. New
 * material is checked (the key matches the certificate, Node accepts it)
 * before it replaces the old one; bad material is logged and ignored, so a
 * half-written certificate never takes a server down.
 */
import { unwatchFile, watchFile } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { createSecureContext } from 'node:tls';
import { X509Certificate, createPrivateKey } from 'node:crypto';
import type { Logger } from 'pino';

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
  const read = async (file: string, what: string): Promise<Buffer> => {
    try {
      return await readFile(file);
    } catch (error) {
      throw new TlsMaterialError(`cannot read the TLS ${what} ${file}: ${(error as Error).message}`);
    }
  };
  const cert = await read(files.certFile, 'certificate');
  const key = await read(files.keyFile, 'key');
  const clientCa = files.clientCaFile === undefined ? null : await read(files.clientCaFile, 'client CA');
  const restClientCa = files.restClientCaFile === undefined ? null : await read(files.restClientCaFile, 'REST client CA');
  let leaf: X509Certificate;
  try {
    leaf = new X509Certificate(cert);
  } catch (error) {
    throw new TlsMaterialError(`${files.certFile} is not a PEM certificate: ${(error as Error).message}`);
  }
  try {
    if (!leaf.checkPrivateKey(createPrivateKey(key))) throw new Error('the key does not belong to the certificate');
    createSecureContext({ cert, key, ...(clientCa && { ca: clientCa }) });
  } catch (error) {
    throw new TlsMaterialError(`TLS material refused (${files.certFile}, ${files.keyFile}): ${(error as Error).message}`);
  }
  for (const [ca, file] of [[clientCa, files.clientCaFile], [restClientCa, files.restClientCaFile]] as const) {
    if (ca === null) continue;
    try {
      new X509Certificate(ca);
      createSecureContext({ ca });
    } catch (error) {
      throw new TlsMaterialError(`${file} is not a PEM certificate: ${(error as Error).message}`);
    }
  }
  return { cert, key, clientCa, restClientCa, fingerprint: leaf.fingerprint256, validTo: leaf.validTo };
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
  const log = options.logger.child({ component: 'tls' });
  let material = await readTlsMaterial(files);
  log.info({ fingerprint: material.fingerprint, validTo: material.validTo, mutual: material.clientCa !== null, restMutual: material.restClientCa !== null }, 'TLS material loaded');
  const listeners: Array<(m: TlsMaterial) => void> = [];
  let reloading: Promise<boolean> | null = null;
  const sameCa = (a: Buffer | null, b: Buffer | null): boolean => (a === null ? b === null : b !== null && a.equals(b));
  const same = (a: TlsMaterial, b: TlsMaterial): boolean =>
    a.cert.equals(b.cert) && a.key.equals(b.key) && sameCa(a.clientCa, b.clientCa) && sameCa(a.restClientCa, b.restClientCa);
  const reload = (): Promise<boolean> =>
    (reloading ??= (async () => {
      try {
        const next = await readTlsMaterial(files);
        if (same(next, material)) return false;
        material = next;
        for (const listener of listeners) listener(next);
        log.info({ fingerprint: next.fingerprint, validTo: next.validTo, mutual: next.clientCa !== null }, 'TLS material reloaded');
        return true;
      } catch (error) {
        log.error({ err: error }, 'TLS material not reloaded; the previous material stays in use');
        return false;
      } finally {
        reloading = null;
      }
    })());
  const watched = [files.certFile, files.keyFile, ...(files.clientCaFile ? [files.clientCaFile] : []), ...(files.restClientCaFile ? [files.restClientCaFile] : [])];
  let timer: NodeJS.Timeout | null = null;
  // A renewal replaces several files: settle briefly so the pair is read together.
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
