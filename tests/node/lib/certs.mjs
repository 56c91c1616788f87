// Test certificates made per run with the openssl CLI (P-256 keys: quick to make): CAs, and
// leaves signed by them with the SANs a test needs. Files only; the caller removes `dir`.
import { execFileSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';

const keyArgs = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];

/** Makes certificates in `dir`; each returns the PEM files' paths `{ key, cert }`. */
export function certMaker(dir) {
  const openssl = (...args) => execFileSync('openssl', args, { stdio: 'ignore' });
  return {
    /** A self-signed CA named `name`. */
    ca(name) {
      const key = join(dir, `${name}.key`), cert = join(dir, `${name}.pem`);
      openssl('req', '-x509', ...keyArgs, '-keyout', key, '-out', cert, '-days', '1', '-subj', `/CN=${name}`);
      return { key, cert };
    },
    /** A leaf signed by `ca` with `san` in subjectAltName syntax ("DNS:x,IP:127.0.0.1", "URI:..."). */
    leaf(name, ca, san) {
      const key = join(dir, `${name}.key`), csr = join(dir, `${name}.csr`), cert = join(dir, `${name}.pem`);
      const ext = join(dir, `${name}.ext`);
      writeFileSync(ext, `subjectAltName=${san}\n`);
      openssl('req', '-new', ...keyArgs, '-keyout', key, '-out', csr, '-subj', `/CN=${name}`);
      openssl('x509', '-req', '-in', csr, '-CA', ca.cert, '-CAkey', ca.key, '-CAcreateserial', '-out', cert, '-days', '1',
        '-extfile', ext);
      return { key, cert };
    },
    /** A PEM CRL issued by `ca` revoking the leaves `revoked` (`{cert}` files); empty when none. */
    crl(name, ca, revoked = []) {
      const db = join(dir, `${name}.index`), cnf = join(dir, `${name}.cnf`), out = join(dir, `${name}.crl.pem`);
      writeFileSync(db, '');
      writeFileSync(join(dir, `${name}.crlnumber`), '01\n');
      writeFileSync(cnf, `[ca]\ndefault_ca = d\n[d]\ndatabase = ${db}\ncrlnumber = ${join(dir, `${name}.crlnumber`)}\n` +
        'default_md = sha256\ndefault_crl_days = 1\n');
      for (const leaf of revoked) openssl('ca', '-config', cnf, '-keyfile', ca.key, '-cert', ca.cert, '-revoke', leaf.cert);
      openssl('ca', '-config', cnf, '-keyfile', ca.key, '-cert', ca.cert, '-gencrl', '-out', out);
      return out;
    },
  };
}
