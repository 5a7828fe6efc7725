/** JSON schemas of the REST API; Fastify validates with them and @fastify/swagger documents them. */

export const errorSchema = {
  type: 'object',
  required: ['code', 'message'],
  properties: { code: { type: 'string' }, message: { type: 'string' } },
} as const;

const trainingSchema = {
  type: 'object',
  required: ['epochs', 'batchSize', 'learningRate'],
  additionalProperties: false,
  properties: {
    epochs: { type: 'integer', minimum: 1, maximum: 1000 },
    batchSize: { type: 'integer', minimum: 1 },
    learningRate: { type: 'number', exclusiveMinimum: 0 },
  },
} as const;

/** Options of federated int8 calibration (task creation's `calibration`, POST /v1/tasks/:id/calibration). */
export const calibrationOptionsSchema = {
  type: 'object',
  additionalProperties: false,
  properties: {
    method: { type: 'string', enum: ['percentile', 'kl', 'minmax'], description: 'Range choice over the aggregated histogram. Default percentile.' },
    percentile: { type: 'number', exclusiveMinimum: 0, maximum: 100, description: 'percentile method: |activations| kept inside the range, in percent. Default 99.99.' },
    bins: { type: 'integer', minimum: 256, maximum: 65536, description: 'Linear bins per calibration point. Default min(2048, parameters / points).' },
    tailFraction: { type: 'number', minimum: 0, exclusiveMaximum: 0.5, description: 'Share of examples whose extreme activation may fall outside the histogram grid. Default 0.001.' },
  },
} as const;

