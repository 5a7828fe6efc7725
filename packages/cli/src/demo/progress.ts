/** A one-line progress bar on a TTY-like stream (`\r` redraws), silent when disabled. */
export interface ProgressBar {
  update(done: number, total: number, label: string): void;
  /** Ends the bar's line and prints `line` below it. */
  finish(line: string): void;
}

export function createProgressBar(stream: NodeJS.WritableStream, enabled: boolean, width = 24): ProgressBar {
  let active = false;
  return {
    update(done, total, label) {
      if (!enabled) return;
      const filled = total > 0 ? Math.round((done / total) * width) : 0;
      stream.write(`\r${label} [${'#'.repeat(filled)}${'.'.repeat(width - filled)}] ${done}/${total} updates   `);
      active = true;
    },
    finish(line) {
      if (!enabled) return;
      stream.write(`${active ? '\r\x1b[2K' : ''}${line}\n`);
      active = false;
    },
  };
}

/** The bar's label of round `roundNumber` of a demo of `trainingRounds` training rounds: those after them are calibration rounds. */
export function roundLabel(roundNumber: number, trainingRounds: number): string {
  if (roundNumber <= trainingRounds) return `round ${String(roundNumber).padStart(2)}/${trainingRounds}`;
  return `calibration round ${roundNumber - trainingRounds}`;
}
