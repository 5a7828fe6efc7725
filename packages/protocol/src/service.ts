import { fileURLToPath } from 'node:url';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { createRequire } from 'node:module';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import type { ProtoGrpcType } from './gen/federation.js';
import type { FederationServiceClient, FederationServiceDefinition } from './gen/veil/v1/FederationService.js';
import type { ModelChunk } from './gen/veil/v1/ModelChunk.js';

/** Options shared by the loader and the type generator (scripts/gen-proto-types.mjs at the repository root); keep them in sync. */
const LOADER_OPTIONS: protoLoader.Options = {
  keepCase: false,
  longs: Number,
  enums: String,
  defaults: true,
  oneofs: true,
};

/** Directory holding `veil/v1/*.proto`: the repository's `proto/`, or a copy shipped beside the package. */
export function protoRoot(): string {
  const candidates = [
    fileURLToPath(new URL('../../../proto', import.meta.url)),
    fileURLToPath(new URL('../proto', import.meta.url)),
  ];
  const found = candidates.find((dir) => existsSync(join(dir, 'veil/v1/federation.proto')));
  if (found === undefined) throw new Error(`veil/v1/federation.proto not found in ${candidates.join(' or ')}`);
  return found;
}

let cached: ProtoGrpcType | undefined;

function loadPackage(): ProtoGrpcType {
  if (cached === undefined) {
    const definition = protoLoader.loadSync('veil/v1/federation.proto', { ...LOADER_OPTIONS, includeDirs: [protoRoot()] });
    cached = grpc.loadPackageDefinition(definition) as unknown as ProtoGrpcType;
  }
  return cached;
}

/**
 * A `ModelChunk` serialized once, to be written as is to every DownloadModel call that sends it
 * (a model version goes to every device of a round). `framed` holds the message behind its gRPC
 * length prefix (1 flag byte, 4 bytes big-endian length; gRPC over HTTP/2, "Length-Prefixed-Message"),
 * so grpc-js writes the very buffer to each call instead of framing a fresh copy of it per device
 * (see {@link writePreframedMessages}); `bytes` is the message itself (a view).
 */
export class EncodedModelChunk {
  readonly framed: Buffer;
  readonly bytes: Buffer;
  constructor(message: Uint8Array) {
    this.framed = Buffer.allocUnsafe(message.byteLength + 5);
    this.framed.writeUInt8(0, 0);
    this.framed.writeUInt32BE(message.byteLength, 1);
    this.framed.set(message, 5);
    this.bytes = this.framed.subarray(5);
  }
}

/** Serializes a `ModelChunk` once, for {@link EncodedModelChunk}. */
export function encodeModelChunk(message: ModelChunk): EncodedModelChunk {
  return new EncodedModelChunk(loadPackage().veil.v1.FederationService.service.DownloadModel.responseSerialize(message));
}

/**
 * Makes grpc-js's server send an {@link EncodedModelChunk} as its `framed` buffer. grpc-js (1.14)
 * frames every response message into a fresh buffer (`serializeMessage`: allocate size + 5, copy):
 * for a model chunk that is a 400 kB allocation and copy per device and download, which also brings
 * V8's next full garbage collection closer. grpc-js has no option for it; its server call class is
 * reached by its module path. Should a grpc-js version move it, responses are framed as before
 * (slower, nothing else changes) and the protocol test that checks this path fails.
 */
function writePreframedMessages(): void {
  let serverCall: { prototype: { serializeMessage?: (value: unknown) => Buffer } } | undefined;
  try {
    serverCall = createRequire(import.meta.url)('@grpc/grpc-js/build/src/server-interceptors.js').BaseServerInterceptingCall;
  } catch {
    return;
  }
  const proto = serverCall?.prototype;
  const frame = proto?.serializeMessage;
  if (proto === undefined || typeof frame !== 'function' || (frame as { preframed?: true }).preframed) return;
  const serializeMessage = function (this: unknown, value: unknown): Buffer {
    return value instanceof EncodedModelChunk ? value.framed : frame.call(this, value);
  };
  proto.serializeMessage = Object.assign(serializeMessage, { preframed: true as const });
}

/**
 * The `veil.v1.FederationService` methods as loaded (path, request serializer, response
 * deserializer), unchanged: for a device that speaks gRPC without grpc-js's client (the SDK's
 * node:http2 transport). Servers use {@link federationServiceDefinition}.
 */
export function federationMethods(): FederationServiceDefinition {
  return loadPackage().veil.v1.FederationService.service as FederationServiceDefinition;
}

let serverDefinition: FederationServiceDefinition | undefined;

/**
 * What a server handler receives in place of a request message that is not valid protobuf.
 * grpc-js answers INTERNAL when a deserializer throws; with this the handler answers
 * INVALID_ARGUMENT instead (the peer sent a bad message; nothing failed in the server).
 */
export class MalformedMessage {
  constructor(readonly reason: string) {}
}

/** True for a {@link MalformedMessage}. */
export const isMalformedMessage = (value: unknown): value is MalformedMessage => value instanceof MalformedMessage;

/** The methods whose responses carry a model's DownloadModel messages (ModelChunk's field numbers), serialized once. */
const MODEL_STREAMS = ['DownloadModel', 'WaitForAssignmentAndModel'] as const;

/**
 * The `veil.v1.FederationService` definition, for `server.addService`. Its DownloadModel and
 * WaitForAssignmentAndModel write an {@link EncodedModelChunk} as the bytes it holds (their model
 * messages share ModelChunk's field numbers) and serialize anything else as usual.
 */
export function federationServiceDefinition(): FederationServiceDefinition {
  if (serverDefinition === undefined) {
    writePreframedMessages();
    const loaded = loadPackage().veil.v1.FederationService.service;
    const tolerant: Record<string, unknown> = {};
    for (const [name, method] of Object.entries(loaded)) {
      const deserialize = method.requestDeserialize as (bytes: Buffer) => unknown;
      const serialize = method.responseSerialize as (value: unknown) => Buffer;
      tolerant[name] = {
        ...method,
        requestDeserialize: (bytes: Buffer) => {
          try {
            return deserialize(bytes);
          } catch (error) {
            return new MalformedMessage(error instanceof Error ? error.message : String(error));
          }
        },
        ...((MODEL_STREAMS as readonly string[]).includes(name) && {
          responseSerialize: (value: unknown) => (value instanceof EncodedModelChunk ? value.bytes : serialize(value)),
        }),
      };
    }
    serverDefinition = tolerant as unknown as FederationServiceDefinition;
  }
  return serverDefinition;
}

/** Creates a typed FederationService client. */
export function createFederationServiceClient(
  address: string,
  credentials: grpc.ChannelCredentials,
  options?: grpc.ChannelOptions,
): FederationServiceClient {
  const Ctor = loadPackage().veil.v1.FederationService;
  return new Ctor(address, credentials, options);
}