export const taskCreateSchema = {
  type: 'object',
  required: ['name', 'rounds', 'training', 'model'],
  additionalProperties: false,
  properties: {
    name: { type: 'string', minLength: 1, maxLength: 200 },
    rounds: { type: 'integer', minimum: 1, description: 'Rounds to run (closed and failed rounds count).' },
    clientsPerRound: { type: 'integer', minimum: 1, description: 'Clients selected per round (or use clientFraction).' },
    clientFraction: { type: 'number', exclusiveMinimum: 0, maximum: 1, description: 'Fraction of available clients selected per round.' },
    minClients: { type: 'integer', minimum: 1, description: 'Updates needed for a round to close at its deadline. Default 1.' },
    minAvailableClients: { type: 'integer', minimum: 1, description: 'Clients that must be available before a round selects. Default clientsPerRound.' },
    roundDeadlineMs: { type: 'integer', minimum: 100, description: 'Time selected clients have to submit. Default 60000.' },
    maxExampleCount: { type: 'integer', minimum: 1, description: 'Largest example count accepted as an update weight. Default 1000000.' },
    maxDevices: { type: 'integer', minimum: 1, maximum: 10_000_000, description: 'Device identities (not revoked) the task admits at most; Join beyond it is refused with RESOURCE_EXHAUSTED. Default 100000.' },
    training: trainingSchema,
    updateBound: {
      type: 'object',
      description:
        'Server-side bound on plaintext updates (norm bounding, Sun et al. 2019): an update whose norm ("l2", or "linf" = its largest absolute value) exceeds maxNorm is refused with INVALID_ARGUMENT and not recorded (onExceed "reject") or clipped to the bound when aggregated (onExceed "clip": linf clamps each value, l2 scales the update). Default {"norm":"linf","maxNorm":1000,"onExceed":"reject"}. Not for encrypted tasks (their devices clip to the key\'s clipMaxAbs). A round whose aggregate is still not finite fails with a reason and keeps the model.',
      required: ['norm', 'maxNorm', 'onExceed'],
      additionalProperties: false,
      properties: {
        norm: { type: 'string', enum: ['l2', 'linf'] },
        maxNorm: { type: 'number', exclusiveMinimum: 0, maximum: 1e30 },
        onExceed: { type: 'string', enum: ['clip', 'reject'] },
      },
    },
    calibration: {
      description:
        'Federated int8 calibration (issue 16): true, or options. After the last training round two calibration rounds run on the final model (a range round, then a histogram round): selected devices report activation statistics on a fixed grid, aggregated like updates (plaintext sum or committee decryption; local DP noise, or in committee mode the distributed discrete Gaussian, and a privacy-ledger entry per round where the task uses DP). The chosen activation ranges are stored with the model version and used by int8 exports. Shared-key (BFV) tasks: the reports are encrypted and summed as ciphertexts (under local DP each device adds its Gaussian noise before encrypting; under distributed DP each device DDG-encodes its report padded to the model\'s dimension, as an update; each round gets a training round\'s ledger entry), the devices derive the histogram plan from the encrypted range sum, and only a key holder opens the sums and chooses the ranges (veil calibration/export --device-key). Default false.',
      anyOf: [
        { type: 'boolean' },
        calibrationOptionsSchema,
      ],
    },
    start: { type: 'boolean', description: 'Start the task right away. Default false.' },
    privacy: {
      type: 'object',
      description:
        'Differential privacy with an enforced budget (user-level DP-FedAvg). Devices are selected by Poisson sampling with samplingRate (clientsPerRound, if given, caps a round); every update weighs 1; no round opens that would take epsilon past epsilonCap. mode "local": each device adds Gaussian noise (std noiseMultiplier*clipNorm). mode "distributed" (encrypted tasks only): each device adds a discrete Gaussian share and only the encrypted sum carries the full noise (Kairouz, Liu & Steinke 2021).',
      required: ['mode', 'epsilonCap', 'delta', 'noiseMultiplier', 'clipNorm', 'samplingRate'],
      additionalProperties: false,
      properties: {
        mode: { type: 'string', enum: ['local', 'distributed'] },
        epsilonCap: { type: 'number', exclusiveMinimum: 0 },
        delta: { type: 'number', exclusiveMinimum: 0, exclusiveMaximum: 1 },
        noiseMultiplier: { type: 'number', exclusiveMinimum: 0 },
        clipNorm: { type: 'number', exclusiveMinimum: 0 },
        samplingRate: { type: 'number', exclusiveMinimum: 0, maximum: 1 },
        minNoiseClients: {
          type: 'integer',
          minimum: 1,
          description:
            'Distributed mode: n, the fewest updates a round may release (at most minClients; default minClients). Each device adds noise with stddev noiseMultiplier*clipNorm/sqrt(n), so any n of them carry noiseMultiplier*clipNorm.',
        },
        scale: {
          type: 'number',
          exclusiveMinimum: 0,
          description: 'Distributed mode: 1/gamma, integer-grid steps per model unit of the discrete Gaussian (default 1024). Refused if a sum could wrap around the key\'s plain modulus.',
        },
      },
    },
    strategy: {
      type: 'object',
      description:
        'Aggregation strategy and its parameters, e.g. { "name": "fedavg" } (the default). Each strategy validates its own parameters; strategies that read individual updates (fedmedian, fedtrimmedavg, krum, multikrum, bulyan) are refused for committee and shared-key tasks, and server optimizers (fedavgm, fedadam, fedyogi, fedadagrad), which step from the decrypted average of a committee round, for shared-key tasks.',
      required: ['name'],
      additionalProperties: { anyOf: [{ type: 'number' }, { type: 'string' }, { type: 'boolean' }] },
      properties: { name: { type: 'string', minLength: 1, maxLength: 64 } },
    },
    committee: {
      type: 'object',
      description:
        'Committee aggregation (issue 11): the task descriptor signed by the enrolment authority (`veil authority descriptor` / `sign-descriptor`). descriptor: the canonical descriptor JSON, base64; descriptorSignature: base64 Ed25519. The task id becomes the descriptor\'s taskId. Needs VEIL_COMMITTEE_REQUEST_KEY on the coordinator. Excludes `encryption`.',
      required: ['descriptor', 'descriptorSignature'],
      additionalProperties: false,
      properties: {
        descriptor: { type: 'string', minLength: 1, maxLength: 65536 },
        descriptorSignature: { type: 'string', minLength: 1, maxLength: 200 },
      },
    },
    encryption: {
      type: 'object',
      description:
        'Encrypted aggregation (BFV, node-seal). mode "none": plaintext updates. mode "bfv": updates are encrypted on devices; give the public coordinatorKey from `veil keys generate` (coordinator/coordinator-key.json), or a keyId loaded from VEIL_KEYS_DIR. Omitted: the VEIL_KEYS_DIR key if configured, else plaintext. Secret key material is refused.',
      required: ['mode'],
      additionalProperties: false,
      properties: {
        mode: { type: 'string', enum: ['none', 'bfv'] },
        keyId: { type: 'string', format: 'uuid' },
        coordinatorKey: { type: 'object', additionalProperties: true },
      },
    },
    model: {
      type: 'object',
      required: ['topology', 'weightSpecs', 'weightsBase64'],
      additionalProperties: false,
      properties: {
        topology: { type: 'object', description: 'TensorFlow.js layers topology (model.json modelTopology).', additionalProperties: true },
        weightSpecs: {
          type: 'array',
          minItems: 1,
          items: {
            type: 'object',
            required: ['name', 'shape', 'dtype'],
            properties: { name: { type: 'string' }, shape: { type: 'array', items: { type: 'integer', minimum: 1 } }, dtype: { type: 'string', enum: ['float32'] } },
          },
        },
        weightsBase64: { type: 'string', description: 'Initial weights: little-endian float32 in weight-spec order, base64.' },
      },
    },
  },
} as const;

