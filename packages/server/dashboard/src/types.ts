/** Shapes of the API responses the dashboard reads (see /docs/json). */
export interface TaskJson {
  id: string;
  name: string;
  status: string;
  statusReason: string | null;
  settings: {
    rounds: number;
    minClients: number;
    roundDeadlineMs: number;
    privacy: { mode: 'local' | 'distributed'; epsilonCap: number; delta: number; noiseMultiplier: number; clipNorm: number; samplingRate: number } | null;
  };
  encryption: { preset: string; keyId: string } | null;
  currentModelVersion: number;
  progress: { currentRound: number | null; currentRoundState: string | null; devices: number; epsilonSpent: number | null };
  warnings: string[];
}

export interface RoundJson {
  number: number;
  state: string;
  failureReason: string | null;
  baseModelVersion: number;
  participation: { selected: number; submitted: number; dropped: number; trainedExamples: number | null };
  deadlineAt: string | null;
  summary: { participants: number; dropped: number; examples: number; uploadBytes: number; modelVersion: number | null } | null;
  evaluation: { modelVersion: number; clients: number; examples: number; metrics: Record<string, number> } | null;
  openedAt: string;
  closedAt: string | null;
}

export interface LiveRoundJson {
  number: number;
  state: string;
  selected: number;
  downloaded: number | null;
  submitted: number;
  dropped: number;
  minClients: number;
  deadlineAt: string | null;
  failureReason: string | null;
}

export interface LiveEventJson {
  type: string;
  taskId: string;
  round: LiveRoundJson | null;
  taskStatus: string | null;
  serverTimeMs: number;
}

export interface PrivacyJson {
  taskId: string;
  status: string;
  mode: string;
  mechanism: string;
  accountant: { name: string; description: string; samplingRate: number; noiseMultiplier: number; clipNorm: number };
  epsilonCap: number;
  delta: number;
  epsilonSpent: number;
  remaining: number;
  projection: { nextRoundEpsilon: number | null; lastAffordableRound: number | null; exhaustedAtRound: number | null };
  warnings: string[];
  rounds: Array<{ roundNumber: number; epsilonCumulative: number; order: number; participants: number; at: string }>;
  clients: Array<{ clientId: string; name: string | null; participations: number; epsilon: number }>;
}

export interface LedgerEntryJson {
  sequence: number;
  roundNumber: number;
  mechanism: string;
  samplingRate: number;
  noiseMultiplier: number;
  clipNorm: number;
  participants: number;
  epsilon: number;
  delta: number;
  order: number;
  createdAt: string;
  prevHash: string;
  hash: string;
}

export interface VerifyJson {
  ok: boolean;
  entries: number;
  withinCap: boolean;
  firstMismatch: { sequence: number; reason: string } | null;
  headHash: string;
}

export interface DeviceJson {
  id: string;
  name: string | null;
  joinedAt: string;
  lastSeenAt: string;
  roundsSelected: number;
  roundsSubmitted: number;
  roundsDropped: number;
  trainedExamples: number | null;
  credential: string;
  revokedAt: string | null;
}

export interface EvaluationJson {
  modelVersion: number;
  source: 'round' | 'final';
  clients: number;
  examples: number;
  metrics: Record<string, number>;
}
