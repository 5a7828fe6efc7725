import { fileURLToPath } from 'node:url';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
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
 * (a model version goes to every device of a round; grpc-js then only frames the bytes).
 */
export class EncodedModelChunk {
  constructor(readonly bytes: Buffer) {}
}

/** Serializes a `ModelChunk` once, for {@link EncodedModelChunk}. */
export function encodeModelChunk(message: ModelChunk): EncodedModelChunk {
  return new EncodedModelChunk(loadPackage().veil.v1.FederationService.service.DownloadModel.responseSerialize(message));
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

/**
 * The `veil.v1.FederationService` definition, for `server.addService`. Its DownloadModel writes
 * an {@link EncodedModelChunk} as the bytes it holds and serializes anything else as usual.
 */
export function federationServiceDefinition(): FederationServiceDefinition {
  if (serverDefinition === undefined) {
    const loaded = loadPackage().veil.v1.FederationService.service;
    const serialize = loaded.DownloadModel.responseSerialize;
    const tolerant: Record<string, unknown> = {};
    for (const [name, method] of Object.entries(loaded)) {
      const deserialize = method.requestDeserialize as (bytes: Buffer) => unknown;
      tolerant[name] = {
        ...method,
        requestDeserialize: (bytes: Buffer) => {
          try {
            return deserialize(bytes);
          } catch (error) {
            return new MalformedMessage(error instanceof Error ? error.message : String(error));
          }
        },
      };
    }
    serverDefinition = {
      ...tolerant,
      DownloadModel: {
        ...(tolerant['DownloadModel'] as object),
        responseSerialize: (value: ModelChunk | EncodedModelChunk) => (value instanceof EncodedModelChunk ? value.bytes : serialize(value)),
      },
    } as FederationServiceDefinition;
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