export const taskSchema = {
  type: 'object',
  properties: {
    id: { type: 'string' },
    name: { type: 'string' },
    status: { type: 'string', enum: ['DRAFT', 'RUNNING', 'PAUSED', 'COMPLETED', 'FAILED', 'BUDGET_EXHAUSTED'] },
    statusReason: { type: ['string', 'null'] },
    settings: { type: 'object', additionalProperties: true },
    parameterCount: { type: 'integer' },
    encryption: {
      type: ['object', 'null'],
      properties: {
        keyId: { type: 'string' },
        fingerprint: { type: 'string' },
        preset: { type: 'string' },
        weightCap: { type: 'integer' },
        clipMaxAbs: { type: 'number' },
        step: { type: 'number' },
      },
    },
    currentModelVersion: { type: 'integer' },
    createdAt: { type: 'string', format: 'date-time' },
    updatedAt: { type: 'string', format: 'date-time' },
    progress: {
      type: 'object',
      properties: {
        currentRound: { type: ['integer', 'null'], description: 'Number of the latest round (open or finished); null before the first' },
        currentRoundState: { type: ['string', 'null'] },
        devices: { type: 'integer', description: 'Devices that joined the task' },
        epsilonSpent: { type: ['number', 'null'], description: 'Cumulative epsilon of the task so far (DP tasks), at settings.privacy.delta; null without DP' },
      },
    },
    warnings: { type: 'array', items: { type: 'string' }, description: 'Settings worth a second look (e.g. an epsilon cap above 10); the task is not refused' },
  },
} as const;

/** A task as the audit token sees it in the task list (read-only fields). */
export const taskListSchema = {
  type: 'object',
  properties: { tasks: { type: 'array', items: taskSchema } },
} as const;

