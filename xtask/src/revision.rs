//! Building another revision's services, for `cargo xtask bench --against <rev>`: resolved with
//! git, checked out in a temporary worktree, built in release mode into their own target
//! directory, and kept by commit under `<cache_dir>/<commit>/bin/` so the next A/B run against
//! the same commit reuses them. The harness's A/B engine (`harness::ab`) is handed the result.

use anyhow::Context as _;
use harness::ab::BaselineBuild;
use harness::ServiceBinaries;
use std::path::Path;

/// Build (or reuse) the services of `revision`.
pub fn build(
    root: &Path,
    revision: &str,
    cache_dir: &Path,
    seed_target_dir: Option<&Path>,
) -> anyhow::Result<BaselineBuild> {
    let commit = crate::git::resolve_commit(root, revision)?;
    let subject = crate::git::git(root, &["log", "-1", "--format=%s", &commit]).ok();
    let cache = cache_dir.join(&commit);
    let bin = cache.join("bin");
    let binaries = ServiceBinaries {
        dbservice: bin.join("rosey-dbservice"),
        bot: bin.join("rosey-bot"),
    };
    if binaries.dbservice.is_file() && binaries.bot.is_file() {
        eprintln!(
            "ab: reusing the build of {} from {}",
            &commit[..12],
            cache.display()
        );
        return Ok(BaselineBuild {
            commit,
            subject,
            binaries,
        });
    }
    let target = cache.join("target");
    if let Some(seed) = seed_target_dir {
        crate::cargo::seed_release_dir(seed, &target)?;
    }
    let worktree = crate::git::Worktree::add(root, &commit, &cache.join("src"))?;
    eprintln!(
        "ab: building rosey-dbservice and rosey-bot at {} (release)",
        &commit[..12]
    );
    let built = crate::cargo::build_services(worktree.path(), Some(&target))?;
    worktree.remove()?;
    std::fs::create_dir_all(&bin)?;
    std::fs::copy(&built.dbservice, &binaries.dbservice).context("keep rosey-dbservice")?;
    std::fs::copy(&built.bot, &binaries.bot).context("keep rosey-bot")?;
    Ok(BaselineBuild {
        commit,
        subject,
        binaries,
    })
}
