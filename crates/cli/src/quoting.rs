//! Words of a restore line: ipvsadm's are split on whitespace; xdpvs's own options may
//! hold spaces (a command, a check's regular expression) and are quoted.

/// The words of a restore line: split on whitespace, except inside double quotes (which
/// xdpvs -S writes around a command or check with spaces; ipvsadm never writes any);
/// `\"` and `\\` inside quotes are a quote and a backslash.
pub fn restore_words(line: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut chars = line.chars().peekable();
    while let Some(&c) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
            continue;
        }
        let mut w = String::new();
        while let Some(&c) = chars.peek() {
            if c.is_whitespace() {
                break;
            }
            chars.next();
            if c != '"' {
                w.push(c);
                continue;
            }
            loop {
                match chars.next() {
                    None => return Err("a quoted word is not closed on its line".into()),
                    Some('"') => break,
                    Some('\\') => match chars.next() {
                        Some(e @ ('"' | '\\')) => w.push(e),
                        Some(e) => {
                            w.push('\\');
                            w.push(e);
                        }
                        None => return Err("a quoted word is not closed on its line".into()),
                    },
                    Some(e) => w.push(e),
                }
            }
        }
        out.push(w);
    }
    Ok(out)
}

/// A word as [`restore_words`] reads it back: quoted if it has spaces or quotes.
pub fn restore_quote(w: &str) -> String {
    if !w.is_empty() && !w.contains(|c: char| c.is_whitespace() || c == '"' || c == '\\') {
        return w.to_string();
    }
    format!("\"{}\"", w.replace('\\', "\\\\").replace('"', "\\\""))
}