export const roundSchema = {
  type: 'object',
  properties: {
    number: { type: 'integer' },
    state: { type: 'string', enum: ['SELECTING', 'COLLECTING', 'AGGREGATING', 'CLOSED', 'FAILED'] },
    failureReason: { type: ['string', 'null'] },
    baseModelVersion: { type: 'integer' },
    selected: { type: 'integer', description: 'Updates that close the round early (the selected count)' },
    received: { type: 'integer', description: 'Accepted updates' },
    participation: {
      type: 'object',
      description:
        'Participants by status: selected (all), submitted (update accepted), dropped (selected, no update by the close); trainedExamples: the examples the submitters reported training on (not their FedAvg weight, which summary.examples sums and which is 1 per update under DP); null when none reported',
      properties: { selected: { type: 'integer' }, submitted: { type: 'integer' }, dropped: { type: 'integer' }, trainedExamples: { type: ['integer', 'null'] } },
    },
    minClients: { type: 'integer' },
    deadlineAt: { type: ['string', 'null'] },
    training: { type: 'object', additionalProperties: true },
    summary: { type: ['object', 'null'], additionalProperties: true },
    evaluation: {
      type: ['object', 'null'],
      description:
        'Metrics devices reported for the model this round distributed (evaluation.modelVersion, which is baseModelVersion: the model before this round trained), weighted by example count. The model a round produces is evaluated by the next round.',
      properties: {
        modelVersion: { type: 'integer', description: 'The model version evaluated' },
        clients: { type: 'integer' },
        examples: { type: 'integer', description: 'Held-out examples evaluated, summed over devices' },
        metrics: { type: 'object', additionalProperties: { type: 'number' } },
      },
    },
    events: {
      type: 'array',
      items: {
        type: 'object',
        properties: { from: { type: ['string', 'null'] }, to: { type: 'string' }, reason: { type: ['string', 'null'] }, at: { type: 'string' } },
      },
    },
    openedAt: { type: 'string' },
    closedAt: { type: ['string', 'null'] },
  },
} as const;

export const ledgerEntrySchema = {
  type: 'object',
  properties: {
    taskId: { type: 'string' },
    sequence: { type: 'integer' },
    roundNumber: { type: 'integer' },
    mechanism: { type: 'string' },
    samplingRate: { type: 'number' },
    noiseMultiplier: { type: 'number' },
    clipNorm: { type: 'number' },
    participants: { type: 'integer' },
    participantIds: { type: 'array', items: { type: 'string' } },
    epsilon: { type: 'number', description: 'CUMULATIVE epsilon of the task after this entry (all rounds so far, not this round alone), at delta' },
    epsilonCoordinator: {
      type: ['number', 'null'],
      description: 'Committee tasks with distributed DP: CUMULATIVE epsilon against the coordinator, without subsampling amplification (it chooses D), at delta; covered by the hash. Absent or null otherwise',
    },
    delta: { type: 'number' },
    order: { type: 'number', description: 'The Renyi-DP order alpha at which the cumulative epsilon was attained (the RDP-to-(epsilon, delta) conversion minimises over the orders)' },
    createdAt: { type: 'string' },
    ddg: {
      type: ['object', 'null'],
      description: 'Distributed mode (mechanism ddg-distributed, Kairouz, Liu & Steinke 2021): the parameters the round\'s RDP is recomputed from',
      properties: {
        noiseClients: { type: 'integer', description: 'Noise shares the accounting assumes in the released sum' },
        scale: { type: 'number', description: '1/gamma, integer-grid steps per model unit' },
        localStddev: { type: 'number', description: 'Noise stddev of one device, model units' },
        dimension: { type: 'integer', description: 'Update length padded to a power of two' },
        roundingBeta: { type: 'number', description: 'beta of the conditional randomized rounding' },
      },
    },
    decryption: {
      type: ['object', 'null'],
      description:
        'Committee tasks (mechanism committee-decryption, issue 11): the custodians\' signed answers that let the coordinator decrypt this round\'s sum over D; covered by the entry\'s hash and re-verified by /privacy/verify against the task descriptor. Absent or null on spend entries',
      properties: {
        descriptorHash: { type: 'string', description: 'hex SHA-256 of the task descriptor' },
        hashD: { type: 'string', description: 'hex SHA-256("veil/D/v1" || sorted manifest digests of D)' },
        manifestDigests: { type: 'array', items: { type: 'string' }, description: 'hex SHA-256 of each upload manifest of D, sorted' },
        answers: {
          type: 'array',
          items: {
            type: 'object',
            properties: {
              answer: {
                type: 'object',
                properties: {
                  descriptorHash: { type: 'string' },
                  round: { type: 'integer' },
                  hashD: { type: 'string' },
                  count: { type: 'integer', description: '|D| the custodian counted' },
                  custodianIndex: { type: 'integer' },
                  shareSumSha256: { type: 'string', description: 'hex SHA-256 of the share sum (the sum itself is not kept)' },
                },
              },
              signature: { type: 'string', description: 'base64 Ed25519 signature over "veil/answer/v1" || RFC 8785 canonical answer bytes' },
            },
          },
        },
      },
    },
    prevHash: { type: 'string' },
    hash: { type: 'string' },
  },
} as const;

