import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import type { ProtoGrpcType } from '../gen/custodian.js';
import type { CustodianServiceClient, CustodianServiceDefinition } from '../gen/veil/v1/CustodianService.js';

/** Largest gRPC message either side accepts (a DeviceBatch of 256 devices is about 1.2 MB). */
export const MAX_CUSTODIAN_MESSAGE_BYTES = 4 * 1024 * 1024;

/** Largest number of devices in one DeviceBatch message. */
export const MAX_DEVICES_PER_BATCH = 256;

/** Channel options both sides use. */
export const CUSTODIAN_CHANNEL_OPTIONS: grpc.ChannelOptions = {
  'grpc.max_receive_message_length': MAX_CUSTODIAN_MESSAGE_BYTES,
  'grpc.max_send_message_length': MAX_CUSTODIAN_MESSAGE_BYTES,
  // No channelz: nothing serves or reads it here, and its per-call bookkeeping (call counters,
  // timestamps, trace events) was a visible part of a custodian's CPU profile per stream.
  'grpc.enable_channelz': 0,
};

/** Options shared by the loader and the type generator (scripts/gen-proto-types.mjs at the repository root); keep them in sync. */
const LOADER_OPTIONS: protoLoader.Options = { keepCase: false, longs: Number, enums: String, defaults: true, oneofs: true };

function protoRoot(): string {
  const candidates = [fileURLToPath(new URL('../../../../proto', import.meta.url)), fileURLToPath(new URL('../../proto', import.meta.url))];
  const found = candidates.find((dir) => existsSync(join(dir, 'veil/v1/custodian.proto')));
  if (found === undefined) throw new Error(`veil/v1/custodian.proto not found in ${candidates.join(' or ')}`);
  return found;
}

let cached: ProtoGrpcType | undefined;

function loadPackage(): ProtoGrpcType {
  if (cached === undefined) {
    const definition = protoLoader.loadSync('veil/v1/custodian.proto', { ...LOADER_OPTIONS, includeDirs: [protoRoot()] });
    cached = grpc.loadPackageDefinition(definition) as unknown as ProtoGrpcType;
  }
  return cached;
}

/** The `veil.v1.CustodianService` definition, for `server.addService`. */
export function custodianServiceDefinition(): CustodianServiceDefinition {
  return loadPackage().veil.v1.CustodianService.service;
}

/** A typed CustodianService client. */
export function createCustodianServiceClient(address: string, credentials: grpc.ChannelCredentials, options?: grpc.ChannelOptions): CustodianServiceClient {
  const Ctor = loadPackage().veil.v1.CustodianService;
  return new Ctor(address, credentials, { ...CUSTODIAN_CHANNEL_OPTIONS, ...options });
}
