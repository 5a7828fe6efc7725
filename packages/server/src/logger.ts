import { pino, type Logger, type LoggerOptions } from 'pino';

export type { Logger };

/**
 * Paths pino removes from every log line: credentials, secrets, and any field
 * that could carry model weights, updates or ciphertexts.
 */
export const REDACT_PATHS = [
  'credential',
  '*.credential',
  'token',
  '*.token',
  'authorization',
  '*.authorization',
  'req.headers.authorization',
  'enrolmentSecret',
  '*.enrolmentSecret',
  'weights',
  '*.weights',
  'payload',
  '*.payload',
  'ciphertext',
  '*.ciphertext',
  'secretKey',
  '*.secretKey',
];

export interface LoggerSettings {
  /** pino level. Default `info`. */
  level?: string;
  /** Destination stream. Default stdout. */
  destination?: NodeJS.WritableStream;
}

/** Creates the coordinator's root logger (JSON lines, secrets and weights redacted). */
export function createLogger(settings: LoggerSettings = {}): Logger {
  const options: LoggerOptions = {
    level: settings.level ?? 'info',
    base: { service: 'veil-coordinator' },
    redact: { paths: REDACT_PATHS, censor: '[redacted]' },
  };
  return settings.destination ? pino(options, settings.destination) : pino(options);
}
