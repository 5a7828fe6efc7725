/**
 * Hybrid Public Key Encryption, RFC 9180, base mode (mode_base = 0x00) for the one suite Veil
 * uses: KEM DHKEM(X25519, HKDF-SHA256) (0x0020), KDF HKDF-SHA256 (0x0001), AEAD AES-128-GCM
 * (0x0001). Section references are to RFC 9180. HKDF is RFC 5869 over HMAC-SHA256; X25519 and
 * AES-GCM come from node:crypto (OpenSSL).
 *
 * Veil seals each Shamir share to one custodian with a single-shot {@link sealBase}: a fresh
 * ephemeral key per share (§5.1.1), sequence number 0 only, output `enc || ciphertext`.
 */
import { createCipheriv, createDecipheriv, createHmac, hkdfSync } from 'node:crypto';
import { CryptoError } from '../errors.js';
import { concatBytes, u16be, utf8 } from './bytes.js';
import { secureRandomBytes, x25519, x25519PublicKey, type RandomBytes, type RawKeyPair, type X25519PrivateKey } from './keys.js';

const KEM_ID = 0x0020;
const KDF_ID = 0x0001;
const AEAD_ID = 0x0001;
const MODE_BASE = 0x00;
/** Encapsulated key length (Nenc), public key length (Npk), private key length (Nsk). */
export const HPKE_ENC_LENGTH = 32;
const N_SECRET = 32; // Nsecret of the KEM, Nh of HKDF-SHA256
const N_K = 16; // AES-128-GCM key
const N_N = 12; // AES-GCM nonce
/** AES-GCM tag length (Nt). */
export const HPKE_TAG_LENGTH = 16;

const KEM_SUITE_ID = concatBytes(utf8('KEM'), u16be(KEM_ID)); // §4.1
const HPKE_SUITE_ID = concatBytes(utf8('HPKE'), u16be(KEM_ID), u16be(KDF_ID), u16be(AEAD_ID)); // §5.1
const HPKE_V1 = utf8('HPKE-v1');

function hkdfExtract(salt: Uint8Array, ikm: Uint8Array): Uint8Array {
  // RFC 5869 §2.2: an empty salt is HashLen zero bytes, which HMAC pads identically.
  return new Uint8Array(createHmac('sha256', salt.length === 0 ? new Uint8Array(32) : salt).update(ikm).digest());
}

function hkdfExpand(prk: Uint8Array, info: Uint8Array, length: number): Uint8Array {
  // RFC 5869 §2.3.
  const out = new Uint8Array(length);
  let previous = new Uint8Array(0);
  let offset = 0;
  for (let counter = 1; offset < length; counter++) {
    previous = new Uint8Array(createHmac('sha256', prk).update(previous).update(info).update(Uint8Array.of(counter)).digest());
    out.set(previous.subarray(0, Math.min(previous.length, length - offset)), offset);
    offset += previous.length;
  }
  return out;
}

/** LabeledExtract (§4). */
function labeledExtract(suiteId: Uint8Array, salt: Uint8Array, label: string, ikm: Uint8Array): Uint8Array {
  return hkdfExtract(salt, concatBytes(labelPrefix(suiteId, label), ikm));
}

/** LabeledExpand (§4). */
function labeledExpand(suiteId: Uint8Array, prk: Uint8Array, label: string, info: Uint8Array, length: number): Uint8Array {
  return hkdfExpand(prk, concatBytes(u16be(length), labelPrefix(suiteId, label), info), length);
}

/**
 * "HPKE-v1" || suite_id || label (§4), by suite and label: public constants, built once each (the
 * labels are this file's literals, a handful; every share opened used to encode them again).
 * Callers concatenate them into new arrays and never write to them.
 */
const labelPrefixes = new Map<Uint8Array, Map<string, Uint8Array>>();

function labelPrefix(suiteId: Uint8Array, label: string): Uint8Array {
  let bySuite = labelPrefixes.get(suiteId);
  if (bySuite === undefined) {
    bySuite = new Map();
    labelPrefixes.set(suiteId, bySuite);
  }
  let prefix = bySuite.get(label);
  if (prefix === undefined) {
    prefix = concatBytes(HPKE_V1, suiteId, utf8(label));
    bySuite.set(label, prefix);
  }
  return prefix;
}

