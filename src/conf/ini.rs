//! Line parser for oslo.config-style INI text (after `oslo_config/iniparser.py`).
//!
//! Rules, per line (1-based line numbers in every error):
//! - trailing whitespace is ignored; a blank line ends a multi-line value;
//! - `#` or `;` after optional leading whitespace starts a comment line, which also ends
//!   a multi-line value (oslo only knows column-0 comments and would append an indented
//!   `# ...` to the value above it);
//! - `[name]` starts a section; the name is trimmed and must not be empty;
//! - a line indented with spaces or tabs right after a key line (or its continuation)
//!   is appended to that value with `"\n"`; anywhere else it is an error, as in oslo;
//! - otherwise the line is `key = value` or `key: value`, split at the first `=` or `:`;
//!   key and value are trimmed, and one pair of matching quotes around the value is
//!   removed, as in oslo.

use super::ConfError;

/// One `key = value` assignment, in file order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Assignment {
    pub section: String,
    pub key: String,
    pub value: String,
    /// 1-based line of the key.
    pub line: usize,
}

/// Parses `text`; `name` is the file name used in error messages.
pub(super) fn parse(name: &str, text: &str) -> Result<Vec<Assignment>, ConfError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut out: Vec<Assignment> = Vec::new();
    let mut section: Option<&str> = None;
    // True while the previous line was a key line or one of its continuations.
    let mut in_value = false;

    for (index, raw) in text.lines().enumerate() {
        let lineno = index + 1;
        let error = |msg: String| ConfError::Syntax {
            file: name.to_string(),
            line: lineno,
            msg,
        };
        let line = raw.trim_end();
        let content = line.trim_start();

        if content.is_empty() || content.starts_with(['#', ';']) {
            in_value = false;
            continue;
        }
        if line.starts_with([' ', '\t']) {
            match out.last_mut() {
                Some(last) if in_value => {
                    last.value.push('\n');
                    last.value.push_str(content);
                    continue;
                }
                _ => {
                    return Err(error(format!(
                        "unexpected continuation line {content:?} \
                         (an indented line must follow a \"key = value\" line)"
                    )));
                }
            }
        }
        in_value = false;

        if let Some(rest) = line.strip_prefix('[') {
            let Some(header) = rest.strip_suffix(']') else {
                return Err(error(format!(
                    "expected \"]\" at the end of the section header, found {line:?}"
                )));
            };
            let header = header.trim();
            if header.is_empty() {
                return Err(error(format!("empty section name in {line:?}")));
            }
            section = Some(header);
            continue;
        }

        let Some((key, value)) = split_key_value(line) else {
            return Err(error(format!("expected \"key = value\", found {line:?}")));
        };
        if key.is_empty() {
            return Err(error(format!("empty key in {line:?}")));
        }
        let Some(section) = section else {
            return Err(error(format!(
                "key {key:?} comes before any section header (put it under [DEFAULT])"
            )));
        };
        out.push(Assignment {
            section: section.to_string(),
            key: key.to_string(),
            value: value.to_string(),
            line: lineno,
        });
        in_value = true;
    }
    Ok(out)
}

/// Splits at the first `=` or `:`; trims both sides and removes matching outer quotes.
fn split_key_value(line: &str) -> Option<(&str, &str)> {
    let at = line.find(['=', ':'])?;
    let key = line[..at].trim();
    let value = line[at + 1..].trim();
    for quote in ['"', '\''] {
        if value.len() >= 2 && value.starts_with(quote) && value.ends_with(quote) {
            return Some((key, &value[1..value.len() - 1]));
        }
    }
    Some((key, value))
}
