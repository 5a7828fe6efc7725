/** Injected into the browser bundle: Node's Buffer (the `buffer` package), used by @veil/crypto's byte helpers. */
import { Buffer } from 'buffer';
export { Buffer };
