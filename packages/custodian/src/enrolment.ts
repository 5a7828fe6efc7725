/**
 * The enrolment authority as a small HTTP service, run apart from the coordinator (in the demo,
 * a separate process holding the authority key the coordinator never reads). A device that
 * knows the enrolment secret gets its Ed25519 key (RFC 8032) certified for one task:
 *
 *   POST /v1/certificates   Authorization: Bearer <enrolment secret>
 *     { "taskId": "...", "deviceId": "...", "devicePublicKey": "<base64, 32 bytes>" }
 *   200 { "certificate": { "notAfterMs", "signature" }, "authorityKey": "<base64>" }
 *   400 malformed body · 401 wrong secret · 403 task not served · 409 device id already
 *   certified with another key · 413 body over 4 KiB
 *
 * Each (task, device id) is bound to the first key certified for it (JSON-lines log, fsynced
 * before the reply); asking again with the same key returns a fresh certificate. Whoever holds
 * the enrolment secret can enrol as many devices as they like: this gate bounds Sybils only as
 * far as the secret is kept (README trust model).
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { mkdir, open, readFile } from 'node:fs/promises';
import type { FileHandle } from 'node:fs/promises';
import { dirname } from 'node:path';
import type { Logger } from 'pino';
import { MAX_DEVICE_ID_LENGTH, type DeviceCertificate } from '@veil/crypto';
import { certifyDevice, type AuthorityKey } from './authority.js';
import { CustodianError } from './errors.js';
import { fromBase64, toBase64 } from './bytes.js';

const MAX_BODY_BYTES = 4096;

/** Options of {@link startEnrolmentServer}. */
export interface EnrolmentServerOptions {
  readonly authority: AuthorityKey;
  /** The enrolment secret devices present (at least 16 characters). Only its hash is kept. */
  readonly enrolmentSecret: string;
  /** Tasks this service certifies devices for. */
  readonly taskIds: readonly string[];
  /** Certificate validity, ms. Default 30 days. */
  readonly validForMs?: number;
  /** JSON-lines file binding (task, device id) to the first key certified. */
  readonly statePath: string;
  /** `host:port`. Default `127.0.0.1:0`. */
  readonly listen?: string;
  readonly logger: Logger;
  /** Milliseconds since the epoch. Default `Date.now`. */
  readonly clock?: () => number;
}

/** A running enrolment service. */
export interface EnrolmentServer extends AsyncDisposable {
  /** `http://host:port`. */
  readonly url: string;
  close(): Promise<void>;
}

const digest = (text: string): Buffer => createHash('sha256').update(text, 'utf8').digest();

