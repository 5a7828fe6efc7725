import { generateKeyBundle, writeKeyBundle, PARAMETER_PRESETS, DEFAULT_PRESET, type ParameterPresetName } from '@veil/crypto';

export interface GenerateKeysOptions {
  /** Output directory; `device/` (secret) and `coordinator/` (public) are created inside. */
  outDir: string;
  /** Label recorded in the bundle (the key's task). Default `veil`. */
  label: string;
  /** Parameter preset. Default `DEFAULT_PRESET`. */
  preset: ParameterPresetName;
  /** Largest client weight (example count) an update may carry. Default @veil/crypto's. */
  weightCap?: number;
  /** Clip bound of update values. Default @veil/crypto's. */
  clipMaxAbs?: number;
  /** Quantisation step. Default @veil/crypto's. */
  step?: number;
}

/** `veil keys generate`: a new federation key bundle, split into device and coordinator material. */
export async function generateKeys(options: GenerateKeysOptions): Promise<{ keyId: string; deviceKeyFile: string; coordinatorKeyFile: string }> {
  const bundle = await generateKeyBundle({
    taskId: options.label,
    preset: options.preset,
    quantization: {
      ...(options.weightCap !== undefined && { weightCap: options.weightCap }),
      ...(options.clipMaxAbs !== undefined && { clipMaxAbs: options.clipMaxAbs }),
      ...(options.step !== undefined && { step: options.step }),
    },
  });
  const paths = await writeKeyBundle(bundle, options.outDir);
  return { keyId: bundle.coordinator.keyId, ...paths };
}

export const KEY_PRESETS = Object.keys(PARAMETER_PRESETS) as ParameterPresetName[];
export { DEFAULT_PRESET };
