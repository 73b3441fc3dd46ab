//! Signing in (an API token, or a one-time code from a sign-in link), signing out, and the
//! language switch.

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use serde::Deserialize;
use sfs_client::v1 as pb;
use sfs_client::Client;
use sha2::{Digest, Sha256};

use super::Ctx;
use crate::i18n::{Lang, Tr};
use crate::session::{secret, NodeKind, Role};
use crate::{html, AppState, LANG_COOKIE};

#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage {
    t: Tr,
    ctx: Ctx,
    csrf: String,
    code: String,
    error: String,
}

#[derive(Deserialize)]
pub(crate) struct LoginQuery {
    #[serde(default)]
    code: String,
}

fn cookie_header(name: &str, value: &str, path: &str, max_age: Option<u64>) -> HeaderValue {
    let age = max_age
        .map(|s| format!("; Max-Age={s}"))
        .unwrap_or_default();
    HeaderValue::from_str(&format!(
        "{name}={value}; Path={path}; HttpOnly; Secure; SameSite=Strict{age}"
    ))
    .expect("cookie values are URL-safe")
}

fn login_form(
    app: &crate::App,
    t: Tr,
    code: String,
    error: String,
    status: StatusCode,
) -> Response {
    let pre = secret();
    let page = LoginPage {
        t,
        ctx: Ctx::new(&t, None, "/login"),
        csrf: pre.clone(),
        code,
        error,
    };
    let mut response = (status, html(page.render())).into_response();
    response.headers_mut().append(
        header::SET_COOKIE,
        cookie_header(&app.pre_cookie, &pre, "/", None),
    );
    response
}

/// The sign-in page; with `?code=` it offers to use the one-time code (a button, so link
/// scanners that follow links do not use up the code).
pub(crate) async fn login_page(
    State(app): State<AppState>,
    headers: HeaderMap,
    Query(query): Query<LoginQuery>,
) -> Response {
    let t = Tr::new(crate::lang(&headers));
    login_form(&app, t, query.code, String::new(), StatusCode::OK)
}

#[derive(Deserialize)]
pub(crate) struct LoginForm {
    #[serde(default)]
    token: String,
    #[serde(default)]
    code: String,
}

/// Signs in with a token or a one-time code: asks the node who the token is, then starts a
/// session.
pub(crate) async fn login(
    State(app): State<AppState>,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> Response {
    let t = Tr::new(crate::lang(&headers));
    let token = if !form.code.is_empty() {
        match app.sessions.take_code(&form.code) {
            Some(token) => token,
            None => {
                return login_form(
                    &app,
                    t,
                    String::new(),
                    t.get("login-code-invalid"),
                    StatusCode::UNAUTHORIZED,
                )
            }
        }
    } else {
        form.token.trim().to_string()
    };
    let refused =
        |id: &str| login_form(&app, t, String::new(), t.get(id), StatusCode::UNAUTHORIZED);
    if token.is_empty() {
        return refused("login-token-missing");
    }
    let mut client = match Client::connect(&app.api_endpoint, &token, &app.ca_pem).await {
        Ok(client) => client,
        Err(err) => {
            tracing::warn!(error = %err, "the web app cannot reach the node's API");
            return refused("error-unavailable");
        }
    };
    let status = match client.node.get_status(pb::GetStatusRequest {}).await {
        Ok(status) => status.into_inner(),
        Err(status) if status.code() == tonic::Code::Unauthenticated => {
            return refused("login-token-invalid")
        }
        Err(status) => {
            tracing::warn!(error = %status, "sign-in: the node's status failed");
            return refused("error-unavailable");
        }
    };
    let (Some(role), Some(kind)) = (
        Role::parse(&status.caller_role),
        NodeKind::parse(&status.role),
    ) else {
        return refused("login-token-invalid");
    };
    let county_name = if kind == NodeKind::County {
        super::county_name(&mut client, &status.node_id).await
    } else {
        String::new()
    };
    let token_key = hex::encode(&Sha256::digest(token.as_bytes())[..8]);
    let id = app.sessions.create(
        client,
        role,
        status.node_id,
        kind,
        county_name,
        token_key,
        now_ms(),
    );
    let mut response = Redirect::to("/").into_response();
    let headers = response.headers_mut();
    headers.append(
        header::SET_COOKIE,
        cookie_header(&app.session_cookie, &id, "/", None),
    );
    headers.append(
        header::SET_COOKIE,
        cookie_header(&app.pre_cookie, "", "/", Some(0)),
    );
    response
}

/// Milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> i64 {
    jiff::Timestamp::now().as_millisecond()
}

/// Signs out: the session is gone on the server, and its cookie in the browser.
pub(crate) async fn logout(State(app): State<AppState>, headers: HeaderMap) -> Response {
    if let Some((id, _)) = crate::session(&app, &headers) {
        app.sessions.remove(&id);
    }
    let mut response = Redirect::to("/login").into_response();
    response.headers_mut().append(
        header::SET_COOKIE,
        cookie_header(&app.session_cookie, "", "/", Some(0)),
    );
    response
}

#[derive(Deserialize)]
pub(crate) struct LanguageQuery {
    #[serde(default)]
    back: String,
}

/// Switches the language and remembers it in a cookie for a year; back to the same page.
pub(crate) async fn language(
    Path(code): Path<String>,
    Query(query): Query<LanguageQuery>,
) -> Response {
    let lang = Lang::parse(&code).unwrap_or_default();
    // Only a path on this site: never `//elsewhere` or a full URL.
    let back = if query.back.starts_with('/')
        && !query.back.starts_with("//")
        && !query.back.contains('\\')
    {
        query.back
    } else {
        "/".to_string()
    };
    let mut response = Redirect::to(&back).into_response();
    response.headers_mut().append(
        header::SET_COOKIE,
        cookie_header(LANG_COOKIE, lang.code(), "/", Some(365 * 86_400)),
    );
    response
}
