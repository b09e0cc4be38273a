//! What keepalived does to a configuration's lines before it reads keywords:
//! `include` (wildcards and brace expressions, relative to the including file's
//! directory), conditional lines (`@ID`, `@^ID`, against the config id) and parameters
//! (`$NAME=VALUE`, multiline with `\`, replaced as `$NAME` before whitespace or as
//! `${NAME}`, recursively, with keepalived's pre-defined `_PWD`, `_INSTANCE`, `_HASH`,
//! `_BANG` and `_ENV`), as keepalived.conf(5) describes them.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use super::{KeepalivedError, Place};

/// A line after preprocessing, and where it comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    /// The file it comes from (`None`: the file given).
    pub file: Option<String>,
    /// Its line number there, from 1.
    pub line: usize,
    /// The text, conditions taken, parameters replaced.
    pub text: String,
}

impl Line {
    /// Where it comes from.
    pub fn place(&self) -> Place {
        Place {
            file: self.file.clone(),
            line: self.line,
        }
    }
}

/// How deep includes and parameter replacements may nest (keepalived's own limits are
/// of this order; a loop ends here with an error).
const MAX_DEPTH: usize = 32;
/// The longest a line may grow by replacements, and the most lines a file may expand
/// to: a definition that doubles itself ends here, not in memory exhaustion.
const MAX_LINE: usize = 64 * 1024;
const MAX_LINES: usize = 1 << 20;

/// Reads files for `include`: the real file system, or a table in tests.
pub trait Files {
    /// The text of `path`.
    fn read(&self, path: &Path) -> std::io::Result<String>;
    /// The files `pattern` (an absolute path, wildcards in it) names, sorted.
    fn glob(&self, pattern: &str) -> Vec<PathBuf>;
}

/// The file system.
#[derive(Debug, Clone, Copy)]
pub struct Disk;

impl Files for Disk {
    fn read(&self, path: &Path) -> std::io::Result<String> {
        std::fs::read_to_string(path)
    }
    fn glob(&self, pattern: &str) -> Vec<PathBuf> {
        let mut out: Vec<PathBuf> = glob::glob(pattern)
            .map(|paths| paths.filter_map(Result::ok).collect())
            .unwrap_or_default();
        out.sort();
        out
    }
}

/// No file at all: every include names nothing (for text read on its own).
#[derive(Debug, Clone, Copy)]
pub struct Nowhere;

impl Files for Nowhere {
    fn read(&self, _: &Path) -> std::io::Result<String> {
        Err(std::io::ErrorKind::NotFound.into())
    }
    fn glob(&self, _: &str) -> Vec<PathBuf> {
        Vec::new()
    }
}

/// The preprocessor's state: the parameters defined so far, the config id, the lines out.
struct Pre<'a> {
    files: &'a dyn Files,
    config_id: &'a str,
    params: HashMap<String, String>,
    out: Vec<Line>,
    notes: Vec<String>,
}

/// Where a line is being read: its file (`None`: the one given), that file's directory,
/// its line number.
#[derive(Clone)]
struct From<'a> {
    file: Option<&'a str>,
    dir: &'a Path,
    line: usize,
}

impl From<'_> {
    fn place(&self) -> Place {
        Place {
            file: self.file.map(str::to_string),
            line: self.line,
        }
    }

    fn fail<T>(&self, message: impl Into<String>) -> Result<T, KeepalivedError> {
        Err(KeepalivedError {
            file: self.file.map(str::to_string),
            line: self.line,
            message: message.into(),
        })
    }
}

