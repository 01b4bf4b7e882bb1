//! Certificates for the TLS tests and the benchmark, made with openssl as cert-manager would
//! issue them: a self-signed CA, and leaves for `localhost` and 127.0.0.1 signed by it.

use std::path::{Path, PathBuf};

fn openssl(dir: &Path, args: &[&str]) {
    let out = std::process::Command::new("openssl").args(args).current_dir(dir).output().expect("openssl runs");
    assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// `openssl req` arguments for a new P-256 key written to `key`, its request (or certificate)
/// to `out`, for `subject`.
fn new_key<'a>(key: &'a str, out: &'a str, subject: &'a str) -> [&'a str; 11] {
    ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", key, "-out", out, "-subj", subject]
}

/// A self-signed CA `<name>.crt` / `<name>.key` in `dir`.
pub fn ca(dir: &Path, name: &str) -> PathBuf {
    let (key, crt, subject) = (format!("{name}.key"), format!("{name}.crt"), format!("/CN={name}"));
    openssl(dir, &[&["req", "-x509"], &new_key(&key, &crt, &subject)[..], &["-days", "2"]].concat());
    dir.join(crt)
}

/// A leaf `<name>.crt` / `<name>.key` for `localhost` and 127.0.0.1 signed by CA `ca`.
pub fn leaf(dir: &Path, ca: &str, name: &str) -> (PathBuf, PathBuf) {
    let ext = format!("{name}.ext");
    std::fs::write(dir.join(&ext), "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n")
        .expect("extensions");
    let (key, csr, crt, subject) =
        (format!("{name}.key"), format!("{name}.csr"), format!("{name}.crt"), format!("/CN={name}"));
    openssl(dir, &[&["req"], &new_key(&key, &csr, &subject)[..]].concat());
    let (ca_crt, ca_key) = (format!("{ca}.crt"), format!("{ca}.key"));
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            &ca_crt,
            "-CAkey",
            &ca_key,
            "-CAcreateserial",
            "-out",
            &crt,
            "-days",
            "2",
            "-extfile",
            &ext,
        ],
    );
    (dir.join(crt), dir.join(key))
}

/// A CA `ca.crt` and a leaf `server.crt` / `server.key` it signed, in `dir`: (CA, cert, key).
pub fn pair(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let ca = ca(dir, "ca");
    let (cert, key) = leaf(dir, "ca", "server");
    (ca, cert, key)
}
