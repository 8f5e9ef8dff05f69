//! The few git operations xtask needs: resolving a revision, and a temporary worktree of
//! another revision (for `--against` builds) that is removed again however the caller leaves.

use anyhow::Context as _;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Run `git` in `root`; its trimmed stdout, or an error quoting its stderr.
pub fn git(root: &Path, args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new("git")
        .current_dir(root)
        .args(args)
        .output()
        .context("run git")?;
    anyhow::ensure!(
        out.status.success(),
        "git {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// The full commit id of `revision` (a branch, tag, `HEAD~2`, a short id …).
pub fn resolve_commit(root: &Path, revision: &str) -> anyhow::Result<String> {
    git(
        root,
        &["rev-parse", "--verify", &format!("{revision}^{{commit}}")],
    )
    .with_context(|| format!("resolve revision {revision:?}"))
}

/// A detached worktree of one commit at `path`, removed (with `git worktree prune`) on drop.
#[derive(Debug)]
pub struct Worktree {
    root: PathBuf,
    path: PathBuf,
}

impl Worktree {
    /// Check out `commit` at `path`, replacing whatever an interrupted earlier run left there.
    pub fn add(root: &Path, commit: &str, path: &Path) -> anyhow::Result<Worktree> {
        if path.exists() {
            let _ = git(
                root,
                &["worktree", "remove", "--force", &path.to_string_lossy()],
            );
            let _ = std::fs::remove_dir_all(path);
        }
        let _ = git(root, &["worktree", "prune"]);
        git(
            root,
            &[
                "worktree",
                "add",
                "--detach",
                &path.to_string_lossy(),
                commit,
            ],
        )
        .context("git worktree add")?;
        Ok(Worktree {
            root: root.to_owned(),
            path: path.to_owned(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Remove the worktree now, reporting a failure (dropping it ignores failures).
    pub fn remove(mut self) -> anyhow::Result<()> {
        let path = std::mem::take(&mut self.path);
        git(
            &self.root,
            &["worktree", "remove", "--force", &path.to_string_lossy()],
        )
        .context("git worktree remove")
        .map(drop)
    }
}

impl Drop for Worktree {
    fn drop(&mut self) {
        if self.path.as_os_str().is_empty() {
            return;
        }
        let _ = git(
            &self.root,
            &[
                "worktree",
                "remove",
                "--force",
                &self.path.to_string_lossy(),
            ],
        );
        let _ = std::fs::remove_dir_all(&self.path);
        let _ = git(&self.root, &["worktree", "prune"]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repo() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        git(root, &["init", "-q"]).unwrap();
        std::fs::write(root.join("a.txt"), "one\n").unwrap();
        git(root, &["add", "a.txt"]).unwrap();
        git(
            root,
            &[
                "-c",
                "user.name=t",
                "-c",
                "user.email=t@example.com",
                "commit",
                "-q",
                "-m",
                "first",
            ],
        )
        .unwrap();
        dir
    }

    #[test]
    fn a_worktree_holds_the_commit_and_is_removed_on_drop() {
        let repo = repo();
        let root = repo.path();
        let commit = resolve_commit(root, "HEAD").unwrap();
        assert_eq!(commit.len(), 40);
        let err = resolve_commit(root, "no-such-branch").unwrap_err();
        assert!(format!("{err:#}").contains("no-such-branch"), "{err:#}");

        std::fs::write(root.join("a.txt"), "changed in the working tree\n").unwrap();
        let path = root.join("wt");
        {
            let wt = Worktree::add(root, &commit, &path).unwrap();
            assert_eq!(
                std::fs::read_to_string(wt.path().join("a.txt")).unwrap(),
                "one\n"
            );
        }
        assert!(!path.exists(), "dropped: removed");
        assert!(!git(root, &["worktree", "list"]).unwrap().contains("wt"));

        // A leftover directory at the path is replaced.
        std::fs::create_dir_all(path.join("junk")).unwrap();
        let wt = Worktree::add(root, &commit, &path).unwrap();
        assert!(wt.path().join("a.txt").is_file());
        wt.remove().unwrap();
        assert!(!path.exists());
    }
}