/**
 * LabeledExpand(LabeledExtract(salt, extractLabel, ikm), expandLabel, info, length) (§4) in one
 * native call: RFC 5869's HKDF(salt, IKM, info, L) is Expand(Extract(salt, IKM), info, L), and the
 * labels only prefix IKM and info. Every pair of the protocol is one of these; a single
 * node:crypto hkdfSync costs less than the two or three HMAC objects the steps take one by one
 * (part of every share a custodian opens). The pseudorandom key stays inside OpenSSL.
 */
function labeledHkdf(suiteId: Uint8Array, salt: Uint8Array, extractLabel: string, ikm: Uint8Array, expandLabel: string, info: Uint8Array, length: number): Uint8Array {
  const labeledIkm = concatBytes(labelPrefix(suiteId, extractLabel), ikm);
  const labeledInfo = concatBytes(u16be(length), labelPrefix(suiteId, expandLabel), info);
  try {
    return new Uint8Array(hkdfSync('sha256', labeledIkm, salt, labeledInfo, length));
  } finally {
    labeledIkm.fill(0);
  }
}

/** DeriveKeyPair for X25519 (§7.1.3): sk = LabeledExpand(LabeledExtract("", "dkp_prk", ikm), "sk", "", 32). */
export function hpkeDeriveKeyPair(ikm: Uint8Array): RawKeyPair {
  if (ikm.length < N_SECRET) throw new CryptoError('invalid_argument', `DeriveKeyPair needs at least ${N_SECRET} bytes of ikm`);
  const privateKey = labeledHkdf(KEM_SUITE_ID, new Uint8Array(0), 'dkp_prk', ikm, 'sk', new Uint8Array(0), 32);
  return { privateKey, publicKey: x25519PublicKey(privateKey) };
}

/** ExtractAndExpand (§4.1). */
function extractAndExpand(dh: Uint8Array, kemContext: Uint8Array): Uint8Array {
  return labeledHkdf(KEM_SUITE_ID, new Uint8Array(0), 'eae_prk', dh, 'shared_secret', kemContext, N_SECRET);
}

/** The result of {@link hpkeEncap}. */
export interface Encapsulation {
  readonly sharedSecret: Uint8Array;
  readonly enc: Uint8Array;
}

/** Encap (§4.1) with the ephemeral key pair given (tests pass the RFC's; {@link sealBase} a fresh one). */
export function hpkeEncap(recipientPublicKey: Uint8Array, ephemeral: RawKeyPair): Encapsulation {
  const dh = x25519(ephemeral.privateKey, recipientPublicKey);
  const enc = ephemeral.publicKey;
  const sharedSecret = extractAndExpand(dh, concatBytes(enc, recipientPublicKey));
  dh.fill(0);
  return { sharedSecret, enc: Uint8Array.from(enc) };
}

/**
 * Decap (§4.1). `recipientPublicKey` saves deriving it from the private key when the caller has it;
 * a prepared private key ({@link X25519PrivateKey}) saves parsing it again, and carries its public half.
 */
export function hpkeDecap(
  enc: Uint8Array,
  recipientPrivateKey: Uint8Array | X25519PrivateKey,
  recipientPublicKey: Uint8Array = recipientPrivateKey instanceof Uint8Array ? x25519PublicKey(recipientPrivateKey) : recipientPrivateKey.publicKey,
): Uint8Array {
  if (enc.length !== HPKE_ENC_LENGTH) throw new CryptoError('invalid_ciphertext', 'HPKE enc must be 32 bytes');
  const dh = recipientPrivateKey instanceof Uint8Array ? x25519(recipientPrivateKey, enc) : recipientPrivateKey.agree(enc);
  const sharedSecret = extractAndExpand(dh, concatBytes(enc, recipientPublicKey));
  dh.fill(0);
  return sharedSecret;
}

/** The encryption context of the key schedule (§5.1). */
export interface HpkeContext {
  readonly keyScheduleContext: Uint8Array;
  readonly key: Uint8Array;
  readonly baseNonce: Uint8Array;
  readonly exporterSecret: Uint8Array;
}

/** psk_id_hash of mode_base (empty psk_id): the same for every message. */
const PSK_ID_HASH = labeledExtract(HPKE_SUITE_ID, new Uint8Array(0), 'psk_id_hash', new Uint8Array(0));
/**
 * key_schedule_context = mode || psk_id_hash || info_hash (§5.1) for mode_base by info (public
 * strings, a few per application: shares use one), computed once each. Never written to: callers
 * that hand it out copy it.
 */
