import { VeilError } from '../../errors.js';
import { sampleClients } from '../fedavg.js';
import type { Aggregator, Strategy, StrategyDefinition, StrategyTaskContext } from '../strategy.js';
import { readParams } from './params.js';
import {
  bulyan, bulyanMinimumClients, coordinateMedian, createUpdateBuffer, krumMinimumClients, maxBufferedUpdates, multiKrum, trimmedMean,
} from './robust.js';

/** Default bound on the updates a robust strategy holds in memory per round: 256 MiB. */
export const DEFAULT_MAX_BUFFER_MIB = 256;

const INDIVIDUAL = { individualUpdates: true, plaintextAggregate: false } as const;

/**
 * A strategy that copies every update of the round into a bounded buffer and
 * computes the round's update from all of them (`rule`), then adds it to the
 * model. Refuses at creation a task whose rounds could need more than
 * `maxBufferMiB` (count selection) or fewer results than `minimumResults`.
 */
function bufferedStrategy(
  name: string,
  params: Record<string, number>,
  minimumResults: number,
  rule: (updates: readonly Float32Array[]) => Float32Array,
): Strategy {
  const maxBytes = params['maxBufferMiB']! * 2 ** 20;
  return {
    name,
    params,
    capabilities: INDIVIDUAL,
    validate(task: StrategyTaskContext) {
      if (task.minClients < minimumResults) {
        throw new VeilError(
          'invalid_argument',
          `strategy ${name} needs every round to close with at least ${minimumResults} updates: set minClients >= ${minimumResults} (it is ${task.minClients})`,
        );
      }
      const fit = maxBufferedUpdates(task.parameterCount, maxBytes);
      if (task.selection.kind === 'count' && task.selection.count > fit) {
        throw new VeilError(
          'invalid_argument',
          `strategy ${name} holds every update of a round in memory: ${task.selection.count} updates of ${task.parameterCount} values exceed maxBufferMiB ${params['maxBufferMiB']} (at most ${fit})`,
        );
      }
    },
    configureFit: (input) => sampleClients(input),
    createAggregator({ parameterCount }): Aggregator {
      const buffer = createUpdateBuffer({ parameterCount, maxBytes });
      return {
        add(result) {
          buffer.add(result.update);
        },
        get count() {
          return buffer.updates.length;
        },
        finish({ current }) {
          if (buffer.updates.length === 0) return null;
          if (buffer.updates.length < minimumResults) {
            throw new RangeError(`strategy ${name} needs at least ${minimumResults} updates, the round has ${buffer.updates.length}`);
          }
          const update = rule(buffer.updates);
          const next = new Float32Array(parameterCount);
          for (let i = 0; i < parameterCount; i++) next[i] = current[i]! + update[i]!;
          return { parameters: next, state: null };
        },
      };
    },
  };
}

const bufferParam = (read: ReturnType<typeof readParams>) => read.number('maxBufferMiB', DEFAULT_MAX_BUFFER_MIB, { min: 1 });

/** FedMedian: coordinate-wise median of the updates (Yin et al. 2018). Plaintext tasks only. */
export const fedMedianDefinition: StrategyDefinition = {
  name: 'fedmedian',
  create(params) {
    const read = readParams('fedmedian', params, ['maxBufferMiB']);
    return bufferedStrategy('fedmedian', { maxBufferMiB: bufferParam(read) }, 1, coordinateMedian);
  },
};

/** FedTrimmedAvg: coordinate-wise trimmed mean, `beta` cut from each tail (default 0.2, Flower's). Plaintext tasks only. */
export const fedTrimmedAvgDefinition: StrategyDefinition = {
  name: 'fedtrimmedavg',
  create(params) {
    const read = readParams('fedtrimmedavg', params, ['beta', 'maxBufferMiB']);
    const beta = read.number('beta', 0.2, { min: 0, max: 0.5, exclusiveMax: true });
    return bufferedStrategy('fedtrimmedavg', { beta, maxBufferMiB: bufferParam(read) }, 1, (updates) => trimmedMean(updates, beta));
  },
};

/**
 * Krum and Multi-Krum (Blanchard et al. 2017): `byzantine` f tolerated
 * (default 1), `selected` m averaged (default 1 = Krum; Multi-Krum's default
 * is n − f, given explicitly here since n varies). Rounds need ≥ 2f + 3 updates.
 */
function makeKrumDefinition(name: 'krum' | 'multikrum'): StrategyDefinition {
  return {
    name,
    create(params) {
      const read = readParams(name, params, name === 'krum' ? ['byzantine', 'maxBufferMiB'] : ['byzantine', 'selected', 'maxBufferMiB']);
      const byzantine = read.number('byzantine', 1, { min: 0, integer: true });
      const selected = name === 'krum' ? 1 : read.number('selected', 2, { min: 1, integer: true });
      const minimum = Math.max(krumMinimumClients(byzantine), selected);
      const stored: Record<string, number> = { byzantine, maxBufferMiB: bufferParam(read) };
      if (name === 'multikrum') stored['selected'] = selected;
      return bufferedStrategy(name, stored, minimum, (updates) => multiKrum(updates, byzantine, selected));
    },
  };
}

/** Krum: the single update with the lowest Krum score. */
export const krumDefinition = makeKrumDefinition('krum');
/** Multi-Krum: the mean of the `selected` best-scored updates. */
export const multiKrumDefinition = makeKrumDefinition('multikrum');

/** Bulyan over Krum (El Mhamdi et al. 2018): `byzantine` f (default 1); rounds need ≥ 4f + 3 updates. */
export const bulyanDefinition: StrategyDefinition = {
  name: 'bulyan',
  create(params) {
    const read = readParams('bulyan', params, ['byzantine', 'maxBufferMiB']);
    const byzantine = read.number('byzantine', 1, { min: 0, integer: true });
    return bufferedStrategy('bulyan', { byzantine, maxBufferMiB: bufferParam(read) }, bulyanMinimumClients(byzantine), (updates) =>
      bulyan(updates, byzantine),
    );
  },
};
