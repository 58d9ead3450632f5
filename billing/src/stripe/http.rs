//! The HTTP client under the gateway: `async-stripe`'s request types sent
//! one attempt at a time over hyper (rustls, webpki roots), answering
//! with the status and `Stripe-Should-Retry` as well as Stripe's error.
//!
//! Written here because `async-stripe`'s own client keeps both to itself
//! (they only steer its retrying strategies, which invent a random
//! idempotency key per call), and the retry rules Stripe documents need
//! them. It implements `async-stripe`'s `StripeClient`, so the request
//! builders and response types are still theirs.

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue, USER_AGENT};
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use stripe_client_core::{
    CustomizedStripeRequest, RequestStrategy, StripeClient, StripeClientErr, StripeMethod,
};

/// Why one attempt did not give a usable answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HttpError {
    /// Stripe answered with an error status.
    Status {
        /// The HTTP status.
        code: u16,
        /// `Stripe-Should-Retry`, when sent.
        should_retry: Option<bool>,
        /// Stripe's error `type` (`card_error`, `idempotency_error`, ...).
        kind: String,
        /// Stripe's error `code`.
        error_code: Option<String>,
        /// The bank's `decline_code`.
        decline_code: Option<String>,
        /// Stripe's message.
        message: String,
    },
    /// No answer: the connection failed or broke off.
    Transport(String),
    /// An answer we cannot read.
    Decode(String),
}

impl std::fmt::Display for HttpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HttpError::Status {
                code,
                kind,
                message,
                ..
            } => write!(f, "{code} {kind}: {message}"),
            HttpError::Transport(why) => write!(f, "transport: {why}"),
            HttpError::Decode(why) => write!(f, "unreadable answer: {why}"),
        }
    }
}

impl StripeClientErr for HttpError {
    fn deserialize_err(msg: impl std::fmt::Display) -> Self {
        HttpError::Decode(msg.to_string())
    }
}

/// One attempt per request, our idempotency key, everything visible.
#[derive(Clone)]
pub struct HttpClient {
    client: HyperClient<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>,
    base: String,
    authorization: HeaderValue,
}

impl std::fmt::Debug for HttpClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpClient")
            .field("base", &self.base)
            .finish()
    }
}

impl HttpClient {
    /// A client for `base` (`https://api.stripe.com`, or a fake's
    /// `http://...`) with `secret_key`.
    pub fn new(secret_key: &str, base: &str) -> Result<HttpClient, String> {
        let authorization = HeaderValue::from_str(&format!("Bearer {secret_key}"))
            .map_err(|_| "the Stripe key is not a valid header value".to_owned())?;
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_webpki_roots()
            .https_or_http()
            .enable_http1()
            .build();
        Ok(HttpClient {
            client: HyperClient::builder(TokioExecutor::new()).build(connector),
            base: base.trim_end_matches('/').to_owned(),
            authorization,
        })
    }

    async fn send(&self, request: CustomizedStripeRequest) -> Result<Bytes, HttpError> {
        let (builder, config) = request.into_pieces();
        let mut uri = format!("{}/v1{}", self.base, builder.path);
        if let Some(query) = &builder.query {
            uri.push('?');
            uri.push_str(query);
        }
        let method = match builder.method {
            StripeMethod::Get => hyper::Method::GET,
            StripeMethod::Post => hyper::Method::POST,
            StripeMethod::Delete => hyper::Method::DELETE,
        };
        let mut http = hyper::Request::builder()
            .method(method)
            .uri(uri)
            .header(AUTHORIZATION, self.authorization.clone())
            .header(
                USER_AGENT,
                concat!("Tollbridge/", env!("CARGO_PKG_VERSION")),
            )
            .header("Stripe-Version", stripe_shared::version::VERSION.as_str());
        if let Some(RequestStrategy::Idempotent(key)) = &config.request_strategy {
            http = http.header("Idempotency-Key", key.as_str());
        }
        let body = match builder.body {
            Some(body) => {
                http = http.header(CONTENT_TYPE, "application/x-www-form-urlencoded");
                Full::new(Bytes::from(body))
            }
            None => Full::new(Bytes::new()),
        };
        let http = http
            .body(body)
            .map_err(|e| HttpError::Transport(e.to_string()))?;
        let response = self
            .client
            .request(http)
            .await
            .map_err(|e| HttpError::Transport(e.to_string()))?;
        let status = response.status();
        let should_retry = response
            .headers()
            .get("Stripe-Should-Retry")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<bool>().ok());
        let bytes = response
            .into_body()
            .collect()
            .await
            .map_err(|e| HttpError::Transport(e.to_string()))?
            .to_bytes();
        if status.is_success() {
            return Ok(bytes);
        }
        let error: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
        let field = |name: &str| error["error"][name].as_str().map(str::to_owned);
        Err(HttpError::Status {
            code: status.as_u16(),
            should_retry,
            kind: field("type").unwrap_or_else(|| "api_error".into()),
            error_code: field("code"),
            decline_code: field("decline_code"),
            message: field("message").unwrap_or_default(),
        })
    }
}

impl StripeClient for HttpClient {
    type Err = HttpError;

    fn execute(
        &self,
        request: CustomizedStripeRequest,
    ) -> impl std::future::Future<Output = Result<Bytes, HttpError>> + Send {
        self.send(request)
    }
}
