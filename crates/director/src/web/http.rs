//! Just enough HTTP/1.1 for the status page: a request's head read and checked within
//! limits, and responses written whole (`Connection: close`), or as server-sent events.
//! Pure: bytes in, bytes out.

use std::collections::HashMap;

/// The largest request head taken.
pub const MAX_HEAD: usize = 8 * 1024;
/// The largest request body taken (an admin action's JSON).
pub const MAX_BODY: usize = 4 * 1024;

/// A request's head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    /// `GET`, `POST`...
    pub method: String,
    /// The path, without the query.
    pub path: String,
    /// The query's `name=value` pairs (not decoded beyond `+` and `%XX`).
    pub query: HashMap<String, String>,
    /// Header names in lower case, with their values.
    pub headers: HashMap<String, String>,
}

impl Head {
    /// A header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }

    /// The body's length (0 without `Content-Length`).
    pub fn content_length(&self) -> Result<usize, Status> {
        match self.header("content-length") {
            None => Ok(0),
            Some(v) => match v.trim().parse::<usize>() {
                Ok(n) if n <= MAX_BODY => Ok(n),
                Ok(_) => Err(Status::TooLarge),
                Err(_) => Err(Status::BadRequest),
            },
        }
    }
}

/// The statuses the status page answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// 200
    Ok,
    /// 400
    BadRequest,
    /// 403
    Forbidden,
    /// 404
    NotFound,
    /// 405
    MethodNotAllowed,
    /// 409: the director refused the change.
    Conflict,
    /// 413
    TooLarge,
    /// 415
    UnsupportedMediaType,
    /// 431
    HeadTooLarge,
    /// 503
    Unavailable,
}

impl Status {
    /// The code and its reason phrase.
    pub fn line(self) -> (u16, &'static str) {
        match self {
            Status::Ok => (200, "OK"),
            Status::BadRequest => (400, "Bad Request"),
            Status::Forbidden => (403, "Forbidden"),
            Status::NotFound => (404, "Not Found"),
            Status::MethodNotAllowed => (405, "Method Not Allowed"),
            Status::Conflict => (409, "Conflict"),
            Status::TooLarge => (413, "Content Too Large"),
            Status::UnsupportedMediaType => (415, "Unsupported Media Type"),
            Status::HeadTooLarge => (431, "Request Header Fields Too Large"),
            Status::Unavailable => (503, "Service Unavailable"),
        }
    }
}

/// Where the head ends in `buf` (just past its blank line), if it has arrived.
pub fn head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4)
}

/// Reads a request head (up to its blank line, which `buf` must hold).
pub fn parse_head(buf: &[u8]) -> Result<Head, Status> {
    let text = std::str::from_utf8(buf).map_err(|_| Status::BadRequest)?;
    let mut lines = text.split("\r\n");
    let first = lines.next().ok_or(Status::BadRequest)?;
    let mut parts = first.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(Status::BadRequest);
    };
    if !version.starts_with("HTTP/1.")
        || method.is_empty()
        || !method.bytes().all(|b| b.is_ascii_uppercase())
        || !target.starts_with('/')
    {
        return Err(Status::BadRequest);
    }
    let (path, q) = target.split_once('?').unwrap_or((target, ""));
    let query = q
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (decode(k), decode(v))
        })
        .collect();
    let mut headers = HashMap::new();
    for l in lines.take_while(|l| !l.is_empty()) {
        let (name, value) = l.split_once(':').ok_or(Status::BadRequest)?;
        if name.is_empty() || name.contains(' ') {
            return Err(Status::BadRequest);
        }
        headers.insert(name.to_ascii_lowercase(), value.trim().to_string());
    }
    Ok(Head {
        method: method.to_string(),
        path: decode(path),
        query,
        headers,
    })
}