/// The lines of `text` (the file at `path`) as keepalived reads them on the host whose
/// config id is `config_id`, and notes for the log.
pub fn expand(
    path: &Path,
    text: &str,
    config_id: &str,
    files: &dyn Files,
) -> Result<(Vec<Line>, Vec<String>), KeepalivedError> {
    let mut pre = Pre {
        files,
        config_id,
        params: HashMap::new(),
        out: Vec::new(),
        notes: Vec::new(),
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    pre.file(text, None, dir, 0)?;
    Ok((pre.out, pre.notes))
}

impl Pre<'_> {
    fn file(
        &mut self,
        text: &str,
        file: Option<&str>,
        dir: &Path,
        depth: usize,
    ) -> Result<(), KeepalivedError> {
        let lines: Vec<&str> = text.lines().collect();
        let mut i = 0;
        while i < lines.len() {
            let at = From {
                file,
                dir,
                line: i + 1,
            };
            let raw = lines[i];
            i += 1;
            // A multiline definition: `$NAME=` and a value continued with `\`.
            if let Some((name, first)) = definition(raw) {
                if first.trim_end().ends_with('\\') {
                    let mut value = Vec::new();
                    let mut part = first;
                    loop {
                        let t = part.trim_end();
                        match t.strip_suffix('\\') {
                            Some(rest) => {
                                if !rest.trim().is_empty() {
                                    value.push(rest.trim_end().to_string());
                                }
                                let Some(next) = lines.get(i) else {
                                    return at.fail(format!(
                                        "${name}: the definition goes on ('\\') past the end of the file"
                                    ));
                                };
                                i += 1;
                                part = next;
                            }
                            None => {
                                if !t.trim().is_empty() {
                                    value.push(t.to_string());
                                }
                                break;
                            }
                        }
                    }
                    self.params.insert(name.to_string(), value.join("\n"));
                    continue;
                }
            }
            self.line(raw, &at, depth)?;
        }
        Ok(())
    }

    /// One line: its condition, a definition, replacements, an include, or text.
    fn line(&mut self, raw: &str, at: &From<'_>, depth: usize) -> Result<(), KeepalivedError> {
        if depth > MAX_DEPTH {
            return at.fail(format!(
                "includes or parameters nest more than {MAX_DEPTH} deep (a loop?)"
            ));
        }
        let Some(text) = condition(raw, self.config_id) else {
            return Ok(());
        };
        if let Some((name, value)) = definition(text) {
            self.params
                .insert(name.to_string(), value.trim_end().to_string());
            return Ok(());
        }
        let once = self.replace_once(text, at);
        if once.len() > MAX_LINE {
            return at.fail(format!(
                "parameters make this line longer than {MAX_LINE} bytes"
            ));
        }
        if once == text {
            return self.plain(text, at, depth);
        }
        // Replaced one level at a time, each resulting line read in turn: a parameter may
        // stand for lines, conditions and definitions of its own, and a definition among
        // them holds for the lines after it.
        for l in once.lines() {
            self.line(l, at, depth + 1)?;
        }
        Ok(())
    }

    /// A line with nothing left to replace: an include, or text for the parser.
    fn plain(&mut self, text: &str, at: &From<'_>, depth: usize) -> Result<(), KeepalivedError> {
        let trimmed = text.trim_start();
        if trimmed.starts_with("~SEQ") || trimmed.starts_with("~LST") {
            return at.fail(
                "keepalived's sequence and list blocks (~SEQ, ~LST) are not supported: write the lines out",
            );
        }
        let mut words = trimmed.split_whitespace();
        if let Some(
            kw @ ("include" | "includer" | "includem" | "includew" | "includeb" | "includef"),
        ) = words.next()
        {
            let pattern: Vec<&str> = words.collect();
            let [pattern] = pattern.as_slice() else {
                return at.fail(format!("{kw} takes one file name (wildcards allowed)"));
            };
            return self.include(pattern, at, depth);
        }
        if self.out.len() >= MAX_LINES {
            return at.fail(format!(
                "the configuration expands to more than {MAX_LINES} lines"
            ));
        }
        let Place { file, line } = at.place();
        self.out.push(Line {
            file,
            line,
            text: text.to_string(),
        });
        Ok(())
    }

    fn include(
        &mut self,
        pattern: &str,
        at: &From<'_>,
        depth: usize,
    ) -> Result<(), KeepalivedError> {
        // A plain name must exist; alternatives and wildcards take what there is.
        let literal = !pattern.contains(['*', '?', '[', '{']);
        let mut paths = Vec::new();
        let Some(names) = braces(pattern) else {
            return at.fail(format!(
                "include {pattern}: its brace expressions take more than {MAX_BRACE_STEPS} steps to expand (twelve {{a,b}} take 8191 for 4096 names): name the files with fewer alternatives or a wildcard"
            ));
        };
        for p in names {
            let p = normal(&at.dir.join(p));
            if literal {
                paths.push(p);
            } else {
                paths.extend(self.files.glob(&p.to_string_lossy()));
            }
        }
        if paths.is_empty() {
            self.notes.push(format!(
                "{}: include {pattern}: no file matches",
                at.place()
            ));
            return Ok(());
        }
        for path in paths {
            let text = match self.files.read(&path) {
                Ok(t) => t,
                Err(e) => {
                    return at.fail(format!(
                        "include {pattern}: reading {}: {e}",
                        path.display()
                    ))
                }
            };
            let name = path.display().to_string();
            let dir = path.parent().unwrap_or(Path::new(".")).to_path_buf();
            self.file(&text, Some(&name), &dir, depth + 1)?;
        }
        Ok(())
    }

    /// `s` with the parameters it names replaced once (undefined ones stay as they are).
    fn replace_once(&self, s: &str, at: &From<'_>) -> String {
        let mut out = String::with_capacity(s.len());
        let mut rest = s;
        while let Some(i) = rest.find('$') {
            out.push_str(&rest[..i]);
            let after = &rest[i + 1..];
            if let Some(inner) = after.strip_prefix('{') {
                if let Some(end) = inner.find('}') {
                    if let Some(v) = self.value(&inner[..end], at) {
                        out.push_str(&v);
                        rest = &inner[end + 1..];
                        continue;
                    }
                }
            } else {
                let end = after
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .unwrap_or(after.len());
                let followed = after[end..].chars().next().is_none_or(char::is_whitespace);
                if end > 0 && followed {
                    if let Some(v) = self.value(&after[..end], at) {
                        out.push_str(&v);
                        rest = &after[end..];
                        continue;
                    }
                }
            }
            out.push('$');
            rest = after;
        }
        out.push_str(rest);
        out
    }

    /// The value of parameter `name` (with its arguments, for `_ENV`), if defined.
    fn value(&self, name: &str, at: &From<'_>) -> Option<String> {
        let mut words = name.split_whitespace();
        let n = words.next()?;
        match n {
            "_PWD" => Some(at.dir.display().to_string()),
            "_INSTANCE" => Some(self.config_id.to_string()),
            "_HASH" => Some("#".into()),
            "_BANG" => Some("!".into()),
            "_ENV" => Some(std::env::var(words.next()?).unwrap_or_default()),
            _ => self.params.get(name).cloned(),
        }
    }
}