const keyScheduleContexts = new Map<string, Uint8Array>();

function keyScheduleContextOf(info: Uint8Array): Uint8Array {
  const compute = (): Uint8Array => concatBytes(Uint8Array.of(MODE_BASE), PSK_ID_HASH, labeledExtract(HPKE_SUITE_ID, new Uint8Array(0), 'info_hash', info));
  if (info.length > 256) return compute();
  const key = String.fromCharCode(...info);
  let context = keyScheduleContexts.get(key);
  if (context === undefined) {
    if (keyScheduleContexts.size >= 64) keyScheduleContexts.clear();
    context = compute();
    keyScheduleContexts.set(key, context);
  }
  return context;
}

/** What single-shot Seal and Open use of the key schedule: the exporter secret is left out. */
type SealingContext = Pick<HpkeContext, 'keyScheduleContext' | 'key' | 'baseNonce'>;

/** KeySchedule for mode_base, empty psk and psk_id (§5.1), without the exporter secret. */
function sealingKeySchedule(sharedSecret: Uint8Array, info: Uint8Array): SealingContext {
  const empty = new Uint8Array(0);
  const keyScheduleContext = keyScheduleContextOf(info);
  // secret = LabeledExtract(shared_secret, "secret", psk), expanded to each output.
  const key = labeledHkdf(HPKE_SUITE_ID, sharedSecret, 'secret', empty, 'key', keyScheduleContext, N_K);
  const baseNonce = labeledHkdf(HPKE_SUITE_ID, sharedSecret, 'secret', empty, 'base_nonce', keyScheduleContext, N_N);
  return { keyScheduleContext, key, baseNonce };
}

/** KeySchedule for mode_base, empty psk and psk_id (§5.1). */
export function hpkeKeySchedule(sharedSecret: Uint8Array, info: Uint8Array): HpkeContext {
  const context = sealingKeySchedule(sharedSecret, info);
  const exporterSecret = labeledHkdf(HPKE_SUITE_ID, sharedSecret, 'secret', new Uint8Array(0), 'exp', context.keyScheduleContext, N_SECRET);
  // The caller's own copy of the context (the shared one is never written to).
  return { ...context, keyScheduleContext: Uint8Array.from(context.keyScheduleContext), exporterSecret };
}

/** ComputeNonce (§5.2): base_nonce XOR I2OSP(seq, Nn). */
export function hpkeNonce(baseNonce: Uint8Array, sequence: number): Uint8Array {
  if (!Number.isSafeInteger(sequence) || sequence < 0) throw new CryptoError('invalid_argument', 'sequence must be a safe integer >= 0');
  const nonce = Uint8Array.from(baseNonce);
  let seq = BigInt(sequence);
  for (let i = nonce.length - 1; i >= 0 && seq > 0n; i--) {
    nonce[i]! ^= Number(seq & 0xffn);
    seq >>= 8n;
  }
  return nonce;
}

/** Export (§5.3): LabeledExpand(exporter_secret, "sec", exporterContext, length). */
export function hpkeExport(context: HpkeContext, exporterContext: Uint8Array, length: number): Uint8Array {
  return labeledExpand(HPKE_SUITE_ID, context.exporterSecret, 'sec', exporterContext, length);
}

/** AES-128-GCM Seal (§5.2 with the AEAD of §7.3): ciphertext || 16-byte tag. */
export function aeadSeal(key: Uint8Array, nonce: Uint8Array, aad: Uint8Array, plaintext: Uint8Array): Uint8Array {
  const cipher = createCipheriv('aes-128-gcm', key, nonce, { authTagLength: HPKE_TAG_LENGTH });
  cipher.setAAD(aad);
  return concatBytes(cipher.update(plaintext), cipher.final(), cipher.getAuthTag());
}

