//! The last check on every error the API sends: a `grpc-message` that would repeat personal
//! data (as the privacy guard's built-in checks see it) is replaced by one that names only the
//! field and the kind of data, and an overlong message is cut. Handlers already quote values
//! through [`super::quote`]; this layer holds for every service, also one that forgets.

use std::borrow::Cow;
use std::future::Future;
use std::pin::Pin;
use std::sync::OnceLock;
use std::task::{Context, Poll};

use hyper::header::HeaderValue;
use regex::Regex;

use crate::domain::privacy::regex;

/// Longest error message the API sends (characters).
pub const MAX_ERROR_CHARS: usize = 400;

/// Adds [`ErrorTextService`] around the API's services.
#[derive(Clone, Copy, Default)]
pub struct ErrorTextLayer;

impl<S> tower::Layer<S> for ErrorTextLayer {
    type Service = ErrorTextService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        ErrorTextService(inner)
    }
}

/// The service made by [`ErrorTextLayer`].
#[derive(Clone)]
pub struct ErrorTextService<S>(S);

impl<S, ReqBody, ResBody> tower::Service<hyper::Request<ReqBody>> for ErrorTextService<S>
where
    S: tower::Service<hyper::Request<ReqBody>, Response = hyper::Response<ResBody>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ResBody: Send + 'static,
{
    type Response = hyper::Response<ResBody>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, request: hyper::Request<ReqBody>) -> Self::Future {
        let future = self.0.call(request);
        Box::pin(async move {
            let mut response = future.await?;
            let replaced = response
                .headers()
                .get("grpc-message")
                .map(|value| percent_decode(value.as_bytes()))
                .and_then(|message| safe_message(&message));
            if let Some(message) = replaced {
                if let Ok(value) = HeaderValue::from_str(&message) {
                    response.headers_mut().insert("grpc-message", value);
                }
            }
            Ok(response)
        })
    }
}

/// `message` with the identifiers the node derives itself blanked out, for the privacy scan
/// only: a token's id is the first hex digits of its hash, and about 1 in 500 of them reads
/// like a phone number (`0` and seven more decimal digits), which hid "API token 07341234 was
/// revoked" from the client it concerned. What a caller sent (quoted, as in
/// `the id "0701234567"`) is not blanked.
fn without_derived_ids(message: &str) -> Cow<'_, str> {
    static TOKEN_ID: OnceLock<Regex> = OnceLock::new();
    regex(&TOKEN_ID, r"\bAPI token [0-9a-f]{8}\b").replace_all(message, "API token #")
}

/// The message to send instead of `message`, if it must not go out as it is.
pub fn safe_message(message: &str) -> Option<String> {
    let personal = crate::domain::privacy::looks_personal(&without_derived_ids(message));
    let chars = message.chars().count();
    if personal.is_none() && chars <= MAX_ERROR_CHARS {
        return None;
    }
    let field = message
        .split_once(':')
        .map(|(head, _)| head)
        .filter(|head| head.starts_with("field `") && head.len() <= 80 && head.is_ascii());
    let head = field.unwrap_or("the request was refused");
    Some(match personal {
        Some(kind) => format!(
            "{head}: refused; the reason is not repeated because it would quote what looks like {}",
            kind.describe()
        ),
        None => {
            let cut: String = message.chars().take(MAX_ERROR_CHARS).collect();
            // Percent-encoded as gRPC wants it (the header carries ASCII only).
            percent_encode(&format!("{cut}… (cut at {MAX_ERROR_CHARS} characters)"))
        }
    })
}

/// Decodes a `grpc-message` (percent-encoded UTF-8).
fn percent_decode(bytes: &[u8]) -> String {
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
            if let Some(byte) = hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                out.push(byte);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Percent-encodes a message for `grpc-message`: printable ASCII except `%` stays as it is.
fn percent_encode(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    for byte in message.bytes() {
        if (0x20..=0x7e).contains(&byte) && byte != b'%' {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_with_personal_data_are_replaced_and_long_ones_cut() {
        let replaced = safe_message("field `quarter`: \"Born 811218-9876\" is not a quarter")
            .expect("replaced");
        assert!(
            replaced.starts_with("field `quarter`: refused"),
            "{replaced}"
        );
        assert!(replaced.contains("personal identity number") && !replaced.contains("9876"));
        assert_eq!(safe_message("field `body`: has 20001 characters"), None);
        let long = safe_message(&"x".repeat(5000)).expect("cut");
        assert!(long.len() < 600, "{}", long.len());
        assert_eq!(percent_decode(b"a%20b%C3%B6"), "a bö");
    }

    #[test]
    fn a_refused_token_is_named_whatever_digits_its_id_has() {
        use crate::api::tokens::Refused;
        // Ids made of decimal digits only, some shaped like Swedish mobile numbers.
        for id in [
            "07341234", "00000000", "08123456", "19850312", "0a1b2c3d", "ffffffff",
        ] {
            for refused in [Refused::Revoked(id.into()), Refused::Expired(id.into())] {
                let message = refused.to_string();
                assert_eq!(safe_message(&message), None, "{message}");
            }
        }
        // Only the id is exempt: anything personal beside it still is not sent.
        let beside = "API token 07341234 was revoked; call 070-123 45 67";
        assert!(safe_message(beside).is_some_and(|m| m.contains("phone number")));
        // What a caller sent is scanned as before, even when it looks like a token id.
        let quoted = "no token has the id \"0701234567\" (see `token list`)";
        assert!(safe_message(quoted).is_some());
    }
}
