/**
 * Running a custodian: read its keys and configuration, open its state, serve gRPC; and the
 * small key files the custodian is configured with (the coordinator's request key, the
 * enrolment authority's key).
 */
import { chmod, mkdir, open, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { pino, type Logger } from 'pino';
import { ed25519Sign, generateEd25519KeyPair, prepareEd25519PrivateKey, type DescriptorFloors } from '@veil/crypto';
import { fromBase64, toBase64 } from './bytes.js';
import { CustodianError } from './errors.js';
import { readCustodianKeys } from './keys.js';
import { openCustodianState } from './state.js';
import { createCustodianService } from './service.js';
import { startCustodianServer, type CustodianServer } from './grpc/server.js';
import { reloadableServerCredentials, watchTlsFiles, type WatchedTlsFiles } from './tls.js';

/** The state file inside a custodian directory. */
export const CUSTODIAN_STATE_FILE = 'answers.jsonl';
export const REQUEST_KEY_FILE = 'coordinator-request-key.json';
export const REQUEST_PUBLIC_FILE = 'coordinator-request-public.json';

/** Paths pino removes from custodian log lines. */
export const CUSTODIAN_REDACT_PATHS = ['shareSum', '*.shareSum', 'share', '*.share', 'sealedShare', '*.sealedShare', 'privateKey', '*.privateKey', 'keys', '*.keys'];

/** The custodian's root logger: JSON lines on stderr, shares and keys redacted. */
export function createCustodianLogger(level = 'info'): Logger {
  return pino({ level, base: { service: 'veil-custodian' }, redact: { paths: CUSTODIAN_REDACT_PATHS, censor: '[redacted]' } }, pino.destination(2));
}

/**
 * Reads a 32-byte Ed25519 public key from a file: JSON with a base64 `publicKey` (or
 * `authorityKey`, `signingKey`) field, or the bare base64 text.
 */
export async function readPublicKeyFile(path: string): Promise<Uint8Array> {
  let text: string;
  try {
    text = (await readFile(path, 'utf8')).trim();
  } catch (error) {
    throw new CustodianError('invalid_key_material', `cannot read ${path}`, { cause: error });
  }
  let value = text;
  if (text.startsWith('{')) {
    const parsed = JSON.parse(text) as Record<string, unknown>;
    const field = parsed.publicKey ?? parsed.authorityKey ?? parsed.signingKey;
    if (typeof field !== 'string') throw new CustodianError('invalid_key_material', `${path} has no base64 publicKey field`);
    value = field;
  }
  try {
    return fromBase64(value, path, 32);
  } catch (error) {
    throw new CustodianError('invalid_key_material', `${path} does not hold a 32-byte base64 public key`, { cause: error });
  }
}

/**
 * Creates the coordinator's request key pair in DIR: `coordinator-request-key.json` (0600, for
 * the coordinator) and `coordinator-request-public.json` (for every custodian's --coordinator-key).
 */
export async function initRequestKey(dir: string): Promise<{ publicKey: string; secretFile: string; publicFile: string }> {
  await mkdir(dir, { recursive: true, mode: 0o700 });
  await chmod(dir, 0o700);
  const pair = generateEd25519KeyPair();
  const secretFile = join(dir, REQUEST_KEY_FILE);
  const publicFile = join(dir, REQUEST_PUBLIC_FILE);
  const write = async (path: string, value: object, mode: number): Promise<void> => {
    const handle = await open(path, 'wx', mode).catch((error: NodeJS.ErrnoException) => {
      throw error.code === 'EEXIST' ? new CustodianError('invalid_key_material', `${path} already exists; refusing to overwrite`) : error;
    });
    try {
      await handle.writeFile(`${JSON.stringify(value, null, 2)}\n`);
      await handle.sync();
    } finally {
      await handle.close();
    }
  };
  const publicKey = toBase64(pair.publicKey);
  await write(secretFile, { version: 1, kind: 'veil-coordinator-request-secret', privateKey: toBase64(pair.privateKey), publicKey }, 0o600);
  await write(publicFile, { version: 1, kind: 'veil-coordinator-request-public', publicKey }, 0o644);
  pair.privateKey.fill(0);
  return { publicKey, secretFile, publicFile };
}

/** Reads the coordinator's request key and returns a signer for {@link CommitteeClientOptions.signRequest}. */
export async function readRequestSigner(path: string): Promise<{ publicKey: Uint8Array; sign: (message: Uint8Array) => Uint8Array }> {
  let parsed: Record<string, unknown>;
  try {
    parsed = JSON.parse(await readFile(path, 'utf8')) as Record<string, unknown>;
  } catch (error) {
    throw new CustodianError('invalid_key_material', `cannot read ${path}`, { cause: error });
  }
  if (parsed.kind !== 'veil-coordinator-request-secret' || typeof parsed.privateKey !== 'string') {
    throw new CustodianError('invalid_key_material', `${path} is not a coordinator request key file`);
  }
  const raw = fromBase64(parsed.privateKey, 'privateKey', 32);
  // Parsed once: the coordinator signs four request headers per round (a stage and a final header
  // for each of t custodians, two of them at the round's end), and parsing the raw key into
  // OpenSSL's form cost more than each signature itself (CPU profile of bench:rounds).
  let privateKey;
  try {
    privateKey = prepareEd25519PrivateKey(raw);
  } finally {
    raw.fill(0);
  }
  return { publicKey: privateKey.publicKey, sign: (message) => ed25519Sign(privateKey, message) };
}

/** Options of {@link runCustodian}. */
export interface RunCustodianOptions {
  /** The directory `veil custodian init` created; the state file lives there too. */
  readonly dir: string;
  /** `host:port`. */
  readonly listen: string;
  /** Files with the coordinator request keys accepted. */
  readonly coordinatorKeyFiles: readonly string[];
  /** Files with the enrolment authority keys trusted. */
  readonly authorityKeyFiles: readonly string[];
  readonly floors: DescriptorFloors;
  readonly maxDevices?: number;
  /** Serve TLS with this certificate chain and key (PEM), fixed. Default: plaintext gRPC (loopback or a TLS proxy). */
  readonly tls?: { readonly certChain: Buffer; readonly privateKey: Buffer };
  /**
   * Serve TLS from files, reloaded without a restart (polled every `pollIntervalMs`, default
   * 10,000, and on {@link RunningCustodian.reloadTls}); with `caFile`, the coordinator must
   * present a client certificate chaining to it (mutual TLS). Takes precedence over `tls`.
   */
  readonly tlsFiles?: { readonly certFile: string; readonly keyFile: string; readonly caFile?: string | undefined; readonly pollIntervalMs?: number };
  readonly logger: Logger;
}

/** A running custodian. */
export interface RunningCustodian extends AsyncDisposable {
  readonly server: CustodianServer;
  /** Rereads the TLS files now (SIGHUP); true when new material took effect. False without TLS files. */
  reloadTls(): Promise<boolean>;
  close(): Promise<void>;
}

/** Starts a custodian from its directory. */
export async function runCustodian(options: RunCustodianOptions): Promise<RunningCustodian> {
  const keys = await readCustodianKeys(options.dir);
  const coordinatorKeys = await Promise.all(options.coordinatorKeyFiles.map(readPublicKeyFile));
  const authorityKeys = await Promise.all(options.authorityKeyFiles.map(readPublicKeyFile));
  const state = await openCustodianState(join(options.dir, CUSTODIAN_STATE_FILE));
  const service = createCustodianService({
    keys,
    state,
    coordinatorKeys,
    authorityKeys,
    floors: options.floors,
    ...(options.maxDevices !== undefined && { maxDevices: options.maxDevices }),
    logger: options.logger,
  });
  let server: CustodianServer;
  let watched: WatchedTlsFiles | null = null;
  try {
    let credentials: grpc.ServerCredentials | undefined;
    if (options.tlsFiles !== undefined) {
      const { certFile, keyFile, caFile, pollIntervalMs } = options.tlsFiles;
      watched = await watchTlsFiles({ files: { certFile, keyFile, caFile }, role: 'server', logger: options.logger, ...(pollIntervalMs !== undefined && { pollIntervalMs }) });
      credentials = reloadableServerCredentials(watched);
    } else if (options.tls !== undefined) {
      credentials = grpc.ServerCredentials.createSsl(null, [{ cert_chain: options.tls.certChain, private_key: options.tls.privateKey }], false);
    }
    server = await startCustodianServer({ service, logger: options.logger, listen: options.listen, ...(credentials !== undefined && { credentials }) });
  } catch (error) {
    watched?.close();
    await state.close();
    throw error;
  }
  const tls = watched !== null ? (watched.current().ca !== null ? 'mutual' : 'server') : options.tls !== undefined ? 'server' : 'off';
  options.logger.info({ answers: state.answerCount, authorities: authorityKeys.length, floors: options.floors, tls }, 'custodian started');
  const close = async (): Promise<void> => {
    watched?.close();
    await server.close();
    await state.close();
  };
  return { server, reloadTls: async () => (watched === null ? false : watched.reload()), close, [Symbol.asyncDispose]: close };
}