export const privacySummarySchema = {
  type: 'object',
  properties: {
    taskId: { type: 'string' },
    status: { type: 'string' },
    mode: { type: 'string' },
    mechanism: { type: 'string' },
    accountant: { type: 'object', additionalProperties: true },
    epsilonCap: { type: 'number' },
    delta: { type: 'number' },
    spent: { type: 'number', description: 'Same as epsilonSpent (kept for existing clients)' },
    epsilonSpent: { type: 'number', description: 'Cumulative epsilon of the task after its last ledger entry, at delta' },
    epsilonSpentCoordinator: {
      type: ['number', 'null'],
      description: 'Committee tasks with distributed DP: cumulative epsilon against the coordinator (no subsampling amplification, since it chooses D); epsilonSpent is the guarantee for observers of the released models. Null otherwise',
    },
    remaining: { type: 'number', description: 'epsilonCap - epsilonSpent (not below 0)' },
    projection: {
      type: 'object',
      description: 'Where the budget runs out if further rounds cost what the settings say (computed with the accountant)',
      properties: {
        nextRoundEpsilon: { type: ['number', 'null'], description: 'Increase of the cumulative epsilon the next round would cause' },
        lastAffordableRound: { type: ['integer', 'null'], description: 'Last round number whose cumulative epsilon stays within the cap' },
        exhaustedAtRound: { type: ['integer', 'null'], description: 'First round the budget would refuse, if before the task ends; null when the task ends first' },
      },
    },
    warnings: { type: 'array', items: { type: 'string' } },
    rounds: {
      type: 'array',
      items: {
        type: 'object',
        properties: {
          roundNumber: { type: 'integer' },
          epsilon: { type: 'number', description: 'Same as epsilonCumulative (kept for existing clients)' },
          epsilonCumulative: { type: 'number', description: 'Cumulative epsilon of the task after this round' },
          epsilonCoordinator: { type: ['number', 'null'], description: 'Committee tasks with distributed DP: cumulative epsilon against the coordinator after this round (unamplified); null otherwise' },
          order: { type: 'number', description: 'Renyi-DP order at which epsilonCumulative was attained' },
          participants: { type: 'integer' },
          at: { type: 'string' },
          decryption: {
            type: ['object', 'null'],
            description: "Committee tasks: which custodians approved this round's decryption (their signed answers are in the ledger) and for how many devices; null otherwise",
            properties: {
              custodians: { type: 'array', items: { type: 'integer' } },
              deviceCount: { type: 'integer' },
            },
          },
        },
      },
    },
    clients: {
      type: 'array',
      description: 'Per-device spend: each device composes the unamplified mechanism (q = 1) over the rounds it took part in',
      items: {
        type: 'object',
        properties: {
          clientId: { type: 'string' },
          name: { type: ['string', 'null'] },
          participations: { type: 'integer' },
          epsilon: { type: 'number', description: "Cumulative epsilon of this device's participations, at delta" },
        },
      },
    },
  },
} as const;

