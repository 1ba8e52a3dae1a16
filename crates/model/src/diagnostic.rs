//! The one diagnostic type, the same data everywhere: CLI, status message,
//! admission denial, standalone API and console.

use std::fmt;

use serde::{Deserialize, Serialize};

/// How bad a diagnostic is.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// The resource is rejected.
    Error,
    /// The resource is accepted; something deserves a look.
    Warning,
}

/// Why a resource was rejected: its own content, or a clash with another.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default,
)]
pub enum Reason {
    /// The resource itself is wrong (`Accepted=False, reason Invalid`).
    #[default]
    Invalid,
    /// The resource clashes with another (`Accepted=False, reason Conflict`).
    Conflict,
}

/// One finding about the input: `file:line:column: Kind ns/name: field: message`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[serde(rename_all = "camelCase")]
pub struct Diagnostic {
    /// Error or warning.
    pub severity: Severity,
    /// The input file (`-` for stdin), when the input came from a file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    /// 1-based line, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line: Option<u32>,
    /// 1-based column, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub column: Option<u32>,
    /// The resource kind, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// The resource namespace, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// The resource name, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The field path, e.g. `spec.rules[2].weight`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field_path: Option<String>,
    /// What is wrong.
    pub message: String,
    /// What to do about it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
    /// Invalid or Conflict (errors only).
    #[serde(default, skip_serializing_if = "is_invalid")]
    pub reason: Reason,
}

fn is_invalid(r: &Reason) -> bool {
    *r == Reason::Invalid
}

impl Diagnostic {
    /// An error with a message and nothing else yet.
    pub fn error(message: impl Into<String>) -> Self {
        Diagnostic {
            severity: Severity::Error,
            file: None,
            line: None,
            column: None,
            kind: None,
            namespace: None,
            name: None,
            field_path: None,
            message: message.into(),
            hint: None,
            reason: Reason::Invalid,
        }
    }

    /// A warning with a message and nothing else yet.
    pub fn warning(message: impl Into<String>) -> Self {
        Diagnostic {
            severity: Severity::Warning,
            ..Diagnostic::error(message)
        }
    }

    /// Names the resource.
    pub fn on(mut self, r: &ResourceId) -> Self {
        self.kind = Some(r.kind.clone());
        self.namespace = Some(r.namespace.clone());
        self.name = Some(r.name.clone());
        self
    }

    /// Names the field.
    pub fn at(mut self, field_path: impl Into<String>) -> Self {
        self.field_path = Some(field_path.into());
        self
    }

    /// Says what to do.
    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    /// Marks a clash with another resource.
    pub fn conflict(mut self) -> Self {
        self.reason = Reason::Conflict;
        self
    }

    /// True for errors.
    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

impl fmt::Display for Diagnostic {
    /// `file:line:column: Kind ns/name: field: message (hint)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(file) = &self.file {
            write!(f, "{file}:")?;
            if let Some(line) = self.line {
                write!(f, "{line}:{}:", self.column.unwrap_or(1))?;
            }
            f.write_str(" ")?;
        }
        if self.severity == Severity::Warning {
            f.write_str("warning: ")?;
        }
        if let Some(kind) = &self.kind {
            write!(f, "{kind} ")?;
            match (&self.namespace, &self.name) {
                (Some(ns), Some(n)) => write!(f, "{ns}/{n}: ")?,
                (None, Some(n)) => write!(f, "{n}: ")?,
                _ => f.write_str(": ")?,
            }
        }
        if let Some(path) = &self.field_path {
            write!(f, "{path}: ")?;
        }
        f.write_str(&self.message)?;
        if let Some(hint) = &self.hint {
            write!(f, " ({hint})")?;
        }
        Ok(())
    }
}

/// Names one resource: kind, namespace, name.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ResourceId {
    /// `Route`, `Microservice`, ...
    pub kind: String,
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
}

impl fmt::Display for ResourceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}/{}", self.kind, self.namespace, self.name)
    }
}
