//! The krew archive and manifest scripts/krew-pack.sh writes: the real krew (built from the Go
//! module proxy by tests/control-plane/build-krew.sh) installs the archive from the manifest,
//! the installed `kubectl-routerpolicy` runs, and krew refuses the archive when the manifest's
//! checksum is not the archive's.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use sha2::{Digest, Sha256};

const BINARY: &str = env!("CARGO_BIN_EXE_routerpolicy");
const URL_BASE: &str = "https://downloads.example.org/routerpolicy/v0.1.0";

/// The krew command: `ROUTERPOLICY_KREW`, else built (once, cached under target/tools).
fn krew() -> PathBuf {
    support::tool("ROUTERPOLICY_KREW", "tests/control-plane/build-krew.sh")
}

fn scratch(name: &str) -> PathBuf {
    let dir = support::repo_root().join("target/tmp").join(format!("krew-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

fn pack(out: &Path, args: &[&str]) -> Output {
    Command::new("bash")
        .arg(support::repo_root().join("scripts/krew-pack.sh"))
        .args(["--out", out.to_str().expect("utf-8")])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("krew-pack.sh")
}

fn packed(out: &Path, binary: &str) -> (PathBuf, String) {
    let platform = format!("linux/amd64={binary}");
    let done = pack(out, &["--version", "v0.1.0", "--url-base", URL_BASE, &platform]);
    assert!(done.status.success(), "krew-pack.sh: {}", String::from_utf8_lossy(&done.stderr));
    let manifest = out.join("routerpolicy.yaml");
    let text = std::fs::read_to_string(&manifest).expect("the manifest");
    (manifest, text)
}

fn sha256_of(path: &Path) -> String {
    let bytes = std::fs::read(path).expect("read archive");
    Sha256::digest(&bytes).iter().map(|b| format!("{b:02x}")).collect()
}

fn krew_install(root: &Path, manifest: &Path, archive: &Path) -> Output {
    Command::new(krew())
        .arg("install")
        .arg(format!("--manifest={}", manifest.display()))
        .arg(format!("--archive={}", archive.display()))
        .env("KREW_ROOT", root)
        .env("KREW_NO_UPGRADE_CHECK", "1")
        .stdin(Stdio::null())
        .output()
        .expect("krew install")
}

#[test]
fn krew_installs_the_packed_binary_and_refuses_a_manifest_whose_checksum_is_not_the_archives() {
    let dir = scratch("install");
    let (manifest, text) = packed(&dir.join("dist"), BINARY);
    let archive = dir.join("dist/routerpolicy_v0.1.0_linux_amd64.tar.gz");
    let plugin: serde_json::Value = serde_norway::from_str(&text).expect("the manifest is YAML");
    let platform = &plugin["spec"]["platforms"][0];
    assert_eq!(plugin["kind"], "Plugin", "{text}");
    assert_eq!(plugin["metadata"]["name"], "routerpolicy", "{text}");
    assert_eq!(platform["sha256"], sha256_of(&archive), "the manifest's checksum is the archive's");
    assert_eq!(platform["uri"], format!("{URL_BASE}/routerpolicy_v0.1.0_linux_amd64.tar.gz"));

    let listing = Command::new("tar").arg("tzf").arg(&archive).output().expect("tar");
    assert_eq!(String::from_utf8_lossy(&listing.stdout), "LICENSE\nkubectl-routerpolicy\n");

    let root = dir.join("krew");
    let installed = krew_install(&root, &manifest, &archive);
    assert!(installed.status.success(), "krew install: {}", String::from_utf8_lossy(&installed.stderr));
    let plugin = root.join("bin/kubectl-routerpolicy");
    let version = Command::new(&plugin).arg("--version").output().expect("the installed plugin runs");
    assert!(String::from_utf8_lossy(&version.stdout).starts_with("routerpolicy "), "{version:?}");
    let example = support::repo_root().join("examples/minimal.yaml");
    let validated = Command::new(&plugin).args(["validate", "-f"]).arg(example).output().expect("validate");
    assert_eq!(validated.status.code(), Some(0), "{validated:?}");

    let forged = dir.join("forged.yaml");
    let real = platform["sha256"].as_str().expect("sha256");
    std::fs::write(&forged, text.replace(real, &"0".repeat(64))).expect("write forged manifest");
    let refused = krew_install(&dir.join("krew-forged"), &forged, &archive);
    assert!(!refused.status.success(), "krew installed an archive whose checksum does not match");
    assert!(!dir.join("krew-forged/bin/kubectl-routerpolicy").exists());
}

#[test]
fn the_archive_is_reproducible_and_the_script_invents_no_location() {
    let dir = scratch("reproducible");
    let tool = dir.join("tool");
    std::fs::write(&tool, "#!/bin/sh\necho tool\n").expect("write tool");
    let executable = std::os::unix::fs::PermissionsExt::from_mode(0o755);
    std::fs::set_permissions(&tool, executable).expect("chmod");
    let tool = tool.to_str().expect("utf-8");
    let (_, first) = packed(&dir.join("a"), tool);
    let (_, second) = packed(&dir.join("b"), tool);
    assert_eq!(first, second, "two packs of one binary differ");

    let platform = format!("linux/amd64={tool}");
    for (args, says) in [
        (vec!["--version", "v0.1.0", platform.as_str()], "--url-base is required"),
        (vec!["--url-base", URL_BASE, platform.as_str()], "--version is required"),
        (vec!["--version", "0.1.0", "--url-base", URL_BASE, platform.as_str()], "leading v"),
        (vec!["--version", "v0.1.0", "--url-base", URL_BASE, "linux-amd64"], "expected OS/ARCH=BINARY"),
        (vec!["--version", "v0.1.0", "--url-base", URL_BASE], "at least one OS/ARCH=BINARY"),
    ] {
        let out = pack(&dir.join("refused"), &args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(says), "{args:?}: {stderr}");
    }
    assert!(!dir.join("refused/routerpolicy.yaml").exists(), "a refused pack wrote a manifest");
}
