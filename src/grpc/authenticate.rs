//! The tower layer that authenticates each call and checks its method
//! against the caller's roles before any service sees it; each refusal is
//! counted and logged ([`AuthFailures`]).

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tonic::Code;

use super::refusal;
use crate::auth::{
    allowed, is_open, Authenticator, Caller, Principal, INVALID_CERTIFICATE, INVALID_TOKEN,
    MISSING_CREDENTIALS, UNAUTHORIZED_OPERATION, UNKNOWN_CERTIFICATE,
};
use crate::metrics::auth::AuthFailures;
use crate::tls::{ClientCert, PeerInfo};

/// Authenticates calls with `authenticator`; `None` lets every call
/// through unauthenticated (loopback without `[auth]`).
#[derive(Clone)]
pub struct Layer {
    authenticator: Option<Arc<Authenticator>>,
    failures: Arc<AuthFailures>,
}

impl Layer {
    /// The layer; `None` is the open mode. Refusals go to `failures`.
    pub fn new(authenticator: Option<Arc<Authenticator>>, failures: Arc<AuthFailures>) -> Self {
        Self {
            authenticator,
            failures,
        }
    }
}

impl<S> tower::Layer<S> for Layer {
    type Service = Checked<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Checked {
            inner,
            authenticator: self.authenticator.clone(),
            failures: Arc::clone(&self.failures),
        }
    }
}

/// A service behind the check.
#[derive(Clone)]
pub struct Checked<S> {
    inner: S,
    authenticator: Option<Arc<Authenticator>>,
    failures: Arc<AuthFailures>,
}

/// Where the service tells of a refusal it decides after this layer let
/// the call through (an account the principal may not act for), so that
/// it is counted and logged with this layer's.
#[derive(Clone)]
pub(crate) struct Witness {
    failures: Arc<AuthFailures>,
    peer: Option<std::net::SocketAddr>,
    method: Arc<str>,
}

impl Witness {
    /// The call was refused with `reason`; `detail` says why.
    pub(crate) fn refused(&self, reason: &'static str, detail: &str) {
        self.failures
            .refused(reason, self.peer, &self.method, detail);
    }
}

type Refused<F> = Pin<Box<dyn std::future::Future<Output = F> + Send>>;

impl<S, B> tower::Service<http::Request<B>> for Checked<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<tonic::body::Body>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Refused<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        if let Some(authenticator) = &self.authenticator {
            match check(authenticator, &request) {
                Ok(Some(caller)) => {
                    let span = tracing::Span::current();
                    span.record("principal", &*caller.principal);
                    span.record("credential", &*caller.credential);
                    // Only a principal held to some accounts can be
                    // refused later, by the service, for an account.
                    if caller.accounts.is_some() {
                        let witness = Witness {
                            failures: Arc::clone(&self.failures),
                            peer: super::subscriptions::peer_in(request.extensions()),
                            method: request.uri().path().into(),
                        };
                        request.extensions_mut().insert(witness);
                    }
                    request.extensions_mut().insert(caller);
                }
                Ok(None) => {}
                Err((status, reason)) => {
                    let peer = super::subscriptions::peer_in(request.extensions());
                    self.failures
                        .refused(reason, peer, request.uri().path(), status.message());
                    let response = status.into_http::<tonic::body::Body>();
                    return Box::pin(async move { Ok(response) });
                }
            }
        }
        Box::pin(self.inner.call(request))
    }
}

/// A refusal and its reason.
type Refusal = (tonic::Status, &'static str);

/// The caller of `request`, `None` for the open methods, or the refusal.
fn check<B>(
    authenticator: &Authenticator,
    request: &http::Request<B>,
) -> Result<Option<Caller>, Refusal> {
    let path = request.uri().path();
    if is_open(path) {
        return Ok(None);
    }
    let certificate = request
        .extensions()
        .get::<PeerInfo>()
        .map(|peer| &peer.client);
    let (principal, credential) = match certificate {
        Some(ClientCert::Invalid(why)) => {
            return Err(refused(
                Code::Unauthenticated,
                format!("the client certificate is not accepted: {why}"),
                INVALID_CERTIFICATE,
            ))
        }
        Some(ClientCert::Valid(names)) => match authenticator.by_certificate(names) {
            Some((principal, name)) => (principal, format!("certificate {name}")),
            None => {
                return Err(refused(
                    Code::Unauthenticated,
                    format!(
                        "no principal is configured for the client certificate's names {names:?}"
                    ),
                    UNKNOWN_CERTIFICATE,
                ))
            }
        },
        _ => {
            let (principal, id) = by_token(authenticator, request)?;
            (principal, format!("token {id}"))
        }
    };
    if !allowed(&principal.roles, path) {
        return Err(refused(
            Code::PermissionDenied,
            format!(
                "principal {} ({credential}) may not call {path} (its roles: {})",
                principal.name,
                principal
                    .roles
                    .iter()
                    .map(|role| role.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            UNAUTHORIZED_OPERATION,
        ));
    }
    Ok(Some(Caller {
        principal: Arc::clone(&principal.name),
        credential: credential.into(),
        accounts: principal.accounts.clone(),
    }))
}

/// The principal of the request's bearer token, and the token's id.
fn by_token<'a, B>(
    authenticator: &'a Authenticator,
    request: &http::Request<B>,
) -> Result<(&'a Principal, &'a Arc<str>), Refusal> {
    let header = request.headers().get(http::header::AUTHORIZATION);
    let Some(header) = header else {
        return Err(refused(
            Code::Unauthenticated,
            "this server needs credentials: a client certificate, or `authorization: Bearer <token>`"
                .into(),
            MISSING_CREDENTIALS,
        ));
    };
    let token = header
        .to_str()
        .ok()
        .and_then(|value| value.strip_prefix("Bearer "))
        .map(str::trim);
    let found = token.and_then(|token| authenticator.by_token(token));
    found.ok_or_else(|| {
        refused(
            Code::Unauthenticated,
            "the bearer token is not one this server knows".into(),
            INVALID_TOKEN,
        )
    })
}

/// A refusal with `reason`, as the client gets it and as it is counted.
fn refused(code: Code, message: String, reason: &'static str) -> Refusal {
    (refusal(code, message, reason), reason)
}
