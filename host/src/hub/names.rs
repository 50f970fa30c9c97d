//! Checks on repo ids, revisions and file names, made before any I/O: these strings
//! become URL and cache paths, so one that could escape the cache is refused here.

use super::HubError;

fn check_segment(kind: &str, whole: &str, segment: &str) -> Result<(), HubError> {
    let bad = |why: &str| Err(HubError::InvalidName(format!("{kind} {whole:?}: {why}")));
    if segment.is_empty() {
        return bad("empty path segment");
    }
    if segment == "." || segment == ".." {
        return bad("'.' and '..' are not allowed");
    }
    if segment.chars().any(|c| c.is_control() || c == '\\' || c == ':') {
        return bad("control characters, '\\' and ':' are not allowed");
    }
    Ok(())
}

/// A Hub repo id: `org/name`, each part of letters, digits, `-`, `_` and `.`.
pub fn check_repo_id(repo: &str) -> Result<(), HubError> {
    let parts: Vec<&str> = repo.split('/').collect();
    if parts.len() != 2 {
        return Err(HubError::InvalidName(format!("repo id {repo:?}: expected the form org/name")));
    }
    for part in parts {
        check_segment("repo id", repo, part)?;
        let allowed = part.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if !allowed || part.len() > 96 || part.starts_with(['-', '.']) || part.contains("--") || part.contains("..") {
            return Err(HubError::InvalidName(format!(
                "repo id {repo:?}: parts must be 1-96 letters, digits, '-', '_' or '.', not starting with '-' or '.', without '--' or '..'"
            )));
        }
    }
    Ok(())
}

/// A branch, tag or commit; may contain `/` (e.g. `refs/pr/1`), never `..`.
pub fn check_revision(revision: &str) -> Result<(), HubError> {
    if revision.len() > 256 {
        return Err(HubError::InvalidName(format!("revision {revision:?}: too long")));
    }
    for segment in revision.split('/') {
        check_segment("revision", revision, segment)?;
    }
    Ok(())
}

/// A file path inside a repo: relative, `/`-separated, no `.`/`..` segments.
pub fn check_file_name(file: &str) -> Result<(), HubError> {
    if file.starts_with('/') || file.len() > 1024 {
        return Err(HubError::InvalidName(format!("file name {file:?}: must be a relative path inside the repo")));
    }
    for segment in file.split('/') {
        check_segment("file name", file, segment)?;
    }
    Ok(())
}

/// True for a full 40-hex-digit commit id.
pub fn is_commit_id(revision: &str) -> bool {
    revision.len() == 40 && revision.chars().all(|c| c.is_ascii_hexdigit())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_real_names() {
        check_repo_id("sentence-transformers/all-MiniLM-L6-v2").unwrap();
        check_repo_id("stabilityai/stable-diffusion-3.5-large-turbo").unwrap();
        check_revision("main").unwrap();
        check_revision("refs/pr/12").unwrap();
        check_file_name("1_Pooling/config.json").unwrap();
        check_file_name("model-00001-of-00002.safetensors").unwrap();
    }

    #[test]
    fn rejects_traversal_and_odd_names() {
        for repo in ["../etc", "a/../b", "a/b/c", "a", "/a/b", "a/.b", "a/b--c", "a\\b/c", "a/b\0", ""] {
            assert!(check_repo_id(repo).is_err(), "{repo:?} must be rejected");
        }
        for file in ["../x", "a/../../x", "/etc/passwd", "a//b", "a\\..\\b", "", "./a", "c:evil", "a\nb"] {
            assert!(check_file_name(file).is_err(), "{file:?} must be rejected");
        }
        for revision in ["..", "a/../b", "", "main\n"] {
            assert!(check_revision(revision).is_err(), "{revision:?} must be rejected");
        }
    }
}