export const verifySchema = {
  type: 'object',
  properties: {
    ok: { type: 'boolean' },
    entries: { type: 'integer' },
    withinCap: { type: 'boolean' },
    firstMismatch: { type: ['object', 'null'], properties: { sequence: { type: 'integer' }, reason: { type: 'string' } } },
    headHash: { type: 'string', description: 'Hash of the last entry checked: compare it with a checkpoint kept outside Veil' },
  },
} as const;

export const ledgerPageSchema = {
  type: 'object',
  properties: {
    total: { type: 'integer' },
    cumulativeFields: { type: 'array', items: { type: 'string' }, description: 'Fields of an entry that are cumulative over the task (epsilon)' },
    entries: { type: 'array', items: ledgerEntrySchema },
  },
} as const;

export const checkpointSchema = {
  type: 'object',
  description: 'The head of the privacy ledger, to keep outside Veil (unsigned: see README)',
  properties: {
    format: { type: 'string' },
    taskId: { type: 'string' },
    taskName: { type: 'string' },
    sequence: { type: 'integer' },
    roundNumber: { type: 'integer' },
    headHash: { type: 'string' },
    epsilonCumulative: { type: 'number' },
    delta: { type: 'number' },
    epsilonCap: { type: 'number' },
    hashAlgorithm: { type: 'string' },
    createdAt: { type: 'string' },
    signed: { type: 'boolean' },
  },
} as const;

export const deviceListSchema = {
  type: 'object',
  properties: {
    devices: {
      type: 'array',
      items: {
        type: 'object',
        properties: {
          id: { type: 'string' },
          name: { type: ['string', 'null'], description: 'The name the device gave when it joined' },
          joinedAt: { type: 'string' },
          lastSeenAt: { type: 'string', description: 'Latest of its join and its last accepted update' },
          roundsSelected: { type: 'integer' },
          roundsSubmitted: { type: 'integer' },
          roundsDropped: { type: 'integer' },
          trainedExamples: { type: ['integer', 'null'], description: 'Examples the device reported training on, summed over its accepted updates; null when it never reported' },
          credential: { type: 'string', enum: ['active', 'revoked'], description: 'State of the bearer credential the device got at Join (stored hashed): active, or revoked by an admin' },
          revokedAt: { type: ['string', 'null'] },
        },
      },
    },
  },
} as const;

export const statusSchema = { type: 'object', properties: { status: { type: 'string' } } } as const;

export const sessionSchema = {
  type: 'object',
  properties: { role: { type: 'string', enum: ['admin', 'audit'], description: 'What the bearer token may do: admin (everything) or audit (task list and privacy routes, read-only)' } },
} as const;

export const taskCreateExample = {
  name: 'digits',
  rounds: 10,
  clientsPerRound: 10,
  minClients: 8,
  roundDeadlineMs: 60000,
  training: { epochs: 1, batchSize: 32, learningRate: 0.05 },
  encryption: { mode: 'none' },
  privacy: { mode: 'local', epsilonCap: 8, delta: 1e-5, noiseMultiplier: 1.1, clipNorm: 1, samplingRate: 0.5 },
  model: {
    topology: { class_name: 'Sequential', config: { name: 'digits', layers: [] } },
    weightSpecs: [{ name: 'dense/kernel', shape: [2, 1], dtype: 'float32' }],
    weightsBase64: 'AAAAAAAAAAA=',
  },
  start: true,
};

export const evaluationListSchema = {
  type: 'object',
  properties: {
    evaluations: {
      type: 'array',
      description:
        'Federated evaluation by model version, oldest first: devices evaluate on their own held-out data the model they receive in a round (source "round": version N-1, reported in round N) and the final model after the task ended (source "final"); metrics are means weighted by example count',
      items: {
        type: 'object',
        properties: {
          modelVersion: { type: 'integer', description: 'The model version evaluated' },
          source: { type: 'string', enum: ['round', 'final'] },
          clients: { type: 'integer' },
          examples: { type: 'integer' },
          metrics: { type: 'object', additionalProperties: { type: 'number' } },
        },
      },
    },
  },
} as const;
