//! Reading inputs: files, directories (their `*.yaml`, `*.yml`, `*.json`,
//! sorted), and `-` for stdin. A file too large or unreadable is a
//! diagnostic, not a crash.

use std::io::Read;
use std::path::{Path, PathBuf};

use packlight_model::Diagnostic;
use packlight_model::source::MAX_INPUT_BYTES;

/// One input text and its name.
pub struct Text {
    /// The name shown in diagnostics (the path, or `-`).
    pub name: String,
    /// The content.
    pub text: String,
}

/// Reads every input; a failure is a diagnostic naming the file.
pub fn read_all(paths: &[PathBuf]) -> Result<Vec<Text>, Vec<Diagnostic>> {
    let mut files = Vec::new();
    let mut errors = Vec::new();
    for p in paths {
        if p.as_os_str() == "-" {
            files.push(p.clone());
        } else if p.is_dir() {
            match list_dir(p) {
                Ok(mut found) => {
                    if found.is_empty() {
                        errors.push(file_error(p, "directory has no .yaml, .yml or .json files"));
                    }
                    files.append(&mut found);
                }
                Err(e) => errors.push(file_error(p, &format!("cannot read directory: {e}"))),
            }
        } else {
            files.push(p.clone());
        }
    }
    let mut texts = Vec::new();
    for f in files {
        match read_one(&f) {
            Ok(t) => texts.push(t),
            Err(d) => errors.push(d),
        }
    }
    if errors.is_empty() {
        Ok(texts)
    } else {
        Err(errors)
    }
}

fn list_dir(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    entries.sort();
    for e in entries {
        if e.is_dir() {
            out.extend(list_dir(&e)?);
        } else if matches!(
            e.extension().and_then(|x| x.to_str()),
            Some("yaml" | "yml" | "json")
        ) {
            out.push(e);
        }
    }
    Ok(out)
}

fn file_error(p: &Path, msg: &str) -> Diagnostic {
    let mut d = Diagnostic::error(msg.to_string()).hint("check the path given with -f");
    d.file = Some(p.display().to_string());
    d
}

fn read_one(p: &Path) -> Result<Text, Diagnostic> {
    let name = p.display().to_string();
    let limit = MAX_INPUT_BYTES as u64 + 1;
    let mut bytes = Vec::new();
    let read = if name == "-" {
        std::io::stdin().take(limit).read_to_end(&mut bytes)
    } else {
        std::fs::File::open(p).and_then(|f| f.take(limit).read_to_end(&mut bytes))
    };
    if let Err(e) = read {
        return Err(file_error(p, &format!("cannot read: {e}")));
    }
    if bytes.len() > MAX_INPUT_BYTES {
        let mut d = Diagnostic::error(format!("file is larger than {MAX_INPUT_BYTES} bytes"))
            .hint("split it into several files");
        d.file = Some(name);
        return Err(d);
    }
    match String::from_utf8(bytes) {
        Ok(text) => Ok(Text { name, text }),
        Err(e) => {
            let mut d = Diagnostic::error(format!(
                "not UTF-8 text (invalid byte at offset {})",
                e.utf8_error().valid_up_to()
            ))
            .hint("save the file as UTF-8");
            d.file = Some(name);
            Err(d)
        }
    }
}