/// `+` and `%XX` decoded (a bad escape stays as it is).
fn decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => match (hex(b[i + 1]), hex(b[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h << 4 | l);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex(c: u8) -> Option<u8> {
    (c as char).to_digit(16).map(|d| d as u8)
}

/// Headers every answer carries: nothing framed elsewhere, scripts and styles from
/// this origin only, no referrer, no sniffing.
const SAFE: &str = "X-Content-Type-Options: nosniff\r\nX-Frame-Options: DENY\r\nReferrer-Policy: no-referrer\r\nContent-Security-Policy: default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; form-action 'none'\r\nCache-Control: no-store\r\n";

/// A whole response.
pub fn response(status: Status, content_type: &str, body: &[u8]) -> Vec<u8> {
    let (code, reason) = status.line();
    let mut out = format!(
        "HTTP/1.1 {code} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n{SAFE}\r\n",
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body);
    out
}

/// A JSON error: `{"error": why}`.
pub fn error(status: Status, why: &str) -> Vec<u8> {
    let body = serde_json::json!({ "error": why }).to_string();
    response(status, "application/json", body.as_bytes())
}

/// The head of a stream of server-sent events.
pub fn event_stream_head() -> Vec<u8> {
    format!("HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n{SAFE}\r\n")
        .into_bytes()
}

/// One server-sent event carrying `data` (one line of JSON).
pub fn event(data: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + 8);
    out.extend_from_slice(b"data: ");
    out.extend_from_slice(data.as_bytes());
    out.extend_from_slice(b"\n\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_head_is_read_with_its_query_and_headers() {
        let raw = b"GET /api/v1/events?since=12&x=a%20b+c HTTP/1.1\r\nHost: 198.18.0.1:8080\r\nX-Xdpvs-Token: s3cret\r\n\r\n";
        assert_eq!(head_end(raw), Some(raw.len()));
        let h = parse_head(raw).expect("valid");
        assert_eq!(h.method, "GET");
        assert_eq!(h.path, "/api/v1/events");
        assert_eq!(h.query.get("since").map(String::as_str), Some("12"));
        assert_eq!(h.query.get("x").map(String::as_str), Some("a b c"));
        assert_eq!(h.header("x-xdpvs-token"), Some("s3cret"));
        assert_eq!(h.content_length(), Ok(0));
    }

    #[test]
    fn bad_heads_are_refused_never_a_panic() {
        for raw in [
            &b"GET\r\n\r\n"[..],
            b"GET / HTTP/1.1 extra\r\n\r\n",
            b"get / HTTP/1.1\r\n\r\n",
            b"GET nopath HTTP/1.1\r\n\r\n",
            b"GET / SPDY/3\r\n\r\n",
            b"GET / HTTP/1.1\r\nno colon\r\n\r\n",
            b"GET / HTTP/1.1\r\n: empty\r\n\r\n",
            b"\xff\xfe / HTTP/1.1\r\n\r\n",
        ] {
            assert_eq!(parse_head(raw), Err(Status::BadRequest), "{raw:?}");
        }
        let h = parse_head(b"POST /a HTTP/1.1\r\nContent-Length: 99999\r\n\r\n").expect("head");
        assert_eq!(h.content_length(), Err(Status::TooLarge));
        let h = parse_head(b"POST /a HTTP/1.1\r\nContent-Length: -1\r\n\r\n").expect("head");
        assert_eq!(h.content_length(), Err(Status::BadRequest));
        // Escapes at the end of a word.
        let h = parse_head(b"GET /a%2 HTTP/1.1\r\n\r\n").expect("head");
        assert_eq!(h.path, "/a%2");
        let h = parse_head(b"GET /a% HTTP/1.1\r\n\r\n").expect("head");
        assert_eq!(h.path, "/a%");
    }

    #[test]
    fn responses_carry_their_length_and_the_safe_headers() {
        let r = String::from_utf8(response(Status::NotFound, "text/plain", b"no")).expect("text");
        assert!(r.starts_with("HTTP/1.1 404 Not Found\r\n"), "{r}");
        assert!(r.contains("Content-Length: 2\r\n"), "{r}");
        assert!(r.contains("frame-ancestors 'none'"), "{r}");
        assert!(r.ends_with("\r\n\r\nno"), "{r}");
        assert_eq!(event("{}"), b"data: {}\n\n");
    }
}