/** Starts the enrolment service. */
export async function startEnrolmentServer(options: EnrolmentServerOptions): Promise<EnrolmentServer> {
  if (options.enrolmentSecret.length < 16) throw new CustodianError('invalid_request', 'the enrolment secret must have at least 16 characters');
  const secretHash = digest(options.enrolmentSecret);
  const tasks = new Set(options.taskIds);
  const clock = options.clock ?? Date.now;
  const { logger } = options;

  // (task, device) -> base64 key, replayed from the log.
  const bound = new Map<string, string>();
  const key = (taskId: string, deviceId: string): string => `${taskId}\u0000${deviceId}`;
  await mkdir(dirname(options.statePath), { recursive: true, mode: 0o700 });
  let text = '';
  try {
    text = await readFile(options.statePath, 'utf8');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
  }
  const lines = text.split('\n');
  lines.forEach((line, i) => {
    if (line === '' || (i === lines.length - 1 && !text.endsWith('\n'))) return; // empty or torn tail
    const r = JSON.parse(line) as { taskId: string; deviceId: string; devicePublicKey: string };
    bound.set(key(r.taskId, r.deviceId), r.devicePublicKey);
  });
  const log: FileHandle = await open(options.statePath, 'a', 0o600);
  let queue: Promise<void> = Promise.resolve();
  const append = (record: object): Promise<void> => {
    const run = queue.then(async () => {
      await log.appendFile(`${JSON.stringify(record)}\n`);
      await log.sync();
    });
    queue = run.catch(() => undefined);
    return run;
  };

  const send = (res: ServerResponse, status: number, body: object): void => {
    const json = JSON.stringify(body);
    res.writeHead(status, {
      'content-type': 'application/json',
      'content-length': Buffer.byteLength(json),
      'cache-control': 'no-store',
      ...(status === 413 && { connection: 'close' }),
    });
    res.end(json);
  };

  const readBody = (req: IncomingMessage): Promise<Buffer | null> =>
    new Promise((resolve, reject) => {
      const chunks: Buffer[] = [];
      let size = 0;
      const onData = (chunk: Buffer): void => {
        size += chunk.length;
        if (size > MAX_BODY_BYTES) {
          // Stop keeping the body; the 413 goes out with `connection: close`.
          req.off('data', onData);
          req.resume();
          resolve(null);
          return;
        }
        chunks.push(chunk);
      };
      req.on('data', onData);
      req.on('end', () => resolve(Buffer.concat(chunks)));
      req.on('error', reject);
    });

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const peer = req.socket.remoteAddress;
    if (req.method !== 'POST' || req.url !== '/v1/certificates') {
      send(res, 404, { error: 'not found' });
      return;
    }
    const auth = req.headers.authorization ?? '';
    const presented = auth.startsWith('Bearer ') ? digest(auth.slice(7)) : Buffer.alloc(32);
    if (!timingSafeEqual(presented, secretHash)) {
      logger.warn({ peer }, 'enrolment refused: wrong secret');
      send(res, 401, { error: 'wrong enrolment secret' });
      return;
    }
    const body = await readBody(req);
    if (body === null) {
      send(res, 413, { error: `body over ${MAX_BODY_BYTES} bytes` });
      return;
    }
    let taskId: unknown;
    let deviceId: unknown;
    let devicePublicKey: Uint8Array;
    try {
      const parsed = JSON.parse(body.toString('utf8')) as { taskId?: unknown; deviceId?: unknown; devicePublicKey?: unknown };
      ({ taskId, deviceId } = parsed);
      devicePublicKey = fromBase64(parsed.devicePublicKey as string, 'devicePublicKey', 32);
    } catch {
      send(res, 400, { error: 'expected JSON { taskId, deviceId, devicePublicKey (base64, 32 bytes) }' });
      return;
    }
    if (typeof deviceId !== 'string' || deviceId.length < 1 || deviceId.length > MAX_DEVICE_ID_LENGTH) {
      send(res, 400, { error: `deviceId must be a string of 1-${MAX_DEVICE_ID_LENGTH} characters` });
      return;
    }
    if (typeof taskId !== 'string' || !tasks.has(taskId)) {
      send(res, 403, { error: 'this authority does not enrol devices for that task' });
      return;
    }
    const keyB64 = toBase64(devicePublicKey);
    const k = key(taskId, deviceId);
    const known = bound.get(k);
    if (known !== undefined && known !== keyB64) {
      logger.warn({ peer, taskId, deviceId }, 'enrolment refused: device id already bound to another key');
      send(res, 409, { error: 'this device id is already certified with another key' });
      return;
    }
    if (known === undefined) {
      bound.set(k, keyB64);
      try {
        await append({ taskId, deviceId, devicePublicKey: keyB64, atMs: clock() });
      } catch (error) {
        bound.delete(k);
        throw error;
      }
    }
    const certificate: DeviceCertificate = certifyDevice(options.authority, {
      taskId,
      deviceId,
      devicePublicKey,
      nowMs: clock(),
      ...(options.validForMs !== undefined && { validForMs: options.validForMs }),
    });
    logger.info({ taskId, deviceId, notAfterMs: certificate.notAfterMs }, 'device certified');
    send(res, 200, { certificate, authorityKey: toBase64(options.authority.publicKey) });
  }

  const server: Server = createServer((req, res) => {
    handle(req, res).catch((error: unknown) => {
      logger.error({ err: error }, 'enrolment failed');
      if (!res.headersSent) send(res, 500, { error: 'internal error' });
    });
  });
  const listen = options.listen ?? '127.0.0.1:0';
  const at = listen.lastIndexOf(':');
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(Number(listen.slice(at + 1)), listen.slice(0, at), resolve);
  });
  const address = server.address();
  const port = typeof address === 'object' && address !== null ? address.port : 0;
  const host = listen.slice(0, at);
  const close = async (): Promise<void> => {
    await new Promise<void>((resolve) => server.close(() => resolve()));
    await queue;
    await log.close();
  };
  logger.info({ url: `http://${host}:${port}`, tasks: [...tasks] }, 'enrolment authority listening');
  return { url: `http://${host.includes(':') ? `[${host}]` : host}:${port}`, close, [Symbol.asyncDispose]: close };
}

/** A device asks the enrolment service to certify its key (fetch: works in Node and browsers). */
export async function requestDeviceCertificate(options: {
  readonly url: string;
  readonly enrolmentSecret: string;
  readonly taskId: string;
  readonly deviceId: string;
  readonly devicePublicKey: Uint8Array;
}): Promise<{ certificate: DeviceCertificate; authorityKey: string }> {
  const response = await fetch(`${options.url}/v1/certificates`, {
    method: 'POST',
    headers: { authorization: `Bearer ${options.enrolmentSecret}`, 'content-type': 'application/json' },
    body: JSON.stringify({ taskId: options.taskId, deviceId: options.deviceId, devicePublicKey: toBase64(options.devicePublicKey) }),
  });
  const body = (await response.json()) as { certificate?: DeviceCertificate; authorityKey?: string; error?: string };
  if (!response.ok || body.certificate === undefined || body.authorityKey === undefined) {
    throw new CustodianError(response.status === 401 ? 'unauthenticated' : 'invalid_request', `enrolment refused (${response.status}): ${body.error ?? 'no certificate'}`);
  }
  return { certificate: body.certificate, authorityKey: body.authorityKey };
}
