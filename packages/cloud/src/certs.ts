/** Per-run TLS material for the local cloud: a throwaway CA and a server certificate it signs. */
import { generate } from 'selfsigned';

/** PEM strings of the emulator's CA and server certificate. */
export interface CloudCertificates {
  /** CA certificate (PEM): what devices must trust. */
  ca: string;
  /** Server certificate (PEM), SAN: DNS localhost, IP 127.0.0.1 and ::1. */
  cert: string;
  /** Server private key (PEM). */
  key: string;
}

/** Generates a CA and a server certificate valid for localhost (EC P-256, SHA-256, valid 2 days). */
export async function generateCertificates(): Promise<CloudCertificates> {
  const notBeforeDate = new Date(Date.now() - 60 * 60 * 1000);
  const notAfterDate = new Date(Date.now() + 2 * 24 * 60 * 60 * 1000);
  const ca = await generate([{ name: 'commonName', value: 'hubstate local cloud CA' }], {
    keyType: 'ec',
    curve: 'P-256',
    algorithm: 'sha256',
    notBeforeDate,
    notAfterDate,
    extensions: [
      { name: 'basicConstraints', cA: true, critical: true },
      { name: 'keyUsage', keyCertSign: true, cRLSign: true, digitalSignature: true, critical: true },
    ],
  });
  const server = await generate([{ name: 'commonName', value: 'localhost' }], {
    keyType: 'ec',
    curve: 'P-256',
    algorithm: 'sha256',
    notBeforeDate,
    notAfterDate,
    ca: { key: ca.private, cert: ca.cert },
    extensions: [
      { name: 'basicConstraints', cA: false },
      { name: 'keyUsage', digitalSignature: true, keyEncipherment: true, critical: true },
      { name: 'extKeyUsage', serverAuth: true },
      {
        name: 'subjectAltName',
        altNames: [
          { type: 2, value: 'localhost' },
          { type: 7, ip: '127.0.0.1' },
          { type: 7, ip: '::1' },
        ],
      },
    ],
  });
  return { ca: ca.cert, cert: server.cert, key: server.private };
}
