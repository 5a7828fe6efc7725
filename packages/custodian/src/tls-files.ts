/**
 * TLS material read from PEM files and kept current, without a restart: the one implementation
 * behind the custodian's server and the coordinator's channel to custodians (tls.ts) and the
 * coordinator's own gRPC and HTTPS servers (@veil/server, tls/tls-source.ts, which depends on this
 * package). New material is checked (the key belongs to the certificate, each CA bundle parses,
 * Node accepts them) before it replaces the old; the files are polled, and a set that fails the
 * checks (a half-written renewal) is logged and ignored: the previous material stays in use.
 */
import { X509Certificate, createPrivateKey } from 'node:crypto';
import { unwatchFile, watchFile } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { createSecureContext } from 'node:tls';
import type { Logger } from 'pino';

/** PEM files read together: a certificate chain (leaf first) and its key, or neither, and CA bundles by name. */
export interface TlsFileSetOf<Ca extends string> {
  readonly certFile: string | undefined;
  readonly keyFile: string | undefined;
  /** Each CA bundle's file (undefined: none), by a name that error texts use ("client CA"). */
  readonly caFiles: Readonly<Record<Ca, string | undefined>>;
}

/** What {@link readTlsFileSet} read: the bytes, and the leaf certificate's SHA-256 fingerprint and expiry (null without one). */
export interface TlsFileContents<Ca extends string> {
  readonly cert: Buffer | null;
  readonly key: Buffer | null;
  readonly cas: Readonly<Record<Ca, Buffer | null>>;
  readonly fingerprint: string | null;
  readonly validTo: string | null;
}

/**
 * Reads and checks `files`; throws `fail(text)` naming the file at fault. A certificate needs its
 * key and the other way round; `requireCertificate` (a server) needs both.
 */
export async function readTlsFileSet<Ca extends string>(
  files: TlsFileSetOf<Ca>,
  options: { requireCertificate: boolean; fail: (message: string) => Error },
): Promise<TlsFileContents<Ca>> {
  const { fail } = options;
  if ((files.certFile === undefined) !== (files.keyFile === undefined)) throw fail('a TLS certificate and its key go together');
  if (options.requireCertificate && files.certFile === undefined) throw fail('a TLS server needs a certificate and a key');
  const read = async (file: string, what: string): Promise<Buffer> => {
    try {
      return await readFile(file);
    } catch (error) {
      throw fail(`cannot read the TLS ${what} ${file}: ${(error as Error).message}`);
    }
  };
  const cert = files.certFile === undefined ? null : await read(files.certFile, 'certificate');
  const key = files.keyFile === undefined ? null : await read(files.keyFile, 'key');
  let leaf: X509Certificate | null = null;
  if (cert !== null && key !== null) {
    try {
      leaf = new X509Certificate(cert);
    } catch (error) {
      throw fail(`${files.certFile} is not a PEM certificate: ${(error as Error).message}`);
    }
    try {
      if (!leaf.checkPrivateKey(createPrivateKey(key))) throw new Error('the key does not belong to the certificate');
      createSecureContext({ cert, key });
    } catch (error) {
      throw fail(`TLS material refused (${files.certFile}, ${files.keyFile}): ${(error as Error).message}`);
    }
  }
  const cas = {} as Record<Ca, Buffer | null>;
  for (const [name, file] of Object.entries(files.caFiles) as [Ca, string | undefined][]) {
    if (file === undefined) {
      cas[name] = null;
      continue;
    }
    const ca = await read(file, name);
    try {
      new X509Certificate(ca);
      createSecureContext({ ca });
    } catch (error) {
      throw fail(`${file} is not a PEM certificate: ${(error as Error).message}`);
    }
    cas[name] = ca;
  }
  return { cert, key, cas, fingerprint: leaf?.fingerprint256 ?? null, validTo: leaf?.validTo ?? null };
}

/** Whether two files read the same (both absent, or the same bytes). */
export const sameBytes = (x: Buffer | null, y: Buffer | null): boolean => (x === null ? y === null : y !== null && x.equals(y));

/** Material of type `M` read from files and kept current. */
export interface WatchedTlsMaterial<M> {
  current(): M;
  /** Called with each new material after a successful reload. */
  onChange(listener: (material: M) => void): void;
  /** Rereads the files now (e.g. on SIGHUP); true when new material took effect, false when unchanged or refused. */
  reload(): Promise<boolean>;
  close(): void;
}

export interface WatchTlsMaterialOptions<M> {
  /** The files to poll. */
  readonly files: readonly string[];
  /** Reads and checks the files (throws on bad material); a new `M` per read. */
  read(): Promise<M>;
  /** Whether a new read holds what the current one does (then nothing changes). */
  same(a: M, b: M): boolean;
  /** The fields logged with each load (fingerprint, expiry; never key bytes). */
  describe(material: M): Record<string, unknown>;
  /** Logs `TLS material loaded` / `reloaded` / `not reloaded`. */
  readonly logger: Logger;
  /** How often the files are checked for changes, ms. Default 10,000. */
  readonly pollIntervalMs?: number | undefined;
}

/** Reads the material (throws what `read` throws) and watches its files. */
export async function watchTlsMaterial<M>(options: WatchTlsMaterialOptions<M>): Promise<WatchedTlsMaterial<M>> {
  const { files, logger: log } = options;
  let material = await options.read();
  log.info(options.describe(material), 'TLS material loaded');
  const listeners: Array<(m: M) => void> = [];
  let reloading: Promise<boolean> | null = null;
  const reload = (): Promise<boolean> =>
    (reloading ??= (async () => {
      try {
        const next = await options.read();
        if (options.same(next, material)) return false;
        material = next;
        for (const listener of listeners) listener(next);
        log.info(options.describe(next), 'TLS material reloaded');
        return true;
      } catch (error) {
        log.error({ reason: (error as Error).message }, 'TLS material not reloaded; the previous material stays in use');
        return false;
      } finally {
        reloading = null;
      }
    })());
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
  for (const file of files) watchFile(file, { interval, persistent: false }, changed);
  return {
    current: () => material,
    onChange: (listener) => void listeners.push(listener),
    reload,
    close() {
      if (timer !== null) clearTimeout(timer);
      for (const file of files) unwatchFile(file, changed);
    },
  };
}
