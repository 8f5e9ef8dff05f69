//! Writing output files whole: every file the harness writes for others to read (results.json,
//! interval logs, reports, the history, comparisons, exports) goes through [`write_atomic`] (or
//! [`write_atomic_with`], or [`write_atomic_new`] for the history's never-overwritten entries).
//!
//! The contents go to a temporary file in the target's own directory (same file system, so the
//! rename is atomic), are flushed to disk, and the file is renamed over the target. A reader
//! sees the old file or the new one, never half of either; a failed or interrupted write leaves
//! the old file as it was and no temporary file behind (it is removed on error, and its name
//! starts with `.` otherwise).

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

use anyhow::Context as _;

/// Replace `path` with `contents`, atomically.
pub fn write_atomic(path: &Path, contents: impl AsRef<[u8]>) -> anyhow::Result<()> {
    write_atomic_with(path, |w| Ok(w.write_all(contents.as_ref())?))
}

/// Replace `path` with what `write` writes, atomically: if `write` fails, `path` is untouched.
pub fn write_atomic_with(
    path: &Path,
    write: impl FnOnce(&mut BufWriter<File>) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let temp = write_temp(path, write)?;
    temp.persist(path)
        .map_err(|e| e.error)
        .with_context(|| format!("write {}", path.display()))?;
    Ok(())
}

/// Create `path` with `contents`, atomically, unless it exists: then the error's
/// [`std::io::ErrorKind`] (see [`std::io::Error`] in its chain) is `AlreadyExists` and the
/// existing file is untouched.
pub fn write_atomic_new(path: &Path, contents: impl AsRef<[u8]>) -> anyhow::Result<()> {
    let temp = write_temp(path, |w| Ok(w.write_all(contents.as_ref())?))?;
    temp.persist_noclobber(path)
        .map_err(|e| e.error)
        .with_context(|| format!("create {}", path.display()))?;
    Ok(())
}

/// The contents, written and synced to a temporary file next to `path`.
fn write_temp(
    path: &Path,
    write: impl FnOnce(&mut BufWriter<File>) -> anyhow::Result<()>,
) -> anyhow::Result<tempfile::NamedTempFile> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .with_context(|| format!("{} names no file", path.display()))?;
    // Like `fs::write`: 0666 less the umask (a NamedTempFile alone would be 0600).
    use std::os::unix::fs::PermissionsExt as _;
    let temp = tempfile::Builder::new()
        .prefix(&format!(".{}.", name.to_string_lossy()))
        .suffix(".tmp")
        .permissions(std::fs::Permissions::from_mode(0o666))
        .tempfile_in(dir)
        .with_context(|| format!("create a temporary file in {}", dir.display()))?;
    let (file, temp_path) = temp.into_parts();
    let mut out = BufWriter::new(file);
    let written = write(&mut out).and_then(|()| {
        let file = out.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        Ok(file)
    });
    match written {
        Ok(file) => Ok(tempfile::NamedTempFile::from_parts(file, temp_path)),
        // Dropping `temp_path` removes the temporary file.
        Err(e) => Err(e.context(format!("write {}", path.display()))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn replaces_whole_and_leaves_nothing_behind() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.json");
        write_atomic(&path, "one").unwrap();
        let mut old = File::open(&path).unwrap();
        write_atomic(&path, "two").unwrap();
        let mut s = String::new();
        std::io::Read::read_to_string(&mut old, &mut s).unwrap();
        assert_eq!(s, "one", "the old file is not rewritten in place");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "two");
        assert_eq!(names(dir.path()), ["r.json"]);
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_ne!(
            mode & 0o044,
            0,
            "readable by others like fs::write: {mode:o}"
        );
    }

    #[test]
    fn a_failed_write_keeps_the_old_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.json");
        write_atomic(&path, "old").unwrap();
        let e = write_atomic_with(&path, |w| {
            w.write_all(b"half")?;
            anyhow::bail!("disk full")
        })
        .unwrap_err();
        assert!(format!("{e:#}").contains("disk full"));
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "old");
        assert_eq!(names(dir.path()), ["r.json"]);
    }

    #[test]
    fn new_files_are_never_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("h.json");
        write_atomic_new(&path, "first").unwrap();
        let e = write_atomic_new(&path, "second").unwrap_err();
        let io = e.downcast_ref::<std::io::Error>().unwrap();
        assert_eq!(io.kind(), std::io::ErrorKind::AlreadyExists);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "first");
        assert_eq!(names(dir.path()), ["h.json"]);
    }
}
