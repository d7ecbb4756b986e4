//! Secrets come from files, never from flags (`ps` would show them): one reader for the
//! server's secret files (flags and the notifications file's `urlFile`/`secretFile`) and the
//! CLI's `--token-file`.

use std::path::Path;

use anyhow::Context;

/// Read a secret from a file: the first line, trimmed. A missing, unreadable or empty file is
/// an error naming the file.
pub fn read_secret(path: &Path) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the secret file {}", path.display()))?;
    let secret = text.lines().next().unwrap_or("").trim().to_string();
    anyhow::ensure!(
        !secret.is_empty(),
        "the secret file {} is empty",
        path.display()
    );
    Ok(secret)
}
