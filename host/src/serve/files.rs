//! `/v1/files`: what a tenant's pipelines wrote under its files directory
//! (a `file` destination's output, a plugin's writable grant), listed and
//! downloaded by the tenant. Paths are relative to that directory; `..`,
//! absolute paths and links are refused, so nothing outside it is reached
//! (a link there is neither followed nor listed).

use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Component, Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::{Body, Bytes};
use axum::extract::{Path as UrlPath, State as Extract};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use serde_json::{json, Value};
use tokio::io::{AsyncRead, ReadBuf};

use super::auth::TenantAuth;
use super::error::ApiError;
use super::state::State;

/// Entries a listing shows at most; it says when there were more.
const MAX_ENTRIES: usize = 10_000;
/// Bytes read at a time for a download.
const CHUNK: usize = 64 * 1024;

#[derive(Serialize)]
struct Entry {
    path: String,
    size: u64,
    /// Seconds since the Unix epoch.
    modified: u64,
}

/// `GET /v1/files`: every file under the tenant's files directory.
pub async fn list(Extract(_): Extract<Arc<State>>, TenantAuth(tenant): TenantAuth) -> Result<Json<Value>, ApiError> {
    let root = tenant.files.clone();
    let listing = tokio::task::spawn_blocking(move || listing(&root, &root))
        .await
        .map_err(ApiError::internal)?
        .map_err(ApiError::internal)?;
    Ok(Json(listing))
}

/// `GET /v1/files/{path}`: a file's bytes, or a directory's listing.
pub async fn get(
    Extract(_): Extract<Arc<State>>,
    UrlPath(path): UrlPath<String>,
    TenantAuth(tenant): TenantAuth,
) -> Result<Response, ApiError> {
    let asked = PathBuf::from(&path);
    if path.is_empty() || !asked.components().all(|c| matches!(c, Component::Normal(_))) {
        return Err(ApiError::invalid(format!(
            "files/{path}: give a path inside your files directory, without `..`"
        )));
    }
    let root = tenant.files.clone();
    let found = tokio::task::spawn_blocking(move || find(&root, &asked))
        .await
        .map_err(ApiError::internal)?;
    match found {
        Ok(Found::File(file, size)) => Ok((
            [
                (header::CONTENT_TYPE, "application/octet-stream".to_string()),
                (header::CONTENT_LENGTH, size.to_string()),
            ],
            Body::new(FileBody {
                file: tokio::fs::File::from_std(file),
                buf: vec![0; CHUNK],
            }),
        )
            .into_response()),
        Ok(Found::Dir(dir)) => {
            let root = tenant.files.clone();
            let listing = tokio::task::spawn_blocking(move || listing(&root, &dir))
                .await
                .map_err(ApiError::internal)?
                .map_err(ApiError::internal)?;
            Ok(Json(listing).into_response())
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Err(ApiError::not_found("file", &path)),
        Err(e) => Err(ApiError::invalid(format!("files/{path}: {e}"))),
    }
}

enum Found {
    File(std::fs::File, u64),
    Dir(PathBuf),
}

/// `asked` under `root`, every component a real directory or file (a link
/// answers as missing: it is not the tenant's to read through).
fn find(root: &Path, asked: &Path) -> io::Result<Found> {
    let mut at = root.to_path_buf();
    for part in asked.components() {
        at.push(part);
        let meta = std::fs::symlink_metadata(&at)?;
        if meta.file_type().is_symlink() {
            return Err(io::ErrorKind::NotFound.into());
        }
    }
    let meta = std::fs::symlink_metadata(&at)?;
    if meta.is_dir() {
        return Ok(Found::Dir(at));
    }
    if !meta.is_file() {
        return Err(io::ErrorKind::NotFound.into());
    }
    // O_NOFOLLOW: a link put there since is refused, not followed;
    // O_NONBLOCK: a FIFO put there does not hold the request.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(&at)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(io::ErrorKind::NotFound.into());
    }
    Ok(Found::File(file, meta.len()))
}

/// The files under `dir`, paths relative to `root`, links left out.
fn listing(root: &Path, dir: &Path) -> io::Result<Value> {
    let mut files = Vec::new();
    let mut truncated = false;
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let mut entries: Vec<_> = match std::fs::read_dir(&dir) {
            Ok(entries) => entries.flatten().collect(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        entries.sort_by_key(|e| e.file_name());
        for entry in entries {
            // The entry's own type: a link is a link, never its target.
            let Ok(kind) = entry.file_type() else { continue };
            if kind.is_dir() {
                pending.push(entry.path());
            } else if kind.is_file() {
                if files.len() == MAX_ENTRIES {
                    truncated = true;
                    break;
                }
                let Ok(meta) = entry.metadata() else { continue };
                let modified = meta
                    .modified()
                    .ok()
                    .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                    .map_or(0, |d| d.as_secs());
                let path = entry.path();
                files.push(Entry {
                    path: path.strip_prefix(root).unwrap_or(&path).display().to_string(),
                    size: meta.len(),
                    modified,
                });
            }
        }
    }
    files.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(json!({"files": files, "truncated": truncated}))
}

/// A file's bytes as a response body, read a chunk at a time.
struct FileBody {
    file: tokio::fs::File,
    buf: Vec<u8>,
}

impl http_body::Body for FileBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, io::Error>>> {
        let this = self.get_mut();
        let mut read = ReadBuf::new(&mut this.buf);
        match Pin::new(&mut this.file).poll_read(cx, &mut read) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Err(e)) => Poll::Ready(Some(Err(e))),
            Poll::Ready(Ok(())) if read.filled().is_empty() => Poll::Ready(None),
            Poll::Ready(Ok(())) => Poll::Ready(Some(Ok(http_body::Frame::data(Bytes::copy_from_slice(read.filled()))))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_are_neither_listed_nor_followed() {
        let root = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret"), "x").unwrap();
        std::fs::create_dir_all(root.path().join("out")).unwrap();
        std::fs::write(root.path().join("out/a.json"), "{}\n").unwrap();
        std::os::unix::fs::symlink(outside.path(), root.path().join("out/link")).unwrap();
        std::os::unix::fs::symlink(outside.path().join("secret"), root.path().join("s")).unwrap();
        let listed = listing(root.path(), root.path()).unwrap();
        assert_eq!(listed["files"].as_array().unwrap().len(), 1, "{listed}");
        assert_eq!(listed["files"][0]["path"], "out/a.json");
        assert!(matches!(
            find(root.path(), Path::new("out/a.json")),
            Ok(Found::File(_, 3))
        ));
        for through in ["s", "out/link/secret", "out/link"] {
            let err = find(root.path(), Path::new(through)).err().unwrap();
            assert_eq!(err.kind(), io::ErrorKind::NotFound, "{through}");
        }
    }
}
