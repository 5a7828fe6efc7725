/**
 * `veil tls dev-ca`: a local certificate authority for development and tests —
 * a CA, a server certificate for localhost / 127.0.0.1 / ::1 (plus any names
 * given) and optionally a client certificate for mutual TLS. X.509 v3
 * (RFC 5280) built with @peculiar/x509 on Node's WebCrypto: ECDSA P-256 with
 * SHA-256, no `openssl` binary needed. Not for production: the CA key sits
 * next to the certificates it signed.
 */
import 'reflect-metadata';
import { webcrypto } from 'node:crypto';
import { isIP } from 'node:net';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import * as x509 from '@peculiar/x509';

x509.cryptoProvider.set(webcrypto as unknown as Parameters<typeof x509.cryptoProvider.set>[0]);

type CryptoKey = webcrypto.CryptoKey;
type CryptoKeyPair = webcrypto.CryptoKeyPair;

const ALG = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' } as const;

export interface DevCaOptions {
  /** Output directory (created; files are written 0600 for keys, 0644 for certificates). */
  outDir: string;
  /** Names of the server certificate besides `localhost`, `127.0.0.1` and `::1` (DNS names or IP addresses). Default none. */
  serverNames?: readonly string[];
  /** Also issue a client certificate (for VEIL_TLS_CLIENT_CA_FILE mutual TLS) with this common name. Default none. */
  clientName?: string;
  /** Validity of every certificate, days. Default 825. */
  validityDays?: number;
  /** Start of validity. Default now minus one hour (clock skew). */
  notBefore?: Date;
}

/** Paths of what {@link createDevCa} wrote. */
export interface DevCaFiles {
  caCertFile: string;
  caKeyFile: string;
  serverCertFile: string;
  serverKeyFile: string;
  clientCertFile?: string;
  clientKeyFile?: string;
}

const pemKey = async (key: CryptoKey): Promise<string> => {
  const der = await webcrypto.subtle.exportKey('pkcs8', key);
  return x509.PemConverter.encode(der, 'PRIVATE KEY') + '\n';
};

const serial = (): string => Buffer.from(webcrypto.getRandomValues(new Uint8Array(16))).toString('hex').replace(/^[89a-f]/, '1');

/** Creates the CA, the server certificate and optionally a client certificate in `outDir`. */
export async function createDevCa(options: DevCaOptions): Promise<DevCaFiles> {
  const days = options.validityDays ?? 825;
  if (!Number.isInteger(days) || days < 1 || days > 3650) throw new RangeError('validityDays must be an integer from 1 to 3650');
  const notBefore = options.notBefore ?? new Date(Date.now() - 3600_000);
  const notAfter = new Date(notBefore.getTime() + days * 86_400_000);
  const gen = (): Promise<CryptoKeyPair> => webcrypto.subtle.generateKey(ALG, true, ['sign', 'verify']) as Promise<CryptoKeyPair>;

  const caKeys = await gen();
  const ca = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: serial(),
    name: 'CN=Veil development CA, O=Veil',
    notBefore,
    notAfter,
    keys: caKeys,
    signingAlgorithm: ALG,
    extensions: [
      new x509.BasicConstraintsExtension(true, 0, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
      await x509.SubjectKeyIdentifierExtension.create(caKeys.publicKey),
    ],
  });

  const leaf = async (name: string, usage: string, altNames: x509.JsonGeneralName[]): Promise<{ cert: x509.X509Certificate; keys: CryptoKeyPair }> => {
    const keys = await gen();
    const cert = await x509.X509CertificateGenerator.create({
      serialNumber: serial(),
      subject: `CN=${name}`,
      issuer: ca.subject,
      notBefore,
      notAfter,
      publicKey: keys.publicKey,
      signingKey: caKeys.privateKey,
      signingAlgorithm: ALG,
      extensions: [
        new x509.BasicConstraintsExtension(false, undefined, true),
        new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
        new x509.ExtendedKeyUsageExtension([usage]),
        ...(altNames.length > 0 ? [new x509.SubjectAlternativeNameExtension(altNames)] : []),
        await x509.AuthorityKeyIdentifierExtension.create(caKeys.publicKey),
      ],
    });
    return { cert, keys };
  };

  const names = [...new Set(['localhost', '127.0.0.1', '::1', ...(options.serverNames ?? [])])];
  const altNames: x509.JsonGeneralName[] = names.map((n) => (isIP(n) ? { type: 'ip', value: n } : { type: 'dns', value: n }));
  const server = await leaf(names.find((n) => !isIP(n)) ?? 'localhost', x509.ExtendedKeyUsage.serverAuth, altNames);
  const client = options.clientName === undefined ? null : await leaf(options.clientName, x509.ExtendedKeyUsage.clientAuth, []);

  await mkdir(options.outDir, { recursive: true });
  const files: DevCaFiles = {
    caCertFile: join(options.outDir, 'ca.crt'),
    caKeyFile: join(options.outDir, 'ca.key'),
    serverCertFile: join(options.outDir, 'server.crt'),
    serverKeyFile: join(options.outDir, 'server.key'),
  };
  const cert = (c: x509.X509Certificate): string => c.toString('pem') + '\n';
  await writeFile(files.caCertFile, cert(ca), { mode: 0o644 });
  await writeFile(files.caKeyFile, await pemKey(caKeys.privateKey), { mode: 0o600 });
  // The server presents its chain: its certificate then the CA's.
  await writeFile(files.serverCertFile, cert(server.cert), { mode: 0o644 });
  await writeFile(files.serverKeyFile, await pemKey(server.keys.privateKey), { mode: 0o600 });
  if (client !== null) {
    files.clientCertFile = join(options.outDir, 'client.crt');
    files.clientKeyFile = join(options.outDir, 'client.key');
    await writeFile(files.clientCertFile, cert(client.cert), { mode: 0o644 });
    await writeFile(files.clientKeyFile, await pemKey(client.keys.privateKey), { mode: 0o600 });
  }
  return files;
}
