//! The client subcommands' HTTP client: one JSON request to the server's API, with the
//! server's address and token from the flags or the environment, errors a person can act on,
//! and retries only where a second request is harmless.

use std::time::Duration;

use serde_json::Value;

/// How long one request may take (a long poll asks for at most 60 s).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(75);
/// Most attempts of a request that may be retried (a 503, or a connection refused).
const ATTEMPTS: u32 = 6;
/// The wait before a retry when the server names none.
const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(1);
/// The longest wait before a retry, whatever the server says.
const MOST_RETRY_AFTER: Duration = Duration::from_secs(10);

/// Why a request did not give an answer to print.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// What the command was given cannot be sent (a flag that is not JSON, say).
    #[error("{0}")]
    Input(String),
    /// The server could not be reached (refused, no route, timed out).
    #[error("cannot reach jobyard at {base}: {reason} (is it running? the address comes from --url or JOBYARD_URL)")]
    Unreachable {
        /// Where it was asked.
        base: String,
        /// What the connection said.
        reason: String,
    },
    /// The server answered with an error body.
    #[error("{status} {code}: {message}{hint}")]
    Api {
        /// The HTTP status.
        status: u16,
        /// The error's code (`not_found`, `already_finished`...).
        code: String,
        /// The error's message.
        message: String,
        /// What the person might do about it (starts with a separator, or is empty).
        hint: String,
    },
    /// The answer was not what the API sends.
    #[error("unexpected answer from {url}: {reason}")]
    Malformed {
        /// What was asked.
        url: String,
        /// What was wrong with the answer.
        reason: String,
    },
}

impl ClientError {
    /// The exit status it ends the command with: 2 for bad input, 1 otherwise.
    pub fn exit_code(&self) -> u8 {
        match self {
            ClientError::Input(_) => 2,
            _ => 1,
        }
    }
}

/// What a request may do again when it fails in passing.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// Never: a second request could do twice what the first did.
    Never,
    /// After a 503 or a refused connection, waiting as long as the server asks (`Retry-After`):
    /// reads, and writes that a second time leaves as the first (a submit carrying an
    /// idempotency key).
    WhenUnavailable,
}

/// A small JSON client of the server's API.
pub struct HttpClient {
    base: String,
    token: Option<String>,
    http: awc::Client,
}

impl HttpClient {
    /// A client of the server at `base` (`http://host:port`), sending `token` when given.
    pub fn new(base: &str, token: Option<String>) -> Self {
        HttpClient {
            base: base.trim_end_matches('/').to_owned(),
            token,
            http: awc::Client::builder().timeout(REQUEST_TIMEOUT).finish(),
        }
    }

    /// Sends `method path` with a JSON `body`, answering the JSON the server sent back (`null`
    /// for an empty answer such as a 204).
    pub async fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
        retry: Retry,
    ) -> Result<Value, ClientError> {
        let body = body.map(|b| ("application/json", serde_json::to_vec(b).unwrap_or_default()));
        let (_, bytes) = self.send(method, path, body, retry).await?;
        if bytes.is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_slice(&bytes).map_err(|err| ClientError::Malformed {
            url: format!("{}{path}", self.base),
            reason: format!("not JSON: {err}"),
        })
    }

    /// Sends a raw body (`(content type, bytes)`), answering the content type and the bytes.
    pub async fn send(
        &self,
        method: &str,
        path: &str,
        body: Option<(&str, Vec<u8>)>,
        retry: Retry,
    ) -> Result<(String, Vec<u8>), ClientError> {
        let mut attempt = 1;
        loop {
            match self.send_once(method, path, body.as_ref()).await {
                Err(Failure::Retryable(wait, _))
                    if retry == Retry::WhenUnavailable && attempt < ATTEMPTS =>
                {
                    attempt += 1;
                    tokio::time::sleep(wait).await;
                }
                Err(Failure::Retryable(_, err) | Failure::Final(err)) => return Err(err),
                Ok(answer) => return Ok(answer),
            }
        }
    }

    async fn send_once(
        &self,
        method: &str,
        path: &str,
        body: Option<&(&str, Vec<u8>)>,
    ) -> Result<(String, Vec<u8>), Failure> {
        let url = format!("{}{path}", self.base);
        let method = awc::http::Method::from_bytes(method.as_bytes()).map_err(|err| {
            Failure::Final(ClientError::Malformed { url: url.clone(), reason: err.to_string() })
        })?;
        let mut request = self.http.request(method, &url);
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        let sent = match body {
            Some((content_type, bytes)) => {
                request.content_type(*content_type).send_body(bytes.clone()).await
            }
            None => request.send().await,
        };
        let mut response = sent.map_err(|err| {
            let refused = matches!(err, awc::error::SendRequestError::Connect(_));
            let err = ClientError::Unreachable { base: self.base.clone(), reason: err.to_string() };
            if refused {
                Failure::Retryable(DEFAULT_RETRY_AFTER, err)
            } else {
                Failure::Final(err)
            }
        })?;
        let status = response.status();
        let retry_after = response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map_or(DEFAULT_RETRY_AFTER, |secs| Duration::from_secs(secs).min(MOST_RETRY_AFTER));
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        let bytes = response.body().limit(64 << 20).await.map_err(|err| {
            Failure::Final(ClientError::Malformed { url: url.clone(), reason: err.to_string() })
        })?;
        if status.is_success() || status.as_u16() == 304 {
            return Ok((content_type, bytes.to_vec()));
        }
        let err = api_error(status.as_u16(), &bytes);
        if status.as_u16() == 503 {
            return Err(Failure::Retryable(retry_after, err));
        }
        Err(Failure::Final(err))
    }
}

enum Failure {
    /// Worth a retry after this wait, if the request allows one.
    Retryable(Duration, ClientError),
    Final(ClientError),
}

/// The error of an answer with `status` and `body` (the API's error body), with a hint where
/// one helps.
fn api_error(status: u16, body: &[u8]) -> ClientError {
    let value: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let error = &value["error"];
    let code = error["code"].as_str().unwrap_or("error").to_owned();
    let mut message = error["message"].as_str().unwrap_or("no error message").to_owned();
    if let Some(field) = error["field"].as_str() {
        if !message.contains(field) {
            message = format!("{message} (field {field})");
        }
    }
    let hint = match status {
        401 => "; set the server's token with --token or JOBYARD_API_TOKEN".to_owned(),
        503 => "; the server's store is unavailable, retry shortly".to_owned(),
        _ => String::new(),
    };
    ClientError::Api { status, code, message, hint }
}