/** AES-128-GCM Open; throws `CryptoError('invalid_ciphertext')` when authentication fails. */
export function aeadOpen(key: Uint8Array, nonce: Uint8Array, aad: Uint8Array, ciphertext: Uint8Array): Uint8Array {
  if (ciphertext.length < HPKE_TAG_LENGTH) throw new CryptoError('invalid_ciphertext', 'AEAD ciphertext shorter than its tag');
  const body = ciphertext.subarray(0, ciphertext.length - HPKE_TAG_LENGTH);
  const tag = ciphertext.subarray(ciphertext.length - HPKE_TAG_LENGTH);
  const decipher = createDecipheriv('aes-128-gcm', key, nonce, { authTagLength: HPKE_TAG_LENGTH });
  decipher.setAAD(aad);
  decipher.setAuthTag(tag);
  // The plaintext is returned in the buffer `update` wrote it to (GCM's `final` adds no bytes), so
  // that a caller who erases what it gets back erases the only copy; a copy made here would stay
  // in memory until the garbage collector reuses it. Refused: erased here.
  let head: Buffer | undefined;
  try {
    head = decipher.update(body);
    const tail = decipher.final();
    if (tail.length === 0) return new Uint8Array(head.buffer, head.byteOffset, head.byteLength); // a view: the same memory
    const whole = concatBytes(head, tail);
    head.fill(0);
    tail.fill(0);
    return whole;
  } catch (cause) {
    head?.fill(0);
    throw new CryptoError('invalid_ciphertext', 'HPKE ciphertext failed authentication', { cause });
  }
}

/** Options of {@link sealBase}. */
export interface SealBaseOptions {
  /** Source of the ephemeral key's 32 bytes of ikm (§7.1.3 DeriveKeyPair). Default: node:crypto's CSPRNG. */
  readonly random?: RandomBytes;
}

/**
 * Single-shot SealBase (§6.1): a fresh ephemeral key, then Seal at sequence 0. Returns
 * `enc (32 bytes) || ciphertext || tag`; the result is `plaintext.length + 48` bytes.
 */
export function sealBase(
  recipientPublicKey: Uint8Array,
  info: Uint8Array,
  aad: Uint8Array,
  plaintext: Uint8Array,
  options: SealBaseOptions = {},
): Uint8Array {
  const ikm = (options.random ?? secureRandomBytes)(32);
  const ephemeral = hpkeDeriveKeyPair(ikm);
  ikm.fill(0);
  const { sharedSecret, enc } = hpkeEncap(recipientPublicKey, ephemeral);
  ephemeral.privateKey.fill(0);
  const context = sealingKeySchedule(sharedSecret, info);
  sharedSecret.fill(0);
  const ciphertext = aeadSeal(context.key, hpkeNonce(context.baseNonce, 0), aad, plaintext);
  wipe(context);
  return concatBytes(enc, ciphertext);
}

/** Options of {@link openBase}. */
export interface OpenBaseOptions {
  /** The recipient's public key (pkRm), if the caller has it. Default: derived from the private key (costs one scalar multiplication). */
  readonly recipientPublicKey?: Uint8Array;
}

/**
 * Single-shot OpenBase (§6.1) of `enc || ciphertext || tag`. Throws
 * `CryptoError('invalid_ciphertext')` for a short input or failed authentication (wrong key,
 * info or aad, or tampered bytes).
 */
export function openBase(
  recipientPrivateKey: Uint8Array | X25519PrivateKey,
  info: Uint8Array,
  aad: Uint8Array,
  sealed: Uint8Array,
  options: OpenBaseOptions = {},
): Uint8Array {
  if (sealed.length < HPKE_ENC_LENGTH + HPKE_TAG_LENGTH) throw new CryptoError('invalid_ciphertext', 'HPKE sealed message too short');
  const enc = sealed.subarray(0, HPKE_ENC_LENGTH);
  let sharedSecret: Uint8Array;
  try {
    sharedSecret = hpkeDecap(
      enc,
      recipientPrivateKey,
      options.recipientPublicKey ?? (recipientPrivateKey instanceof Uint8Array ? x25519PublicKey(recipientPrivateKey) : recipientPrivateKey.publicKey),
    );
  } catch (cause) {
    throw new CryptoError('invalid_ciphertext', 'HPKE encapsulated key is invalid', { cause });
  }
  const context = sealingKeySchedule(sharedSecret, info);
  sharedSecret.fill(0);
  try {
    return aeadOpen(context.key, hpkeNonce(context.baseNonce, 0), aad, sealed.subarray(HPKE_ENC_LENGTH));
  } finally {
    wipe(context);
  }
}

function wipe(context: SealingContext): void {
  context.key.fill(0);
  context.baseNonce.fill(0);
}
