/** The browser build's stand-in for transport/grpc-transport.ts: browsers have no gRPC over HTTP/2. */
import { ClientError } from '../errors.js';
import type { Transport } from '../transport/transport.js';

export function createGrpcTransport(): Transport {
  throw new ClientError('invalid_argument', 'gRPC is not available in a browser: pass `transport: createConnectTransport({ baseUrl })`');
}

export function resolveCoordinatorAddress(): never {
  throw new ClientError('invalid_argument', 'gRPC is not available in a browser');
}
