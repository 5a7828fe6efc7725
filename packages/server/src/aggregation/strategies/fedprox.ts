import { createFedAvgAggregator, sampleClients } from '../fedavg.js';
import type { StrategyDefinition } from '../strategy.js';
import { readParams } from './params.js';

/**
 * FedProx (Li, Sahu, Zaheer, Sanjabi, Talwalkar & Smith 2020, "Federated
 * Optimization in Heterogeneous Networks", MLSys, Algorithm 2): the server
 * aggregates like FedAvg; each device minimises its loss plus
 * μ/2 · ‖w − w_t‖². The coordinator sends μ to the devices as the fit config
 * `proximalMu`; the SDK's `trainLocal` adds the term. Parameter `proximalMu`
 * (default 0.01, NIID-Bench's value for Fashion-MNIST). Its aggregate is
 * FedAvg's weighted sum, so it runs on encrypted tasks too.
 */
export const fedProxDefinition: StrategyDefinition = {
  name: 'fedprox',
  create(params) {
    const read = readParams('fedprox', params, ['proximalMu']);
    const proximalMu = read.number('proximalMu', 0.01, { min: 0 });
    return {
      name: 'fedprox',
      params: { proximalMu },
      capabilities: { individualUpdates: false, plaintextAggregate: false },
      configureFit: (input) => sampleClients(input, { proximalMu }),
      createAggregator: ({ parameterCount }) => createFedAvgAggregator(parameterCount),
    };
  },
};
