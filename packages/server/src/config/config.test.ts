import { describe, expect, it } from 'vitest';
import { ConfigError, loadConfig } from './config.js';

describe('configuration', () => {
  it('has laptop defaults: embedded database, local ports', () => {
    const c = loadConfig({});
    expect(c.databaseUrl).toBeUndefined();
    expect(c.grpcPort).toBe(50051);
    expect(c.httpPort).toBe(8080);
    expect(c.host).toBe('127.0.0.1');
    expect(c.dataDir.endsWith('.veil')).toBe(true);
  });

  it('rejects invalid values with the variable name', () => {
    expect(() => loadConfig({ VEIL_GRPC_PORT: '99999' })).toThrow(/VEIL_GRPC_PORT/);
    expect(() => loadConfig({ DATABASE_URL: 'mysql://x' })).toThrow(/DATABASE_URL/);
    expect(() => loadConfig({ VEIL_ADMIN_TOKEN: 'short' })).toThrow(/VEIL_ADMIN_TOKEN must be at least 16/);
    expect(() => loadConfig({ VEIL_LOG_LEVEL: 'loud' })).toThrow(ConfigError);
  });

  it('requires explicit admin and audit tokens in production; the global enrolment secret is optional there', () => {
    expect(() => loadConfig({ NODE_ENV: 'production' })).toThrow(/VEIL_ADMIN_TOKEN and VEIL_AUDIT_TOKEN/);
    // The audit token is no longer generated in production.
    expect(() => loadConfig({ NODE_ENV: 'production', VEIL_ADMIN_TOKEN: 'a'.repeat(32), VEIL_ENROLMENT_SECRET: 'b'.repeat(32) })).toThrow(/VEIL_AUDIT_TOKEN/);
    expect(() => loadConfig({ NODE_ENV: 'production', VEIL_AUDIT_TOKEN: 'c'.repeat(32) })).toThrow(/VEIL_ADMIN_TOKEN/);
    const c = loadConfig({ NODE_ENV: 'production', VEIL_ADMIN_TOKEN: 'a'.repeat(32), VEIL_AUDIT_TOKEN: 'c'.repeat(32), VEIL_ENROLMENT_SECRET: 'b'.repeat(32) });
    expect(c.production).toBe(true);
    const tokensOnly = loadConfig({ NODE_ENV: 'production', VEIL_ADMIN_TOKEN: 'a'.repeat(32), VEIL_AUDIT_TOKEN: 'c'.repeat(32) });
    expect(tokensOnly.enrolmentSecret).toBeUndefined();
  });

  it('reads TLS files (both or neither) and refuses a production bind beyond loopback without TLS', () => {
    expect(loadConfig({}).tls).toBeNull();
    const tls = loadConfig({ VEIL_TLS_CERT_FILE: '/etc/veil/tls/server.crt', VEIL_TLS_KEY_FILE: '/etc/veil/tls/server.key' }).tls;
    expect(tls).toEqual({ certFile: '/etc/veil/tls/server.crt', keyFile: '/etc/veil/tls/server.key', clientCaFile: undefined, reloadIntervalMs: 10_000 });
    expect(() => loadConfig({ VEIL_TLS_CERT_FILE: '/x.crt' })).toThrow(/both VEIL_TLS_CERT_FILE and VEIL_TLS_KEY_FILE/);
    expect(() => loadConfig({ VEIL_TLS_CLIENT_CA_FILE: '/ca.crt' })).toThrow(/VEIL_TLS_CLIENT_CA_FILE needs/);
    const prod = { NODE_ENV: 'production', VEIL_ADMIN_TOKEN: 'a'.repeat(20), VEIL_ENROLMENT_SECRET: 'b'.repeat(20), VEIL_AUDIT_TOKEN: 'c'.repeat(20) };
    expect(() => loadConfig({ ...prod, VEIL_HOST: '0.0.0.0' })).toThrow(/refuses to serve 0\.0\.0\.0 without TLS/);
    expect(loadConfig({ ...prod, VEIL_HOST: '0.0.0.0', VEIL_ALLOW_INSECURE: 'true' }).allowInsecure).toBe(true);
    expect(loadConfig({ ...prod, VEIL_HOST: '0.0.0.0', VEIL_TLS_CERT_FILE: '/c', VEIL_TLS_KEY_FILE: '/k' }).tls).not.toBeNull();
    // Loopback needs no TLS, in production too.
    expect(loadConfig({ ...prod, VEIL_HOST: '127.0.0.1' }).tls).toBeNull();
  });

  it('reads TLS towards custodians and the REST client CA', () => {
    expect(loadConfig({}).committeeTls).toBeNull();
    expect(loadConfig({ VEIL_COMMITTEE_TLS_CA_FILE: '/ca', VEIL_COMMITTEE_TLS_CERT_FILE: '/c', VEIL_COMMITTEE_TLS_KEY_FILE: '/k' }).committeeTls).toEqual({
      caFile: '/ca',
      certFile: '/c',
      keyFile: '/k',
      reloadIntervalMs: 10_000,
    });
    expect(loadConfig({ VEIL_COMMITTEE_TLS_CA_FILE: '/ca' }).committeeTls).toMatchObject({ caFile: '/ca', certFile: undefined });
    expect(() => loadConfig({ VEIL_COMMITTEE_TLS_CERT_FILE: '/c' })).toThrow(/VEIL_COMMITTEE_TLS_CERT_FILE and VEIL_COMMITTEE_TLS_KEY_FILE/);
    expect(loadConfig({ VEIL_TLS_CERT_FILE: '/c', VEIL_TLS_KEY_FILE: '/k', VEIL_TLS_REST_CLIENT_CA_FILE: '/rca' }).tls).toMatchObject({ restClientCaFile: '/rca', clientCaFile: undefined });
    expect(() => loadConfig({ VEIL_TLS_REST_CLIENT_CA_FILE: '/rca' })).toThrow(/VEIL_TLS_REST_CLIENT_CA_FILE needs VEIL_TLS_CERT_FILE/);
  });

  it('has documented server limits, each configurable and validated', () => {
    const c = loadConfig({});
    expect(c.grpcLimits).toEqual({ maxConcurrentStreams: 10_000, keepaliveTimeMs: 60_000, keepaliveTimeoutMs: 20_000, maxConnectionIdleMs: 300_000, maxConnectionAgeMs: 0 });
    expect(c.httpLimits).toEqual({ connectionTimeoutMs: 60_000, requestTimeoutMs: 120_000, keepAliveTimeoutMs: 5_000, headersTimeoutMs: 20_000 });
    expect(c.uploadIdleTimeoutMs).toBe(60_000);
    expect(c.maxUploadStreamsPerDevice).toBe(2);
    expect(c.uploadMinRate).toEqual({ bytesPerSecond: 1024, windowMs: 30_000, graceMs: 10_000 });
    expect(loadConfig({ VEIL_UPLOAD_MIN_BYTES_PER_SECOND: '0', VEIL_UPLOAD_MIN_RATE_GRACE_MS: '0' }).uploadMinRate).toEqual({ bytesPerSecond: 0, windowMs: 30_000, graceMs: 0 });
    expect(() => loadConfig({ VEIL_UPLOAD_MIN_BYTES_PER_SECOND: '-5' })).toThrow(/VEIL_UPLOAD_MIN_BYTES_PER_SECOND must be an integer/);
    expect(() => loadConfig({ VEIL_UPLOAD_MIN_RATE_WINDOW_MS: '10' })).toThrow(/VEIL_UPLOAD_MIN_RATE_WINDOW_MS must be an integer from 100/);
    expect(loadConfig({ VEIL_GRPC_MAX_CONCURRENT_STREAMS: '50', VEIL_HTTP_REQUEST_TIMEOUT_MS: '30000' })).toMatchObject({
      grpcLimits: { maxConcurrentStreams: 50 },
      httpLimits: { requestTimeoutMs: 30_000 },
    });
    expect(() => loadConfig({ VEIL_GRPC_KEEPALIVE_TIME_MS: '-1' })).toThrow(/VEIL_GRPC_KEEPALIVE_TIME_MS must be an integer/);
    expect(() => loadConfig({ VEIL_HTTP_HEADERS_TIMEOUT_MS: '200000' })).toThrow(/cannot exceed VEIL_HTTP_REQUEST_TIMEOUT_MS/);
    expect(() => loadConfig({ VEIL_UPLOAD_IDLE_TIMEOUT_MS: '0' })).toThrow(ConfigError);
  });
});
