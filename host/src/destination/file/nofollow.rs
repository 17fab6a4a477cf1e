//! Opening files in a directory that someone else may also write to (a
//! plugin granted the same directory, another user): never through a symbolic
//! link, never into a file that has a second name (a hard link), never a FIFO
//! or device. A link planted under one of our names must not let a run
//! truncate, append to or publish a file outside the directory.
//!
//! Paths here are `dir/name` with `name` a single component, so only the last
//! component can be a planted link: that is what `O_NOFOLLOW` and
//! `O_CREAT | O_EXCL` refuse to follow.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;

/// Removes whatever `path` names, a link included (never what it points to),
/// then creates a new, empty regular file there. `O_EXCL` refuses to follow a
/// link that appears in between, so the file is always our own.
pub fn create_fresh(path: &Path) -> io::Result<File> {
    remove_if_present(path)?;
    OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o644)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
}

/// Opens `path` to read and append; it is created when `create`. A link, a
/// non-regular file or a file with other names is refused.
pub fn open_append(path: &Path, create: bool) -> io::Result<File> {
    let file = OpenOptions::new()
        .read(true)
        .append(true)
        .create(create)
        .mode(0o644)
        // O_NONBLOCK: opening a planted FIFO must fail, not wait for a reader.
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| explain(path, e))?;
    let meta = file.metadata()?;
    if !meta.file_type().is_file() {
        return Err(io::Error::other(format!(
            "{} is not a regular file; it is left alone",
            path.display()
        )));
    }
    if meta.nlink() > 1 {
        return Err(io::Error::other(format!(
            "{} has {} names (hard links); appending to it would change the others, so it is left alone",
            path.display(),
            meta.nlink()
        )));
    }
    Ok(file)
}

/// `path` is a regular file of ours: not a link, one name only.
pub fn is_own_file(path: &Path) -> io::Result<bool> {
    match std::fs::symlink_metadata(path) {
        Ok(m) => Ok(m.file_type().is_file() && m.nlink() == 1),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

/// The name `path` still names the file `file` has open: nobody swapped it
/// for something else while we wrote, so renaming it publishes our data.
pub fn still_names(path: &Path, file: &File) -> io::Result<bool> {
    let (ours, named) = (file.metadata()?, std::fs::symlink_metadata(path)?);
    Ok(named.file_type().is_file() && ours.dev() == named.dev() && ours.ino() == named.ino())
}

pub fn remove_if_present(path: &Path) -> io::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Makes a rename or an unlink in `dir` durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

fn explain(path: &Path, e: io::Error) -> io::Error {
    if e.raw_os_error() == Some(libc::ELOOP) {
        io::Error::other(format!(
            "{} is a symbolic link; the file destination does not write through links",
            path.display()
        ))
    } else {
        e
    }
}
