/**
 * `veil tls dev-ca`: a local certificate authority for development and tests —
 * a CA, a server certificate for localhost / 127.0.0.1 / ::1 (plus any names
 * given), optionally a client certificate for mutual TLS, server certificates
 * for custodians (`--custodian NAME`) and the coordinator's client certificate
 * towards them (`--coordinator-client`). X.509 v3
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
  /**
   * Custodians to issue server certificates for: each NAME gets `NAME.crt` / `NAME.key`, valid for
   * NAME, localhost, 127.0.0.1 and ::1 (address it as `grpcs://NAME:PORT` in the task descriptor).
   */
  custodianNames?: readonly string[];
  /** Also issue the coordinator's client certificate for custodians that require one (`coordinator-client.crt` / `.key`). */
  coordinatorClient?: boolean;
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
  /** Per custodian name: its certificate and key files. */
  custodians?: Array<{ name: string; certFile: string; keyFile: string }>;
  coordinatorClientCertFile?: string;
  coordinatorClientKeyFile?: string;
}

const NAME = /^[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?$/;

const pemKey = async (key: CryptoKey): Promise<string> => {
  const der = await webcrypto.subtle.exportKey('pkcs8', key);
  return x509.PemConverter.encode(der, 'PRIVATE KEY') + '\n';
};

const serial = (): string => Buffer.from(webcrypto.getRandomValues(new Uint8Array(16))).toString('hex').replace(/^[89a-f]/, '1');

/** Creates the CA, the server certificate and optionally a client certificate in `outDir`. */
export async function createDevCa(options: DevCaOptions): Promise<DevCaFiles> {
  const days = options.validityDays ?? 825;
  for (const name of options.custodianNames ?? []) {
    if (!NAME.test(name) && isIP(name) === 0) throw new RangeError(`custodian name ${JSON.stringify(name)} must be a DNS name or an IP address`);
  }
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
  const custodians = await Promise.all(
    [...new Set(options.custodianNames ?? [])].map(async (name) => {
      const custodianNames = [...new Set([name, 'localhost', '127.0.0.1', '::1'])];
      const alt: x509.JsonGeneralName[] = custodianNames.map((n) => (isIP(n) ? { type: 'ip', value: n } : { type: 'dns', value: n }));
      return { name, ...(await leaf(name, x509.ExtendedKeyUsage.serverAuth, alt)) };
    }),
  );
  const coordinatorClient = options.coordinatorClient === true ? await leaf('veil-coordinator', x509.ExtendedKeyUsage.clientAuth, []) : null;

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
  if (custodians.length > 0) files.custodians = [];
  for (const c of custodians) {
    const entry = { name: c.name, certFile: join(options.outDir, `${c.name}.crt`), keyFile: join(options.outDir, `${c.name}.key`) };
    await writeFile(entry.certFile, cert(c.cert), { mode: 0o644 });
    await writeFile(entry.keyFile, await pemKey(c.keys.privateKey), { mode: 0o600 });
    files.custodians!.push(entry);
  }
  if (coordinatorClient !== null) {
    files.coordinatorClientCertFile = join(options.outDir, 'coordinator-client.crt');
    files.coordinatorClientKeyFile = join(options.outDir, 'coordinator-client.key');
    await writeFile(files.coordinatorClientCertFile, cert(coordinatorClient.cert), { mode: 0o644 });
    await writeFile(files.coordinatorClientKeyFile, await pemKey(coordinatorClient.keys.privateKey), { mode: 0o600 });
  }
  return files;
}
