//! Files a test makes before its daemon starts: copies, links and scripts in a private
//! directory, and their digests.

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A directory of files a test makes before its daemon starts (binaries, scripts).
/// Removed on drop.
pub struct TestDir {
    pub path: PathBuf,
}

impl TestDir {
    #[must_use]
    pub fn new(name: &str) -> Self {
        let path = std::env::temp_dir().join(format!("zt-test-files-{name}"));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("test dir");
        // Workloads run as nobody under `zt-agent run`.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
            .expect("chmod test dir");
        Self { path }
    }

    /// Copy `src` to NAME (a new file, mode kept), returning its path.
    #[must_use]
    pub fn copy(&self, src: &Path, name: &str) -> String {
        let dst = self.path.join(name);
        std::fs::copy(src, &dst).expect("copy");
        dst.display().to_string()
    }

    #[must_use]
    pub fn hardlink(&self, src: &str, name: &str) -> String {
        let dst = self.path.join(name);
        std::fs::hard_link(src, &dst).expect("hardlink");
        dst.display().to_string()
    }

    #[must_use]
    pub fn symlink(&self, src: &str, name: &str) -> String {
        let dst = self.path.join(name);
        std::os::unix::fs::symlink(src, &dst).expect("symlink");
        dst.display().to_string()
    }

    /// An executable script NAME with `text`.
    #[must_use]
    pub fn script(&self, name: &str, text: &str) -> String {
        let dst = self.path.join(name);
        std::fs::write(&dst, text).expect("script");
        std::fs::set_permissions(&dst, std::fs::Permissions::from_mode(0o755))
            .expect("chmod script");
        dst.display().to_string()
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// sha256 of a file, as `sha256sum` prints it.
#[must_use]
pub fn sha256_of(path: &str) -> String {
    let out = Command::new("sha256sum")
        .arg(path)
        .output()
        .expect("sha256sum");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .expect("digest")
        .to_owned()
}
