import { createHash } from 'node:crypto';
import http2 from 'node:http2';
import type { AddressInfo } from 'node:net';
import { MAX_MESSAGE_BYTES, federationServiceDefinition } from '@veil/protocol';
import { afterEach, describe, expect, it } from 'vitest';
import type { ClientError } from '../errors.js';
import { createGrpcTransport, DEFAULT_RECEIVE_WINDOW_BYTES, resolveCoordinatorAddress } from './grpc-transport.js';

/**
 * What the device announces on the wire: an HTTP/2 listener on loopback (no
 * gRPC service; it only records the SETTINGS frame and the connection-level
 * WINDOW_UPDATE the device sends, then answers every request UNAVAILABLE).
 */
async function observeDevice(receiveWindowBytes?: number): Promise<{ initialWindowSize: number; connectionWindow: number }> {
  const server = http2.createServer();
  const seen = new Promise<{ initialWindowSize: number; connectionWindow: number }>((resolve) => {
    server.on('session', (session) => {
      session.once('remoteSettings', (settings) => {
        // The device raises its connection window right after the peer's settings; give the frame a moment.
        setTimeout(() => resolve({ initialWindowSize: settings.initialWindowSize ?? 65_535, connectionWindow: session.state.remoteWindowSize ?? 0 }), 200);
      });
    });
  });
  server.on('stream', (stream) => stream.respond({ ':status': 200, 'content-type': 'application/grpc', 'grpc-status': '14' }, { endStream: true }));
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  cleanups.push(() => new Promise<void>((resolve) => server.close(() => resolve())));
  const { port } = server.address() as AddressInfo;
  const transport = createGrpcTransport({ address: `127.0.0.1:${port}`, callTimeoutMs: 2_000, ...(receiveWindowBytes !== undefined && { receiveWindowBytes }) });
  cleanups.push(async () => transport.close());
  // Any call makes the transport connect; its answer (UNAVAILABLE) does not matter here.
  transport.getTask('a'.repeat(43)).catch(() => undefined);
  return seen;
}

const cleanups: Array<() => Promise<void>> = [];
afterEach(async () => {
  for (const fn of cleanups.splice(0).reverse()) await fn();
});

describe('grpc transport receive window', () => {
  it('announces the 8 MiB default per stream and for the connection', async () => {
    const seen = await observeDevice();
    expect(DEFAULT_RECEIVE_WINDOW_BYTES).toBe(8 * 1024 * 1024);
    expect(seen.initialWindowSize).toBe(DEFAULT_RECEIVE_WINDOW_BYTES);
    expect(seen.connectionWindow).toBe(DEFAULT_RECEIVE_WINDOW_BYTES);
  });

  it('announces a configured window', async () => {
    const seen = await observeDevice(1_000_000);
    expect(seen.initialWindowSize).toBe(1_000_000);
    expect(seen.connectionWindow).toBe(1_000_000);
  });

  it('refuses windows HTTP/2 cannot express or below its default', () => {
    for (const bad of [0, 65_534, 2 ** 31, 1.5, Number.NaN]) {
      expect(() => createGrpcTransport({ address: '127.0.0.1:1', receiveWindowBytes: bad })).toThrow(RangeError);
    }
  });
});

describe('coordinator address and TLS', () => {
  it('host:port and grpc:// are cleartext; grpcs:// or a tls option mean TLS; contradictions are refused', () => {
    expect(resolveCoordinatorAddress('127.0.0.1:50051')).toMatchObject({ target: '127.0.0.1:50051', secure: false });
    expect(resolveCoordinatorAddress('grpc://coordinator:50051')).toMatchObject({ target: 'coordinator:50051', secure: false });
    expect(resolveCoordinatorAddress('grpcs://coordinator:50051')).toMatchObject({ target: 'coordinator:50051', secure: true });
    expect(resolveCoordinatorAddress('coordinator:50051', { ca: 'pem' })).toMatchObject({ target: 'coordinator:50051', secure: true });
    expect(() => resolveCoordinatorAddress('grpc://coordinator:50051', { ca: 'pem' })).toThrow(/cleartext/);
    expect(() => resolveCoordinatorAddress('grpcs://coordinator:50051', { cert: 'pem' })).toThrow(/go together/);
  });
});

