/** Certificates for the TLS tests, made with openssl in a directory of the test. */
import assert from "node:assert/strict";

/** Runs openssl in `dir`; fails the test when it fails. */
export async function openssl(dir: string, ...args: string[]): Promise<void> {
  const r = await new Deno.Command("openssl", { args, cwd: dir, stdout: "null", stderr: "piped" }).output();
  assert.equal(r.code, 0, new TextDecoder().decode(r.stderr));
}

/** A self-signed CA in dir: `name`.pem and `name`.key. */
export async function makeCa(dir: string, name: string): Promise<void> {
  await openssl(
    dir,
    ...["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", `${name}.key`, "-out", `${name}.pem`],
    ...["-days", "2", "-subj", `/CN=${name}`],
  );
}

/** A leaf certificate `name`.pem / `name`.key signed by CA `ca`, with the given v3 extensions. */
export async function makeLeaf(dir: string, ca: string, name: string, cn: string, ext: string): Promise<void> {
  await Deno.writeTextFile(`${dir}/${name}.ext`, ext + "\n");
  await openssl(
    dir,
    ...["req", "-newkey", "rsa:2048", "-nodes", "-keyout", `${name}.key`, "-out", `${name}.csr`, "-subj", `/CN=${cn}`],
  );
  await openssl(
    dir,
    ...["x509", "-req", "-in", `${name}.csr`, "-CA", `${ca}.pem`, "-CAkey", `${ca}.key`, "-CAcreateserial"],
    ...["-out", `${name}.pem`, "-days", "2", "-extfile", `${name}.ext`],
  );
}

/**
 * A new temporary directory holding CA `ca` and two leaves it signed: `leaf` for localhost / 127.0.0.1 and `other` for
 * other.test (the second certificate of a multi-certificate HTTPS server). Returns the directory.
 */
export async function makeTwoLeafDir(prefix: string): Promise<string> {
  const dir = await Deno.makeTempDir({ prefix });
  await makeCa(dir, "ca");
  await makeLeaf(dir, "ca", "leaf", "localhost", "subjectAltName=DNS:localhost,IP:127.0.0.1");
  await makeLeaf(dir, "ca", "other", "other.test", "subjectAltName=DNS:other.test");
  return dir;
}
