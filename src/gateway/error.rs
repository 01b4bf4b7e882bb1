//! Every way the gateway answers a request it does not forward with orq's answer. The error
//! is the response: one `match` holds every status code and error code, and the body is always
//! `{"error":{"code":…,"message":…}}`.

use std::time::Duration;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::gateway::VARIATIONS_PATH;
use crate::gateway::auth::{AuthError, Caller};
use crate::gateway::rewrite::RewriteError;
use crate::key::{KeyError, PolicyKey};

/// Why a request was answered by the gateway itself.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// A path the gateway does not serve.
    #[error("no route for {0}; this gateway serves POST {VARIATIONS_PATH}")]
    NotFound(String),
    /// Not a POST.
    #[error("{VARIATIONS_PATH} accepts POST only")]
    MethodNotAllowed,
    /// The policy header is not ASCII.
    #[error("X-Routerpolicy-Policy is not ASCII")]
    PolicyHeaderNotAscii,
    /// No policy header and no `--default-policy`.
    #[error(
        "set the X-Routerpolicy-Policy header to <namespace>.<name> of an ImageVariationPolicy (this gateway has no --default-policy)"
    )]
    PolicyRequired,
    /// The policy header does not name a policy.
    #[error("X-Routerpolicy-Policy {name:?}: {reason}")]
    PolicyNameInvalid {
        /// The header's value.
        name: String,
        /// What is wrong.
        #[source]
        reason: KeyError,
    },
    /// The policy is not served here.
    #[error(
        "policy {name:?} is not served by this gateway (no {name}.json in its config directory)",
        name = .0.to_string()
    )]
    PolicyNotFound(PolicyKey),
    /// The caller is not authenticated (or could not be checked now).
    #[error("{0}")]
    Unauthenticated(#[source] AuthError),
    /// The caller may not use the policy.
    #[error(
        "ServiceAccount {caller} may not use policy {policy:?}: it is not in namespace {namespace:?} and the policy's spec.callers does not admit it",
        policy = .policy.to_string(), namespace = .policy.namespace
    )]
    Forbidden {
        /// Who calls.
        caller: Caller,
        /// The policy.
        policy: PolicyKey,
    },
    /// The body is larger than `--max-body-bytes`.
    #[error("request body exceeds {0} bytes (--max-body-bytes)")]
    BodyTooLarge(u64),
    /// The body stalled, or did not arrive in time.
    #[error("the request body {0}")]
    BodyTimeout(&'static str),
    /// The gateway holds as many request bodies as its budget allows.
    #[error("the gateway is at its budget of request bodies in flight (--max-buffered-bytes); retry shortly")]
    Overloaded,
    /// Not `multipart/form-data` with a boundary.
    #[error("{0}")]
    NotMultipart(#[source] RewriteError),
    /// The body could not be read from the client.
    #[error("cannot read the request body: {0}")]
    BodyUnreadable(#[source] hyper::Error),
    /// The multipart body cannot be rewritten safely.
    #[error("{0}")]
    MultipartInvalid(#[source] RewriteError),
    /// The path cannot be appended to the upstream URL.
    #[error("{0}")]
    PathInvalid(#[source] axum::http::Error),
    /// orq could not be reached (connection refused, TLS, reset).
    #[error("cannot reach orq: {0}")]
    UpstreamUnreachable(String),
    /// Connecting to orq timed out.
    #[error("orq did not answer in time: {0}")]
    UpstreamConnectTimeout(String),
    /// orq's response headers did not arrive within `--request-timeout`.
    #[error("orq did not answer within {0:?} (--request-timeout)")]
    UpstreamTimeout(Duration),
}

impl ProxyError {
    /// The HTTP status of the answer.
    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::NotFound(_) | ProxyError::PolicyNotFound(_) => StatusCode::NOT_FOUND,
            ProxyError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ProxyError::PolicyHeaderNotAscii
            | ProxyError::PolicyRequired
            | ProxyError::PolicyNameInvalid { .. }
            | ProxyError::BodyUnreadable(_)
            | ProxyError::MultipartInvalid(_)
            | ProxyError::PathInvalid(_) => StatusCode::BAD_REQUEST,
            ProxyError::Unauthenticated(AuthError::Unavailable(_)) => StatusCode::SERVICE_UNAVAILABLE,
            ProxyError::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
            ProxyError::Forbidden { .. } => StatusCode::FORBIDDEN,
            ProxyError::BodyTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ProxyError::BodyTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            ProxyError::Overloaded => StatusCode::SERVICE_UNAVAILABLE,
            ProxyError::NotMultipart(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ProxyError::UpstreamUnreachable(_) => StatusCode::BAD_GATEWAY,
            ProxyError::UpstreamConnectTimeout(_) | ProxyError::UpstreamTimeout(_) => StatusCode::GATEWAY_TIMEOUT,
        }
    }

    /// The machine-readable `error.code` of the answer.
    pub fn code(&self) -> &'static str {
        match self {
            ProxyError::NotFound(_) => "not_found",
            ProxyError::MethodNotAllowed => "method_not_allowed",
            ProxyError::PolicyHeaderNotAscii | ProxyError::PolicyNameInvalid { .. } => "policy_name_invalid",
            ProxyError::PolicyRequired => "policy_required",
            ProxyError::PolicyNotFound(_) => "policy_not_found",
            ProxyError::Unauthenticated(e) => match e {
                AuthError::Missing => "unauthenticated",
                AuthError::Malformed(_) => "token_malformed",
                AuthError::WrongAudience(_) => "token_audience",
                AuthError::Expired => "token_expired",
                AuthError::Rejected(_) | AuthError::NotServiceAccount(_) | AuthError::Forged(_) => "token_rejected",
                AuthError::Unavailable(_) => "auth_unavailable",
            },
            ProxyError::Forbidden { .. } => "forbidden",
            ProxyError::BodyTooLarge(_) => "body_too_large",
            ProxyError::BodyTimeout(_) => "body_timeout",
            ProxyError::Overloaded => "overloaded",
            ProxyError::NotMultipart(_) => "not_multipart",
            ProxyError::BodyUnreadable(_) => "body_unreadable",
            ProxyError::MultipartInvalid(_) => "multipart_invalid",
            ProxyError::PathInvalid(_) => "path_invalid",
            ProxyError::UpstreamUnreachable(_) => "upstream_unreachable",
            ProxyError::UpstreamConnectTimeout(_) | ProxyError::UpstreamTimeout(_) => "upstream_timeout",
        }
    }
}

impl IntoResponse for ProxyError {
    fn into_response(self) -> Response {
        let mut error = json!({ "code": self.code(), "message": self.to_string() });
        // What a refused team needs to ask `routerpolicy explain` about exactly this refusal
        // (never the token: only the subject the TokenReview named).
        if let ProxyError::Forbidden { caller, policy } = &self {
            let subject = crate::callers::service_account_user(&caller.namespace, &caller.service_account);
            error["policy"] = json!(format!("{}/{}", policy.namespace, policy.name));
            error["explain"] =
                json!(format!("routerpolicy explain {}/{} --as {subject}", policy.namespace, policy.name));
            error["caller"] = json!(subject);
        }
        let body = json!({ "error": error });
        let mut response = (self.status(), body.to_string()).into_response();
        response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        match self {
            ProxyError::MethodNotAllowed => {
                response.headers_mut().insert(header::ALLOW, HeaderValue::from_static("POST"));
            }
            ProxyError::Unauthenticated(AuthError::Unavailable(_)) => {
                response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            // RFC 6750: no error attribute when no credential was sent.
            ProxyError::Unauthenticated(AuthError::Missing) => {
                let challenge = HeaderValue::from_static("Bearer realm=\"routerpolicy-gateway\"");
                response.headers_mut().insert(header::WWW_AUTHENTICATE, challenge);
            }
            ProxyError::Unauthenticated(_) => {
                let challenge =
                    HeaderValue::from_static("Bearer realm=\"routerpolicy-gateway\", error=\"invalid_token\"");
                response.headers_mut().insert(header::WWW_AUTHENTICATE, challenge);
            }
            // Shed before the body was read: tell the client when to come back.
            ProxyError::Overloaded => {
                response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            // The rest of that body is not read: the connection cannot carry another request.
            ProxyError::BodyTimeout(_) => {
                response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            _ => {}
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_error_is_a_json_answer_with_its_status_and_code() {
        let response = ProxyError::PolicyNotFound(PolicyKey::new("team", "a")).into_response();
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
        let body = axum::body::to_bytes(response.into_body(), 1024).await.expect("body");
        let json: serde_json::Value = serde_json::from_slice(&body).expect("json");
        assert_eq!(json["error"]["code"], "policy_not_found");
        assert!(json["error"]["message"].as_str().is_some_and(|m| m.contains("\"team.a\"")));
        let forbidden = ProxyError::Forbidden {
            caller: Caller { namespace: "team-b".into(), service_account: "app".into() },
            policy: PolicyKey::new("team-a", "shared"),
        };
        let body = axum::body::to_bytes(forbidden.into_response().into_body(), 4096).await.expect("body");
        let json: serde_json::Value = serde_json::from_slice(&body).expect("json");
        assert_eq!(json["error"]["policy"], "team-a/shared");
        assert_eq!(json["error"]["caller"], "system:serviceaccount:team-b:app");
        assert_eq!(
            json["error"]["explain"],
            "routerpolicy explain team-a/shared --as system:serviceaccount:team-b:app"
        );
        let response = ProxyError::MethodNotAllowed.into_response();
        assert_eq!(response.headers().get(header::ALLOW).map(|v| v.as_bytes()), Some(&b"POST"[..]));
    }
}