/** A raw HTTP/2 gRPC endpoint on loopback: `handle` answers each call (request messages decoded by the real service definition). */
async function fakeCoordinator(
  handle: (call: { path: string; headers: http2.IncomingHttpHeaders; messages: Buffer[]; stream: http2.ServerHttp2Stream }) => void,
): Promise<string> {
  const server = http2.createServer();
  server.on('stream', (stream, headers) => {
    const chunks: Buffer[] = [];
    stream.on('data', (c: Buffer) => chunks.push(c));
    stream.on('end', () => {
      const all = Buffer.concat(chunks);
      const messages: Buffer[] = [];
      for (let at = 0; at < all.length; ) {
        const length = all.readUInt32BE(at + 1);
        messages.push(all.subarray(at + 5, at + 5 + length));
        at += 5 + length;
      }
      handle({ path: String(headers[':path']), headers, messages, stream });
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  cleanups.push(() => new Promise<void>((resolve) => server.close(() => resolve())));
  return `127.0.0.1:${(server.address() as AddressInfo).port}`;
}

/** A gRPC message: compressed flag, big-endian length, bytes. */
const grpcMessage = (bytes: Uint8Array, compressed = false): Buffer => {
  const prefix = Buffer.alloc(5);
  prefix[0] = compressed ? 1 : 0;
  prefix.writeUInt32BE(bytes.byteLength, 1);
  return Buffer.concat([prefix, bytes]);
};

const service = federationServiceDefinition();
const ok = (stream: http2.ServerHttp2Stream, messages: Buffer[], trailers: Record<string, string> = {}): void => {
  stream.respond({ ':status': 200, 'content-type': 'application/grpc' }, { waitForTrailers: true });
  stream.on('wantTrailers', () => stream.sendTrailers({ 'grpc-status': '0', ...trailers }));
  for (const m of messages) stream.write(m);
  stream.end();
};

function transportTo(address: string, callTimeoutMs = 5_000) {
  const transport = createGrpcTransport({ address, callTimeoutMs });
  cleanups.push(async () => transport.close());
  return transport;
}

describe('grpc transport over node:http2', () => {
  it('sends the credential and a deadline, and reads an assignment', async () => {
    let seen: http2.IncomingHttpHeaders = {};
    let request: unknown = null;
    const address = await fakeCoordinator(({ headers, messages, stream }) => {
      seen = headers;
      request = service.WaitForAssignment.requestDeserialize(messages[0]!);
      const answer = service.WaitForAssignment.responseSerialize({
        assignment: { roundId: 'r', roundNumber: 7, modelVersion: 6, modelSha256: Buffer.alloc(32, 0xab), modelSizeBytes: 400, maxUpdateBytes: 800, maxExampleCount: 9 },
      });
      ok(stream, [grpcMessage(answer)]);
    });
    const response = await transportTo(address).waitForAssignment('cred', 1_000, undefined, { afterRoundNumber: 6 });
    expect(seen[':path']).toBe('/veil.v1.FederationService/WaitForAssignment');
    expect(seen['authorization']).toBe('Bearer cred');
    expect(seen['content-type']).toBe('application/grpc');
    expect(seen['grpc-timeout']).toBe('6000m');
    expect(seen['grpc-accept-encoding']).toBeUndefined();
    expect(request).toMatchObject({ waitMs: 1_000, afterRoundNumber: 6 });
    expect(response).toMatchObject({ kind: 'assignment', assignment: { roundNumber: 7, modelVersion: 6, modelSha256: 'ab'.repeat(32), maxExampleCount: 9 } });
  });

  it("maps the status and the coordinator's trailers, in trailers and in trailers-only answers", async () => {
    const address = await fakeCoordinator(({ path, stream }) => {
      if (path.endsWith('/GetTask')) {
        stream.respond({ ':status': 200, 'content-type': 'application/grpc', 'grpc-status': '8', 'grpc-message': 'slow%20down', 'retry-after': '3' }, { endStream: true });
        return;
      }
      ok(stream, [], { 'grpc-status': '9', 'grpc-message': 'already accepted', 'veil-error-code': 'already_accepted' });
    });
    const transport = transportTo(address);
    const refused = await transport.getTask('c').then(
      () => { throw new Error('expected a refusal'); },
      (e: ClientError) => e,
    );
    expect(refused).toMatchObject({ code: 'resource_exhausted', message: 'slow down', retryAfterMs: 3_000 });
    // The status itself, shaped as grpc-js reports it, is the error's cause.
    expect(refused.cause).toMatchObject({ code: 8, details: 'slow down', metadata: { 'retry-after': '3' } });
    const header = { roundNumber: 1, modelVersion: 0, exampleCount: 1, encoding: 'float32-le' as const, sha256: '00'.repeat(32) };
    await expect(transport.submitUpdate('c', header, new Uint8Array(8))).rejects.toMatchObject({ code: 'already_accepted' });
  });

  it('uploads the header, then the payload in chunks the service decodes to the same bytes', async () => {
    let decoded: Array<{ header?: unknown; chunk?: Buffer }> = [];
    const address = await fakeCoordinator(({ messages, stream }) => {
      decoded = messages.map((m) => service.SubmitUpdate.requestDeserialize(m) as { header?: unknown; chunk?: Buffer });
      ok(stream, [grpcMessage(service.SubmitUpdate.responseSerialize({ acceptedCount: 4 }))]);
    });
    const payload = new Uint8Array(2.5 * 1024 * 1024);
    for (let i = 0; i < payload.length; i++) payload[i] = (i * 7) & 0xff;
    const sha256 = createHash('sha256').update(payload).digest('hex');
    const result = await transportTo(address).submitUpdate('c', { roundNumber: 3, modelVersion: 2, exampleCount: 5, encoding: 'float32-le', sha256 }, payload);
    expect(result).toEqual({ acceptedCount: 4 });
    expect(decoded[0]!.header).toMatchObject({ roundNumber: 3, modelVersion: 2, exampleCount: 5, payloadSizeBytes: payload.byteLength, encoding: 'UPDATE_ENCODING_FLOAT32_LE' });
    const chunks = decoded.slice(1).map((m) => m.chunk!);
    expect(chunks.map((c) => c.byteLength)).toEqual([1024 * 1024, 1024 * 1024, 512 * 1024]);
    expect(Buffer.concat(chunks).equals(Buffer.from(payload))).toBe(true);
  });

  it('downloads a model split over many frames, and refuses one that fails its SHA-256', async () => {
    const model = Buffer.alloc(400_000);
    for (let i = 0; i < model.length; i++) model[i] = i & 0xff;
    let corrupt = false;
    const address = await fakeCoordinator(({ stream }) => {
      const header = service.DownloadModel.responseSerialize({
        header: { modelVersion: 3, encoding: 'MODEL_ENCODING_FLOAT32_LE', sizeBytes: model.length, sha256: createHash('sha256').update(model).digest() },
      });
      const sent = Buffer.from(model);
      if (corrupt) sent[123]! ^= 1;
      ok(stream, [grpcMessage(header), grpcMessage(service.DownloadModel.responseSerialize({ data: sent }))]);
    });
    const transport = transportTo(address);
    const d = await transport.downloadModel('c', { version: 3 });
    expect(d).toMatchObject({ version: 3, encoding: 'float32-le', sha256: createHash('sha256').update(model).digest('hex') });
    expect(Buffer.from(d.bytes).equals(model)).toBe(true);
    corrupt = true;
    await expect(transport.downloadModel('c', { version: 3 })).rejects.toMatchObject({ code: 'integrity' });
  });

  it('receives a model into the memory of a released one, and never into memory the caller still holds', async () => {
    const modelOf = (version: number): Buffer => Buffer.alloc(400_000, version);
    const address = await fakeCoordinator(({ messages, stream }) => {
      const { modelVersion } = service.DownloadModel.requestDeserialize(messages[0]!);
      const model = modelOf(modelVersion);
      const header = service.DownloadModel.responseSerialize({
        header: { modelVersion, encoding: 'MODEL_ENCODING_FLOAT32_LE', sizeBytes: model.length, sha256: createHash('sha256').update(model).digest() },
      });
      ok(stream, [grpcMessage(header), grpcMessage(service.DownloadModel.responseSerialize({ data: model }))]);
    });
    const transport = transportTo(address);
    const download = (version: number) => transport.downloadModel('c', { version });
    const intact = (d: { version: number; bytes: Uint8Array }): boolean => Buffer.from(d.bytes).equals(modelOf(d.version));

    const held = await download(1);
    const second = await download(2);
    expect(second.bytes.buffer).not.toBe(held.bytes.buffer);
    transport.releaseModel!(second);
    transport.releaseModel!(second); // a second release of the same model is ignored
    transport.releaseModel!({ ...second, bytes: new Uint8Array(400_100) }); // and so is memory the transport did not lend
    const third = await download(3);
    expect(third.bytes.buffer).toBe(second.bytes.buffer);
    const fourth = await download(4);
    expect(fourth.bytes.buffer).not.toBe(third.bytes.buffer);
    expect(fourth.bytes.buffer).not.toBe(held.bytes.buffer);
    for (const d of [held, third, fourth]) expect(intact(d)).toBe(true);
  });

  it('WaitForAssignmentAndModel: the answer, then the model (checked); a held version is sent along; a model before the answer or of another version is refused', async () => {
    const model = Buffer.alloc(300_000, 7);
    const digest = createHash('sha256').update(model).digest();
    const requests: unknown[] = [];
    let mode: 'ok' | 'model-first' | 'other-version' = 'ok';
    const address = await fakeCoordinator(({ path, messages, stream }) => {
      const method = service.WaitForAssignmentAndModel;
      expect(path).toBe('/veil.v1.FederationService/WaitForAssignmentAndModel');
      requests.push(method.requestDeserialize(messages[0]!));
      const answer = grpcMessage(method.responseSerialize({ answer: { assignment: { roundId: 'r', roundNumber: 2, modelVersion: 5, modelSha256: digest, modelSizeBytes: model.length } } }));
      const header = grpcMessage(
        method.responseSerialize({ modelHeader: { modelVersion: mode === 'other-version' ? 4 : 5, encoding: 'MODEL_ENCODING_FLOAT32_LE', sizeBytes: model.length, sha256: digest } }),
      );
      const data = grpcMessage(method.responseSerialize({ modelData: model }));
      ok(stream, mode === 'model-first' ? [header, answer, data] : [answer, header, data]);
    });
    const transport = transportTo(address);
    const { response, model: sent } = await transport.waitForAssignmentAndModel!('c', 1_000, undefined, { afterRoundNumber: 1, heldModelVersion: 0 });
    expect(response).toMatchObject({ kind: 'assignment', assignment: { roundNumber: 2, modelVersion: 5, modelSha256: digest.toString('hex') } });
    expect(sent).toMatchObject({ version: 5, encoding: 'float32-le', sha256: digest.toString('hex') });
    expect(Buffer.from(sent!.bytes).equals(model)).toBe(true);
    // proto3 optional: a held version 0 is sent (0 is a version), none is absent.
    await transport.waitForAssignmentAndModel!('c', 1_000);
    expect(requests).toMatchObject([{ waitMs: 1_000, afterRoundNumber: 1, heldModelVersion: 0 }, { waitMs: 1_000, afterRoundNumber: 0 }]);
    expect((requests[1] as { heldModelVersion?: number }).heldModelVersion).toBeUndefined();
    mode = 'model-first';
    await expect(transport.waitForAssignmentAndModel!('c', 1_000)).rejects.toMatchObject({ code: 'internal', message: /before its answer/ });
    mode = 'other-version';
    await expect(transport.waitForAssignmentAndModel!('c', 1_000)).rejects.toMatchObject({ code: 'integrity' });
  });

  it('a coordinator without WaitForAssignmentAndModel (UNIMPLEMENTED): the plain long-poll, without a model, and only that from then on', async () => {
    const paths: string[] = [];
    const address = await fakeCoordinator(({ path, stream }) => {
      paths.push(path);
      if (path.endsWith('/WaitForAssignmentAndModel') || path.endsWith('/GetTask')) {
        stream.respond({ ':status': 200, 'content-type': 'application/grpc', 'grpc-status': '12', 'grpc-message': 'not implemented' }, { endStream: true });
        return;
      }
      ok(stream, [grpcMessage(service.WaitForAssignment.responseSerialize({ idle: { taskStatus: 'TASK_STATUS_RUNNING', currentRound: 3 } }))]);
    });
    const transport = transportTo(address);
    for (let i = 0; i < 2; i++) {
      expect(await transport.waitForAssignmentAndModel!('c', 1_000)).toEqual({ response: { kind: 'idle', taskStatus: 'TASK_STATUS_RUNNING', currentRound: 3 }, model: null });
    }
    expect(paths.map((p) => p.split('/').at(-1))).toEqual(['WaitForAssignmentAndModel', 'WaitForAssignment', 'WaitForAssignment']);
    // UNIMPLEMENTED is its own code, not worth retrying (it was 'internal', which is retried).
    await expect(transport.getTask('c')).rejects.toMatchObject({ code: 'unimplemented', retryable: false });
  });

  it('refuses compressed and oversized messages', async () => {
    let mode: 'compressed' | 'oversized' = 'compressed';
    const address = await fakeCoordinator(({ stream }) => {
      if (mode === 'compressed') return ok(stream, [grpcMessage(Buffer.alloc(4), true)]);
      const prefix = Buffer.alloc(5);
      prefix.writeUInt32BE(MAX_MESSAGE_BYTES + 1, 1);
      ok(stream, [prefix, Buffer.alloc(64)]);
    });
    const transport = transportTo(address);
    await expect(transport.getTask('c')).rejects.toMatchObject({ code: 'internal', message: /compressed/ });
    mode = 'oversized';
    await expect(transport.getTask('c')).rejects.toMatchObject({ code: 'resource_exhausted' });
  });

  it('ends a call at its deadline or when aborted, and keeps working after', async () => {
    let answer = false;
    const address = await fakeCoordinator(({ stream }) => {
      if (answer) ok(stream, [grpcMessage(service.GetTask.responseSerialize({ taskId: 't', modelTopologyJson: '{}', weightSpecsJson: '[]' }))]);
    });
    const transport = transportTo(address, 300);
    await expect(transport.getTask('c')).rejects.toMatchObject({ code: 'deadline_exceeded' });
    const controller = new AbortController();
    const polling = transport.waitForAssignment('c', 10_000, controller.signal);
    setTimeout(() => controller.abort(), 50);
    await expect(polling).rejects.toMatchObject({ code: 'cancelled' });
    answer = true;
    await expect(transport.getTask('c')).resolves.toMatchObject({ taskId: 't' });
  });

  it('reports a coordinator it cannot reach as unavailable (retryable), and reconnects once it is back', async () => {
    const probe = http2.createServer();
    await new Promise<void>((resolve) => probe.listen(0, '127.0.0.1', resolve));
    const { port } = probe.address() as AddressInfo;
    await new Promise<void>((resolve) => probe.close(() => resolve()));
    const transport = transportTo(`127.0.0.1:${port}`);
    const error = await transport.getTask('c').catch((e: ClientError) => e);
    expect(error).toMatchObject({ code: 'unavailable', retryable: true });
    const server = http2.createServer();
    server.on('stream', (stream) => ok(stream, [grpcMessage(service.GetTask.responseSerialize({ taskId: 'back', modelTopologyJson: '{}', weightSpecsJson: '[]' }))]));
    await new Promise<void>((resolve) => server.listen(port, '127.0.0.1', resolve));
    cleanups.push(() => new Promise<void>((resolve) => server.close(() => resolve())));
    await expect(transport.getTask('c')).resolves.toMatchObject({ taskId: 'back' });
  });
});
