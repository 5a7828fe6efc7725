/**
 * Wall time of one demo round, plaintext vs encrypted, with the same clients
 * (same devices, data split, model and training settings): runs `veil demo`
 * twice with 2 rounds each and reports round 2 (round 1 includes starting the
 * device processes). Prints {"plainRoundMs":..,"encryptedRoundMs":..,...}.
 *
 *   npx tsx bench/he-rounds.ts [--clients 10]
 */
import { parseArgs } from 'node:util';
import { DEMO_DEFAULTS, runDemo } from '@veil/cli';

const { values } = parseArgs({ options: { clients: { type: 'string', default: '10' } } });
const clients = Number(values.clients);
const env: NodeJS.ProcessEnv = { ...process.env, VEIL_LOG_LEVEL: 'warn' };
delete env['DATABASE_URL'];

async function roundMs(plaintext: boolean): Promise<{ roundMs: number; uploadBytes: number; accuracy: number }> {
  const summary = await runDemo({ ...DEMO_DEFAULTS, clients, rounds: 2, json: true, plaintext }, env);
  const round = summary.rounds[1]!;
  return { roundMs: round.durationMs, uploadBytes: round.uploadBytes, accuracy: round.accuracy };
}

const plain = await roundMs(true);
const encrypted = await roundMs(false);
process.stdout.write(
  `${JSON.stringify({
    plainRoundMs: plain.roundMs,
    encryptedRoundMs: encrypted.roundMs,
    encryptedOverPlainRoundRatio: Math.round((encrypted.roundMs / plain.roundMs) * 1000) / 1000,
    roundClients: clients,
    plainRoundUploadBytes: plain.uploadBytes,
    encryptedRoundUploadBytes: encrypted.uploadBytes,
  })}\n`,
);