/// The line without its condition, if it applies to config id `id`: `@ID rest` applies
/// when ID is the config id, `@^ID rest` when it is not; other lines always apply.
fn condition<'a>(raw: &'a str, id: &str) -> Option<&'a str> {
    let t = raw.trim_start();
    let Some(cond) = t.strip_prefix('@') else {
        return Some(raw);
    };
    let end = cond.find(char::is_whitespace).unwrap_or(cond.len());
    let (word, rest) = cond.split_at(end);
    let applies = match word.strip_prefix('^') {
        Some(not) => not != id,
        None => word == id,
    };
    applies.then_some(rest)
}

/// `$NAME=VALUE` (only whitespace before the `$`, no space before the `=`): the name and
/// the value.
fn definition(raw: &str) -> Option<(&str, &str)> {
    let t = raw.trim_start().strip_prefix('$')?;
    let eq = t.find('=')?;
    let name = &t[..eq];
    let ok = !name.is_empty()
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    ok.then(|| (name, &t[eq + 1..]))
}

/// `p` with `.` and `..` taken out lexically (as the including file's directory is
/// where keepalived resolves a relative include from).
fn normal(p: &Path) -> PathBuf {
    use std::path::Component;
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    out.push("..");
                }
            }
            c => out.push(c),
        }
    }
    out
}

/// Steps a brace expression of an `include` may take to expand: one per name and one per
/// brace group expanded on the way (`n` groups of two alternatives take `2^(n+1) - 1`
/// for `2^n` names). Alternatives multiply fast (twenty `{a,b}` are a million names),
/// and the bound also bounds the recursion's depth.
const MAX_BRACE_STEPS: usize = 4096;

/// csh-style brace expansion: `a{b,c}d` is `abd`, `acd` (nested braces too); `None`
/// past [`MAX_BRACE_STEPS`].
fn braces(p: &str) -> Option<Vec<String>> {
    let mut out = Vec::new();
    let mut steps = MAX_BRACE_STEPS;
    expand_braces(p, &mut out, &mut steps).then_some(out)
}

/// Adds the expansion of `p` to `out`, one of `steps` taken per call; false once they
/// run out.
fn expand_braces(p: &str, out: &mut Vec<String>, steps: &mut usize) -> bool {
    let Some(left) = steps.checked_sub(1) else {
        return false;
    };
    *steps = left;
    let Some(open) = p.find('{') else {
        out.push(p.to_string());
        return true;
    };
    // The matching close, and the commas at this level.
    let mut depth = 0;
    let mut commas = Vec::new();
    let mut close = None;
    for (i, c) in p[open..].char_indices() {
        match c {
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    close = Some(open + i);
                    break;
                }
            }
            ',' if depth == 1 => commas.push(open + i),
            _ => {}
        }
    }
    let Some(close) = close else {
        out.push(p.to_string());
        return true;
    };
    let (head, tail) = (&p[..open], &p[close + 1..]);
    let mut cuts = vec![open];
    cuts.extend(&commas);
    cuts.push(close);
    cuts.windows(2).all(|w| {
        let alt = &p[w[0] + 1..w[1]];
        expand_braces(&format!("{head}{alt}{tail}"), out, steps)
    })
}

/// This host's config id as keepalived takes it by default: the node name up to its
/// first dot.
pub fn default_config_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .unwrap_or_default()
        .trim()
        .split('.')
        .next()
        .unwrap_or_default()
        .to_string()
}

#[cfg(test)]
mod tests;
