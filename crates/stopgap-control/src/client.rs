//! A small blocking client for the admin API, used by the command line.
//!
//! One request per connection (`Connection: close`), JSON bodies; responses are read with the
//! project's own HTTP/1.1 codec. Plain HTTP only: the API listens on loopback by default.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use serde_json::Value;
use stopgap_proto::http1::{parse_response_head, BodyDecoder, Framing, Limits};

/// How long to wait for the gateway to accept the connection.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// How long to wait for an answer.
pub const READ_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest response body accepted.
pub const MAX_RESPONSE: usize = 16 * 1024 * 1024;

/// Why a call did not get an answer.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The address is not `http://HOST:PORT` or `HOST:PORT`.
    #[error("admin address `{0}` is not http://HOST:PORT")]
    BadAddress(String),
    /// Nobody answers there.
    #[error("cannot reach the admin API at {addr}: {error} (is `stopgap serve` running? pass --admin URL if it listens elsewhere)")]
    Connect {
        /// The address.
        addr: String,
        /// What failed.
        error: std::io::Error,
    },
    /// The connection broke.
    #[error("admin API at {addr}: {error}")]
    Io {
        /// The address.
        addr: String,
        /// What failed.
        error: std::io::Error,
    },
    /// The answer is not HTTP or not JSON.
    #[error("admin API at {addr} sent a malformed answer: {detail}")]
    Malformed {
        /// The address.
        addr: String,
        /// What was wrong.
        detail: String,
    },
}

/// An answer: status and JSON body.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    /// HTTP status.
    pub status: u16,
    /// The body (JSON, or a string for non-JSON bodies such as `/metrics`).
    pub body: Value,
}

impl Reply {
    /// The API's error message, for non-2xx answers.
    #[must_use]
    pub fn error_message(&self) -> String {
        let mut msg = self.body["error"]
            .as_str()
            .map_or_else(|| format!("HTTP {}", self.status), str::to_string);
        if let Some(errors) = self.body["errors"].as_array() {
            for e in errors.iter().filter_map(Value::as_str) {
                msg.push('\n');
                msg.push_str(e);
            }
        }
        msg
    }
}

/// A client for one gateway's admin API.
#[derive(Debug, Clone)]
pub struct AdminClient {
    addr: String,
    token: Option<String>,
}

impl AdminClient {
    /// A client for `url` (`http://HOST:PORT` or `HOST:PORT`).
    ///
    /// # Errors
    /// The address has a path, another scheme, or no port.
    pub fn new(url: &str, token: Option<String>) -> Result<Self, ClientError> {
        let rest = url.strip_prefix("http://").unwrap_or(url);
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.is_empty() || rest.contains('/') || rest.contains("://") || !rest.contains(':') {
            return Err(ClientError::BadAddress(url.to_string()));
        }
        Ok(Self {
            addr: rest.to_string(),
            token,
        })
    }

    /// `GET path`.
    ///
    /// # Errors
    /// See [`ClientError`].
    pub fn get(&self, path: &str) -> Result<Reply, ClientError> {
        self.call("GET", path, None)
    }

    /// `POST path` with a JSON body.
    ///
    /// # Errors
    /// See [`ClientError`].
    pub fn post(&self, path: &str, body: &Value) -> Result<Reply, ClientError> {
        self.call("POST", path, Some(body.to_string()))
    }

    fn call(&self, method: &str, path: &str, body: Option<String>) -> Result<Reply, ClientError> {
        let io = |error| ClientError::Io {
            addr: self.addr.clone(),
            error,
        };
        let mut stream = self.connect()?;
        stream.set_read_timeout(Some(READ_TIMEOUT)).map_err(io)?;
        let mut req = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nAccept: application/json\r\n",
            self.addr
        );
        if let Some(t) = &self.token {
            req.push_str(&format!("Authorization: Bearer {t}\r\n"));
        }
        let body = body.unwrap_or_default();
        if method == "POST" {
            req.push_str(&format!(
                "Content-Type: application/json\r\nContent-Length: {}\r\n",
                body.len()
            ));
        }
        req.push_str("\r\n");
        req.push_str(&body);
        stream.write_all(req.as_bytes()).map_err(io)?;
        self.read_reply(&mut stream)
    }

    fn connect(&self) -> Result<TcpStream, ClientError> {
        let err = |error| ClientError::Connect {
            addr: self.addr.clone(),
            error,
        };
        let addrs = self.addr.to_socket_addrs().map_err(err)?;
        let mut last = std::io::Error::other("no address");
        for a in addrs {
            match TcpStream::connect_timeout(&a, CONNECT_TIMEOUT) {
                Ok(s) => return Ok(s),
                Err(e) => last = e,
            }
        }
        Err(err(last))
    }

    fn read_reply(&self, stream: &mut TcpStream) -> Result<Reply, ClientError> {
        let malformed = |detail: String| ClientError::Malformed {
            addr: self.addr.clone(),
            detail,
        };
        let limits = Limits::default();
        let mut buf = Vec::new();
        let mut chunk = [0u8; 16 * 1024];
        let mut eof = false;
        loop {
            if let Some(head) =
                parse_response_head(&buf, &limits).map_err(|e| malformed(e.to_string()))?
            {
                if head.status >= 200 {
                    let framing = head.framing(false).map_err(|e| malformed(e.to_string()))?;
                    let mut decoder = BodyDecoder::new(framing, &limits);
                    let mut body = Vec::new();
                    let at = head.raw().len();
                    let mut progress = decoder
                        .decode(&buf[at..], |b| body.extend_from_slice(b))
                        .map_err(|e| malformed(e.to_string()))?;
                    if !progress.done && eof && matches!(framing, Framing::UntilClose) {
                        // A close-delimited body ends with the connection.
                        progress.done = true;
                    }
                    if progress.done {
                        let body = serde_json::from_slice(&body).unwrap_or_else(|_| {
                            Value::String(String::from_utf8_lossy(&body).into_owned())
                        });
                        return Ok(Reply {
                            status: head.status,
                            body,
                        });
                    }
                } else {
                    // An interim answer: drop it and read on.
                    buf.drain(..head.raw().len());
                    continue;
                }
            }
            if eof {
                return Err(malformed("the connection closed mid-answer".into()));
            }
            if buf.len() > MAX_RESPONSE {
                return Err(malformed("the answer is too large".into()));
            }
            match stream.read(&mut chunk) {
                Ok(0) => eof = true,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                Err(error) => {
                    return Err(ClientError::Io {
                        addr: self.addr.clone(),
                        error,
                    })
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses() {
        assert!(AdminClient::new("http://127.0.0.1:9190", None).is_ok());
        assert!(AdminClient::new("127.0.0.1:9190/", None).is_ok());
        assert!(AdminClient::new("localhost:9190", None).is_ok());
        for bad in [
            "https://127.0.0.1:9190",
            "http://127.0.0.1",
            "127.0.0.1:1/x",
            "",
        ] {
            assert!(AdminClient::new(bad, None).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_dead_address_is_a_clear_error() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let c = AdminClient::new(&format!("127.0.0.1:{port}"), None).unwrap();
        let e = c.get("/v1/health").unwrap_err();
        assert!(e.to_string().contains("is `stopgap serve` running?"), "{e}");
    }
}
